// Passkeys in Debian's Chromium with a virtual authenticator (DevTools' WebAuthn domain): register,
// rename, sign in with the passkey alone, use it as the second step after a password, remove it.
// webauthn-rs on the server checks what a real browser and authenticator produce.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { accessibilityViolations, ageSessions, launchChromium, proveAddress, shoot, sizes, startKeywarden } from "./support.mjs";

let server;
let browser;
/** Passkeys need a domain name: browsers refuse them on a bare IP address, so use localhost. */
let base;

before(async () => {
  server = await startKeywarden();
  base = server.base.replace("127.0.0.1", "localhost");
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  server?.child.kill("SIGTERM");
});

/** A page with a platform authenticator that verifies its user (a screen lock) and keeps passkeys. */
async function pageWithAuthenticator(context) {
  const page = await context.newPage();
  const devtools = await context.newCDPSession(page);
  await devtools.send("WebAuthn.enable");
  const { authenticatorId } = await devtools.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2",
      transport: "internal",
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  const credentials = async () => (await devtools.send("WebAuthn.getCredentials", { authenticatorId })).credentials;
  return { page, credentials };
}

/**
 * Breach drill for passkeys: copy the database files as an attacker would. The credential is there
 * (found by its id, which proves the search reads the right bytes), its private key is not, in any
 * encoding: the stolen rows cannot answer a challenge.
 */
async function stolenDatabaseHoldsOnlyThePublicHalf(credential) {
  const files = readdirSync(server.dataDir).filter((name) => name.startsWith("keywarden.db"));
  const stolen = Buffer.concat(files.map((name) => readFileSync(join(server.dataDir, name))));
  const id = Buffer.from(credential.credentialId, "base64");
  assert.ok(stolen.includes(id), "the credential id is in the database");
  // PKCS#8 for P-256 holds the 32-byte private scalar after `04 20` in its ECPrivateKey.
  const pkcs8 = Buffer.from(credential.privateKey, "base64");
  const at = pkcs8.indexOf(Buffer.from([0x02, 0x01, 0x01, 0x04, 0x20]));
  assert.ok(at > 0, "a P-256 private key");
  const d = pkcs8.subarray(at + 5, at + 37);
  for (const form of [d, Buffer.from(d.toString("hex")), Buffer.from(d.toString("base64")), Buffer.from(d.toString("base64url")), Buffer.from(JSON.stringify([...d]).slice(1, -1))]) {
    assert.equal(stolen.includes(form), false, "the passkey's private key is not in the database");
  }
}

async function signOut(page) {
  await page.getByRole("button", { name: "Sign out", exact: true }).click();
  await page.waitForURL(/\/signin/);
}

async function signInWithPassword(page, login, password) {
  await page.goto(`${base}/signin`);
  await page.getByLabel("Email or username").fill(login);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
}

