// Abuse resistance in Debian's Chromium: a locked account still lets its owner in from a browser that
// signed in before, a new browser sees when to try again, and during a credential-stuffing surge a
// new browser confirms the code mailed to the account.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { accessibilityViolations, launchChromium, shoot, sizes, startKeywarden } from "./support.mjs";

let server;
let browser;

before(async () => {
  server = await startKeywarden({
    KEYWARDEN_TRUSTED_PROXIES: '["127.0.0.1/32"]',
    // The lock must outlast a busy machine's slowest browser start (a one-second block did not).
    KEYWARDEN_THROTTLE__BASE_DELAY_SECS: "60",
    KEYWARDEN_ALERTS__STUFFING__ACCOUNTS: "6",
    KEYWARDEN_ALERTS__STUFFING__ADDRESSES: "4",
    KEYWARDEN_ALERTS__STUFFING__CHECK_EVERY_SECS: "1",
  });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  server?.child.kill("SIGTERM");
});

/** A password sign-in over the API from `address` (as a trusted proxy would report it). */
function attempt(login, password, address) {
  return fetch(`${server.base}/api/v1/sessions`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-forwarded-for": address },
    body: JSON.stringify({ login, password }),
  });
}

async function signUp(username) {
  const response = await fetch(`${server.base}/api/v1/accounts`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, email: `${username}@example.com`, password: `${username}'s long passphrase` }),
  });
  assert.equal(response.status, 201);
}

async function signIn(page, username) {
  await page.goto(`${server.base}/signin`);
  await page.getByLabel("Email or username").fill(username);
  await page.getByLabel("Password").fill(`${username}'s long passphrase`);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
}

/** The six-digit code of the sign-in-code mail to `to`, waiting for it. */
async function mailedCode(to) {
  for (let i = 0; i < 200; i++) {
    try {
      for (const name of readdirSync(join(server.dataDir, "outbox")).filter((n) => n.endsWith(".eml"))) {
        const raw = readFileSync(join(server.dataDir, "outbox", name), "latin1");
        const match = raw.match(/^Subject: (\d{6}) is your keywarden sign-in code/m);
        if (match && raw.includes(`To: ${to}`)) return match[1];
      }
    } catch { /* no outbox yet */ }
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`no sign-in code mailed to ${to}`);
}

test("a locked account, its owner's browser, and a credential-stuffing surge", async () => {
  await signUp("mona");
  await signUp("otto");
  const laptop = await (await browser.newContext({ viewport: sizes.desktop })).newPage();
  await signIn(laptop, "mona");
  await laptop.getByRole("heading", { name: "Your devices" }).waitFor();
  await laptop.getByRole("button", { name: "Sign out", exact: true }).click();

  // Someone guesses mona's password from many addresses, and tries a leaked list on others.
  for (let i = 0; i < 10; i++) assert.equal((await attempt("mona", `guess ${i}`, `10.0.0.${i}`)).status < 500, true);
  for (let i = 0; i < 10; i++) await attempt(`leaked${i}@example.net`, "hunter2", `100.64.1.${i}`);

  // A browser never seen before is held back, and told for how long.
  const stranger = await (await browser.newContext({ viewport: sizes.phone })).newPage();
  await signIn(stranger, "mona");
  await stranger.getByText("too many attempts").waitFor();
  assert.deepEqual(await accessibilityViolations(stranger), []);
  await shoot(stranger, "signin-rate-limited");

  // The laptop that signed in before gets through at once.
  await signIn(laptop, "mona");
  await laptop.getByRole("heading", { name: "Your devices" }).waitFor();

  // The surge is detected: a new browser for otto must confirm the code mailed to him.
  await new Promise((r) => setTimeout(r, 2500));
  const phone = await (await browser.newContext({ viewport: sizes.phone })).newPage();
  await signIn(phone, "otto");
  await phone.getByRole("heading", { name: "Confirm it is you" }).waitFor();
  assert.deepEqual(await accessibilityViolations(phone), []);
  await shoot(phone, "signin-mailed-code");
  await phone.getByLabel("Code from the email").fill(await mailedCode("otto@example.com"));
  await phone.getByRole("button", { name: "Continue" }).click();
  await phone.getByRole("heading", { name: "Your devices" }).waitFor();
});
