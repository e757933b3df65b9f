// Two-step verification in Debian's Chromium: an operator policy (`mfa.require = "all"`) that holds
// a new account on the enrolment page, an authenticator app set up with codes from `otpauth` (a TOTP
// library we did not write), the second sign-in step, and a change of email address behind a step-up.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import * as OTPAuth from "otpauth";
import { accessibilityViolations, launchChromium, linkFromOutbox, proveAddress, shoot, sizes, startKeywarden } from "./support.mjs";

let server;
let browser;

before(async () => {
  server = await startKeywarden({ KEYWARDEN_MFA__REQUIRE: "all" });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  server?.child.kill("SIGTERM");
});

test("a required second step: enrol an app, sign in with it, change the email address", async () => {
  const laptop = await browser.newContext({ viewport: sizes.desktop });
  const page = await laptop.newPage();
  await page.goto(`${server.base}/signup`);
  await page.getByLabel("Email address").fill("mona@example.com");
  await page.getByLabel("Username").fill("mona");
  await page.getByLabel("Password").fill("mona's long passphrase");
  await page.getByRole("button", { name: "Create account" }).click();

  // The new account can only set up a second step; the rest of the page waits for it.
  await page.getByText("Set up two-step verification to continue").waitFor();
  assert.equal(await page.getByRole("heading", { name: "Your devices" }).count(), 0);
  assert.equal(await page.getByRole("heading", { name: "Change password" }).count(), 0);
  assert.deepEqual(await accessibilityViolations(page), []);
  await shoot(page, "mfa-enrolment-required");

  // Nothing is added to how an account signs in before its address is proven: she opens the link.
  await page.locator("#verify_first").waitFor();
  assert.equal(await page.getByRole("button", { name: "Set up an authenticator app" }).count(), 0);
  await proveAddress(server, "mona@example.com", page);

  await page.getByRole("button", { name: "Set up an authenticator app" }).click();
  const key = (await page.locator("code.secret").textContent()).replace(/\s/g, "");
  const app = new OTPAuth.TOTP({ secret: OTPAuth.Secret.fromBase32(key), algorithm: "SHA1", digits: 6, period: 30 });
  assert.deepEqual(await accessibilityViolations(page), []);
  await page.getByLabel("Code from your app").fill(app.generate());
  await page.getByRole("button", { name: "Turn on" }).click();
  await page.getByRole("heading", { name: "Your recovery codes" }).waitFor();
  const codes = await page.locator("ul.codes li").allTextContents();
  assert.equal(codes.length, 10);
  await page.getByRole("link", { name: "I have saved them" }).click();
  await page.getByRole("heading", { name: "Your devices" }).waitFor();

  // Another browser: the password, then a code from the app (the next one: each works once).
  const phone = await browser.newContext({ viewport: sizes.phone });
  const phonePage = await phone.newPage();
  await phonePage.goto(`${server.base}/signin`);
  await phonePage.getByLabel("Email or username").fill("mona");
  await phonePage.getByLabel("Password").fill("mona's long passphrase");
  await phonePage.getByRole("button", { name: "Sign in", exact: true }).click();
  await phonePage.getByLabel("Code from your app").fill(app.generate({ timestamp: Date.now() + 30_000 }));
  await phonePage.getByRole("button", { name: "Verify" }).click();
  await phonePage.getByRole("heading", { name: "Your devices" }).waitFor();

  // Changing the address: a recovery code confirms it is her, then the link sent to the new address.
  await page.getByLabel("New email address").fill("mona@elsewhere.example");
  await page.getByLabel("To confirm the change: a code from your app or a recovery code").fill(codes[0]);
  await page.getByRole("button", { name: "Change email address" }).click();
  await page.getByText("We sent a link to your new address").waitFor();
  await page.getByText("Waiting for confirmation of").waitFor();
  assert.deepEqual(await accessibilityViolations(page), []);
  await shoot(page, "email-change-pending");
  const token = await linkFromOutbox(server, "kw_ec_");
  await page.goto(`${server.base}/verify-email/${token}`);
  await page.getByRole("button", { name: "Confirm my email address" }).click();
  await page.getByText("now confirmed for your account").waitFor();
  await page.goto(`${server.base}/security`);
  await page.getByText("mona@elsewhere.example").waitFor();
  assert.equal(await page.getByText("Waiting for confirmation of").count(), 0);
  await laptop.close();
  await phone.close();
});