test("register a passkey, sign in with it alone, use it after a password, remove it", async () => {
  const context = await browser.newContext({ viewport: sizes.desktop });
  const { page, credentials } = await pageWithAuthenticator(context);
  const password = "kai's long passphrase";

  await page.goto(`${base}/signup`);
  await page.getByLabel("Email address").fill("kai@example.com");
  await page.getByLabel("Username").fill("kai");
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Create account" }).click();
  await page.waitForURL(/\/security\?welcome=1$/);
  await proveAddress(server, "kai@example.com", page);

  // Register: the first second factor of the account also brings its recovery codes, shown once.
  await page.getByLabel("Name for a new passkey").fill("Laptop passkey");
  await page.getByRole("button", { name: "Add a passkey" }).click();
  await page.getByRole("heading", { name: "Your recovery codes" }).waitFor();
  assert.equal(await page.locator("ul.codes li").count(), 10);
  const stored = await credentials();
  assert.equal(stored.length, 1);
  assert.equal(stored[0].isResidentCredential, true, "the passkey is discoverable, so it signs in without a username");
  await stolenDatabaseHoldsOnlyThePublicHalf(stored[0]);
  await page.getByRole("link", { name: "I have saved them" }).click();
  await page.getByText("Laptop passkey").first().waitFor();

  // Rename it.
  await page.getByLabel("New name for Laptop passkey").fill("Work laptop");
  await page.getByRole("button", { name: "Rename" }).click();
  await page.getByText("The passkey was renamed.").waitFor();
  assert.equal(await page.locator("ul.passkeys li strong").first().textContent(), "Work laptop");
  await shoot(page, "security-passkey");
  assert.deepEqual(await accessibilityViolations(page), []);

  // Passwordless: no username, no password, just the passkey.
  await signOut(page);
  await page.getByRole("button", { name: "Sign in with a passkey" }).click();
  await page.waitForURL(/\/security$/);
  await page.getByText("Work laptop").first().waitFor();
  assert.equal((await credentials())[0].signCount > 0, true, "the authenticator signed a challenge");

  // With a passkey on the account, a password is not enough: the passkey is the second step.
  await signOut(page);
  await signInWithPassword(page, "kai", password);
  await page.getByRole("button", { name: "Use a passkey" }).waitFor();
  await shoot(page, "signin-mfa-passkey");
  assert.deepEqual(await accessibilityViolations(page), []);
  await page.getByRole("button", { name: "Use a passkey" }).click();
  await page.waitForURL(/\/security$/);

  // The history shows what happened.
  for (const what of ["Passkey added", "Passkey renamed"]) await page.getByRole("cell", { name: what }).first().waitFor();

  // A while later (the session's proof is old), remove the last passkey, confirming with the
  // passkey itself (a step-up).
  await ageSessions(server);
  await page.reload();
  await page.getByRole("button", { name: "Confirm with a passkey and remove" }).click();
  await page.getByText("The passkey was removed.").waitFor();
  assert.equal(await page.locator("ul.passkeys li").count(), 0);
  await page.getByRole("cell", { name: "Identity confirmed for a sensitive change" }).first().waitFor();

  // The authenticator still holds the credential, but the server no longer accepts it…
  await signOut(page);
  await page.getByRole("button", { name: "Sign in with a passkey" }).click();
  await page.getByText("The passkey's answer could not be verified").waitFor();
  assert.match(page.url(), /\/signin\/passkey$/);

  // …and the password alone signs in again.
  await signInWithPassword(page, "kai", password);
  await page.waitForURL(/\/security$/);
  await context.close();
});

test("a replayed passkey answer, or one made for another challenge, is refused", async () => {
  const context = await browser.newContext({ viewport: sizes.desktop });
  const { page } = await pageWithAuthenticator(context);
  await page.goto(`${base}/signup`);
  await page.getByLabel("Email address").fill("lea@example.com");
  await page.getByLabel("Username").fill("lea");
  await page.getByLabel("Password").fill("lea's long passphrase");
  await page.getByRole("button", { name: "Create account" }).click();
  await page.waitForURL(/\/security\?welcome=1$/);
  await proveAddress(server, "lea@example.com", page);
  await page.getByLabel("Name for a new passkey").fill("Phone");
  await page.getByRole("button", { name: "Add a passkey" }).click();
  await page.getByRole("heading", { name: "Your recovery codes" }).waitFor();
  await signOut(page);

  // Capture the form the script submits, then post the same answer a second time.
  const captured = [];
  page.on("request", (request) => {
    if (request.url().endsWith("/signin/passkey") && request.method() === "POST") captured.push(request.postData());
  });
  await page.getByRole("button", { name: "Sign in with a passkey" }).click();
  await page.waitForURL(/\/security$/);
  assert.equal(captured.length, 1);
  const replay = await page.request.post(`${base}/signin/passkey`, {
    headers: { "content-type": "application/x-www-form-urlencoded" },
    data: captured[0],
    maxRedirects: 0,
  });
  // The CSRF token was bound to the signed-out browser, so the replay fails either way; the
  // ceremony check is asserted through the API, where no CSRF token stands in front of it.
  assert.ok(replay.status() >= 400, `a replayed passkey answer must be refused, got ${replay.status()}`);

  const ceremony = new URLSearchParams(captured[0]).get("ceremony_id");
  const answer = JSON.parse(new URLSearchParams(captured[0]).get("webauthn_response"));
  const api = await page.request.post(`${base}/api/v1/sessions/passkey`, {
    data: { ceremony_id: ceremony, webauthn_response: answer },
  });
  assert.equal(api.status(), 400);
  assert.equal((await api.json()).error, "invalid_ceremony");

  // A fresh challenge answered with the old signature (made for another challenge) is refused too.
  const fresh = await (await page.request.post(`${base}/api/v1/sessions/passkey/options`)).json();
  const forged = await page.request.post(`${base}/api/v1/sessions/passkey`, {
    data: { ceremony_id: fresh.ceremony_id, webauthn_response: answer },
  });
  assert.equal(forged.status(), 401);
  assert.equal((await forged.json()).error, "passkey_rejected");
  await context.close();
});
