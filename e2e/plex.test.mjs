// The plex.tv-compatible account API judged by Python's unmodified `plexapi` (issue 8), and
// "Sign out of all devices" on /security in Chromium ending every session plexapi holds.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import * as OTPAuth from "otpauth";
import { startKeywarden, launchChromium, proveAddress, root } from "./support.mjs";

let server;
let browser;
const person = { username: "plexfan", email: "plexfan@example.com", password: "plexfan's long passphrase" };
const guarded = { username: "plexguard", email: "plexguard@example.com", password: "plexguard's long passphrase" };

async function api(path, body, token) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(`${server.base}${path}`, { method: "POST", headers, body: JSON.stringify(body) });
  return { status: response.status, json: await response.json().catch(() => null) };
}

/** Signs up an account with an authenticator app; returns the app's secret (base32). */
async function accountWithTotp(who) {
  assert.equal((await api("/api/v1/accounts", who)).status, 201);
  await proveAddress(server, who.email);
  const session = await api("/api/v1/sessions", { login: who.username, password: who.password });
  const begun = await api("/api/v1/mfa/totp", {}, session.json.access_token);
  const totp = new OTPAuth.TOTP({ secret: OTPAuth.Secret.fromBase32(begun.json.secret) });
  // The previous step's code (still accepted), so the code plexapi sends later is newer.
  const code = totp.generate({ timestamp: Date.now() - 30000 });
  assert.equal((await api("/api/v1/mfa/totp/confirm", { code }, session.json.access_token)).status, 200);
  return begun.json.secret;
}

before(async () => {
  server = await startKeywarden();
  assert.equal((await api("/api/v1/accounts", person)).status, 201);
  await proveAddress(server, person.email);
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  server?.child.kill();
});

function plexapi(phase, env) {
  const python = process.env.KEYWARDEN_E2E_PYTHON ?? join(root, "e2e", ".venv", "bin", "python");
  assert.ok(existsSync(python), `Python with plexapi is required at ${python} (.ci/run installs e2e/python/requirements.txt)`);
  const run = spawnSync(python, [join(root, "e2e", "python", "plexapi_compat.py"), phase], {
    env: { ...process.env, ...env },
    encoding: "utf8",
  });
  process.stdout.write(run.stdout);
  assert.equal(run.status, 0, `plexapi ${phase} failed:\n${run.stdout}\n${run.stderr}`);
}

test("plexapi: sign-in with password and with a TOTP code, token, ping, devices, removing one, signout, PIN linking (also on /link); then Sign out of all devices ends them", async () => {
  const secret = await accountWithTotp(guarded);
  const env = {
    KW_BASE: server.base,
    KW_LOGIN: person.username,
    KW_EMAIL: person.email,
    KW_PASSWORD: person.password,
    KW_TOTP_LOGIN: guarded.username,
    KW_TOTP_PASSWORD: guarded.password,
    KW_TOTP_SECRET: secret,
    KW_TOKENS_FILE: join(server.dataDir, "plexapi-tokens.json"),
  };
  plexapi("sessions", env);

  // The devices plexapi signed in are on /security; one click there ends them all.
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${server.base}/signin`);
  await page.fill("#login", person.username);
  await page.fill("#password", person.password);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.waitForURL(/\/security/);
  // A PIN shown by a streaming stick is approved on /link, as on plex.tv/link.
  const stick = { "X-Plex-Client-Identifier": "stick-1", "X-Plex-Product": "Plex for Fire TV", "X-Plex-Device-Name": "Bedroom stick", accept: "application/json" };
  const pin = await (await fetch(`${server.base}/api/v2/pins`, { method: "POST", headers: stick })).json();
  assert.match(pin.code, /^[A-Z2-9]{4}$/);
  await page.goto(`${server.base}/link`);
  await page.fill("#code", pin.code.toLowerCase());
  await page.getByRole("button", { name: "Continue" }).click();
  assert.match(await page.locator(".card").innerText(), /Plex for Fire TV.*Bedroom stick/s);
  await page.getByRole("button", { name: "Link this device" }).click();
  await page.waitForLoadState();
  assert.match(await page.locator("h1").innerText(), /Device linked/);
  const collected = await (await fetch(`${server.base}/api/v2/pins/${pin.id}`, { headers: stick })).json();
  assert.match(collected.authToken, /^kw_pt_/);
  const again = await (await fetch(`${server.base}/api/v2/pins/${pin.id}`, { headers: stick })).json();
  assert.equal(again.authToken, null, "the token is handed out once");

  await page.goto(`${server.base}/security`);
  const devices = await page.locator("ul.devices").first().innerText();
  assert.match(devices, /Bedroom stick/);
  assert.match(devices, /Laptop/);
  assert.doesNotMatch(devices, /Tablet/, "the device plexapi removed is gone");
  await page.getByRole("button", { name: "Sign out of all devices" }).click();
  await page.waitForURL(/\/signin/);
  await context.close();

  plexapi("after", env);
  const stickUser = await fetch(`${server.base}/api/v2/user`, { headers: { ...stick, "X-Plex-Token": collected.authToken } });
  assert.equal(stickUser.status, 401, "the PIN-linked stick was signed out too");
});
