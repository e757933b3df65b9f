// Sign-in with an upstream OpenID provider nobody here wrote (issue 7): node's `oidc-provider`
// started on loopback with a test client, keywarden started against it, Chromium in between.
// A thin wrapper in front of the provider can rewrite the nonce keywarden sends or publish another
// signing key, to prove keywarden refuses what it must.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { writeFileSync, readdirSync, readFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Provider from "oidc-provider";
import { startKeywarden, launchChromium, shoot, accessibilityViolations } from "./support.mjs";

const CLIENT_SECRET = "keywarden-upstream-secret";
let upstream; // { issuer, mode, server }
let keywarden; // the server most stories use
let fresh; // a second server that has never fetched the provider's keys
let browser;

function signingKey() {
  const jwk = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ format: "jwk" });
  return { ...jwk, kid: "upstream-key", use: "sig", alg: "RS256" };
}

/** Listens first (keywarden needs the issuer); the provider itself is built once keywarden's
 * callback addresses are known. */
async function listenUpstream() {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const issuer = `http://127.0.0.1:${server.address().port}`;
  return { issuer, server, mode: { nonce: null, jwks: null }, authorizations: 0 };
}

function buildProvider(redirectUris) {
  const provider = new Provider(upstream.issuer, {
    clients: [{
      client_id: "keywarden",
      client_secret: CLIENT_SECRET,
      redirect_uris: redirectUris,
      grant_types: ["authorization_code"],
      response_types: ["code"],
    }],
    jwks: { keys: [signingKey()] },
    cookies: { keys: [randomBytes(16).toString("hex")] },
    claims: { openid: ["sub"], email: ["email", "email_verified"], profile: ["preferred_username", "name"] },
    // Every login is accepted: the account id is what was typed, its email `<id>@upstream.example`.
    findAccount: (ctx, id) => ({
      accountId: id,
      claims: () => ({ sub: id, email: `${id}@upstream.example`, email_verified: true, preferred_username: id }),
    }),
    pkce: { required: () => true },
    features: { devInteractions: { enabled: true } },
  });
  const handle = provider.callback();
  upstream.server.on("request", (req, res) => {
    const url = new URL(req.url, upstream.issuer);
    if (url.pathname === "/auth") {
      upstream.authorizations += 1;
      if (upstream.mode.nonce) {
        url.searchParams.set("nonce", upstream.mode.nonce);
        req.url = url.pathname + url.search;
      }
    }
    if (url.pathname === "/jwks" && upstream.mode.jwks) {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify(upstream.mode.jwks));
      return;
    }
    handle(req, res);
  });
}

function configFile() {
  const path = join(mkdtempSync(join(tmpdir(), "keywarden-sso-")), "keywarden.toml");
  writeFileSync(path, `
[[sso.providers]]
id = "test"
name = "Test ID"
issuer = "${upstream.issuer}"
client_id = "keywarden"
client_secret = "${CLIENT_SECRET}"
`);
  return path;
}

before(async () => {
  upstream = await listenUpstream();
  const config = configFile();
  keywarden = await startKeywarden({ KEYWARDEN_CONFIG: config });
  fresh = await startKeywarden({ KEYWARDEN_CONFIG: config });
  buildProvider([`${keywarden.base}/sso/test/callback`, `${fresh.base}/sso/test/callback`]);
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  upstream?.server.close();
  keywarden?.child.kill();
  fresh?.child.kill();
});

/** At the provider: its development login (any name) and its consent page, when it shows them. */
async function throughProvider(page, login) {
  await page.waitForURL((url) => url.origin === upstream.issuer || !url.href.includes("/sso/"));
  if (page.url().startsWith(upstream.issuer) && (await page.locator('input[name="login"]').count())) {
    await page.fill('input[name="login"]', login);
    await page.fill('input[name="password"]', "anything");
    await page.click("button[type=submit]");
  }
  await page.waitForLoadState();
  if (page.url().startsWith(upstream.issuer) && (await page.locator('input[name="prompt"][value="consent"]').count())) {
    await page.click("button[type=submit]");
  }
  await page.waitForURL((url) => url.origin !== upstream.issuer);
}

async function signInWithProvider(page, server, login) {
  await page.goto(`${server.base}/signin`);
  await page.click("text=Sign in with Test ID");
  await throughProvider(page, login);
}

/** The raw messages in a server's outbox, quoted-printable soft breaks undone. */
function outbox(server) {
  try {
    return readdirSync(join(server.dataDir, "outbox"))
      .filter((n) => n.endsWith(".eml"))
      .sort()
      .map((n) => readFileSync(join(server.dataDir, "outbox", n), "latin1").replace(/=\r?\n/g, ""));
  } catch {
    return [];
  }
}

/** Whether the browser has a working session at `server` (its security page, not a sign-in). */
async function signedIn(page, server) {
  await page.goto(`${server.base}/security`);
  return new URL(page.url()).pathname === "/security";
}

async function createPasswordAccount(server, person) {
  const created = await fetch(`${server.base}/api/v1/accounts`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(person),
  });
  assert.equal(created.status, 201);
}

test("Chromium: 'Sign in with Test ID' creates the account the first time and finds it the next", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${keywarden.base}/signup`);
  assert.ok(await page.getByRole("link", { name: "Sign up with Test ID" }).isVisible());
  await signInWithProvider(page, keywarden, "ada");
  assert.equal(new URL(page.url()).pathname, "/sso/finish");
  assert.equal(await page.inputValue("#username"), "ada", "the provider's username is offered");
  assert.equal(await page.inputValue("#email"), "ada@upstream.example");
  assert.deepEqual(await accessibilityViolations(page), []);
  await shoot(page, "sso-finish");
  await page.getByRole("button", { name: "Create account" }).click();
  await page.waitForURL(/\/security\?welcome=1/);
  assert.ok(await page.getByRole("heading", { name: "Sign-in providers" }).isVisible());
  assert.match(await page.locator("ul.devices").last().innerText(), /Test ID · ada@upstream\.example/);
  assert.deepEqual(await accessibilityViolations(page), []);
  await shoot(page, "sso-security");
  // The provider vouched for the address: no confirmation mail was needed.
  assert.ok(!outbox(keywarden).some((m) => m.includes("kw_ev_")), "a provider-verified address is not mailed a link");
  await context.close();

  // Another browser, the same upstream account: the same keywarden account, no finish page.
  const again = await browser.newContext();
  const second = await again.newPage();
  await signInWithProvider(second, keywarden, "ada");
  assert.equal(new URL(second.url()).pathname, "/security");
  assert.match(await second.content(), /ada@upstream\.example/);
  await again.close();
});
