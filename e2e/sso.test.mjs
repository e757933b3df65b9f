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
import { startKeywarden, launchChromium, ageSessions, proveAddress, shoot, accessibilityViolations } from "./support.mjs";

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
  return { issuer, server, mode: { nonce: null, jwks: null, hold: false, held: null }, authorizations: 0 };
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
    if (url.pathname === "/held") {
      res.end("the answer was held back");
      return;
    }
    if (upstream.mode.hold) {
      // Keeps the redirect back to keywarden for the test instead of sending the browser there.
      const setHeader = res.setHeader.bind(res);
      res.setHeader = (name, value) => {
        if (name.toLowerCase() === "location" && String(value).includes("/sso/test/callback")) {
          upstream.mode.held = String(value);
          return setHeader(name, `${upstream.issuer}/held`);
        }
        return setHeader(name, value);
      };
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

/** Asserts the trip ended at `path`; if not, says what the page and keywarden's log said. */
async function assertLanded(page, path) {
  const landed = new URL(page.url()).pathname;
  if (landed === path) return;
  const said = await page.locator("main").innerText().catch(() => "(no page)");
  assert.fail(`landed on ${landed}, not ${path}\npage: ${said}\nlog: ${keywarden.problems()}\n${fresh.problems()}`);
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
  await proveAddress(server, person.email);
}

test("Chromium: 'Sign in with Test ID' creates the account the first time and finds it the next", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${keywarden.base}/signup`);
  assert.ok(await page.getByRole("link", { name: "Sign up with Test ID" }).isVisible());
  await page.goto(`${keywarden.base}/signin`);
  assert.deepEqual(await accessibilityViolations(page), []);
  await shoot(page, "sso-signin");
  await signInWithProvider(page, keywarden, "ada");
  await assertLanded(page, "/sso/finish");
  assert.equal(await page.inputValue("#username"), "ada", "the provider's username is offered");
  assert.equal(await page.inputValue("#email"), "ada@upstream.example");
  assert.deepEqual(await accessibilityViolations(page), []);
  await shoot(page, "sso-finish");
  await page.getByRole("button", { name: "Create account" }).click();
  await page.waitForURL(/\/security\?welcome=1/);
  assert.match(await page.locator(".notice").first().innerText(), /Your account is ready/, "no confirmation mail to wait for");
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
  await assertLanded(second, "/security");
  assert.match(await second.content(), /ada@upstream\.example/);
  await again.close();
});

/** The first message in the outbox, after `skip` of them, that `matches`; waits for it. */
async function waitForMail(server, matches, skip = 0) {
  for (let i = 0; i < 200; i++) {
    const found = outbox(server).slice(skip).map((raw) => {
      for (const block of raw.match(/(?:^[A-Za-z0-9+/=]{20,}\r?\n)+/gm) ?? []) {
        raw += Buffer.from(block.replace(/\s/g, ""), "base64").toString("utf8");
      }
      return raw;
    }).find(matches);
    if (found) return found;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error("no such mail in the outbox");
}

test("linking a provider to an existing account takes its password, from /security or from the finish page", async () => {
  const bea = { username: "bea", email: "bea@example.test", password: "bea's long passphrase" };
  await createPasswordAccount(keywarden, bea);
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${keywarden.base}/signin`);
  await page.fill("#login", bea.username);
  await page.fill("#password", bea.password);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.waitForURL(/\/security/);
  // Right after signing in, the link would go straight to the provider. A while later (the
  // session's proof is old) it takes the password again.
  assert.equal(await page.locator("#link1_password").count(), 0);
  await ageSessions(keywarden);
  await page.reload();

  // A wrong password stops the link before anyone is sent to the provider.
  const trips = upstream.authorizations;
  await page.fill("#link1_password", "not bea's password");
  await page.getByRole("button", { name: "Link Test ID" }).click();
  await page.waitForLoadState();
  assert.ok(page.url().startsWith(keywarden.base));
  assert.match(await page.locator("#sso_error").innerText(), /password is wrong/);
  assert.equal(upstream.authorizations, trips, "nobody went to the provider");

  await page.fill("#link1_password", bea.password);
  await page.getByRole("button", { name: "Link Test ID" }).click();
  await throughProvider(page, "bea-upstream");
  assert.equal(new URL(page.url()).search, "?done=sso-linked");
  assert.match(await page.content(), /bea-upstream@upstream\.example/);
  await context.close();

  // From now on Test ID's bea-upstream signs in to bea's account.
  const later = await browser.newContext();
  const again = await later.newPage();
  await signInWithProvider(again, keywarden, "bea-upstream");
  await assertLanded(again, "/security");
  assert.match(await again.content(), /bea@example\.test/);
  await later.close();

  // An upstream account nobody linked yet can join an account after a full sign-in to it.
  const cyd = { username: "cyd", email: "cyd@example.test", password: "cyd's long passphrase" };
  await createPasswordAccount(keywarden, cyd);
  const third = await browser.newContext();
  const page3 = await third.newPage();
  await signInWithProvider(page3, keywarden, "cyd-upstream");
  await assertLanded(page3, "/sso/finish");
  await page3.getByRole("link", { name: "Sign in to link Test ID" }).click();
  await page3.waitForURL(/\/signin\?next=\/sso\/link/);
  await page3.fill("#login", cyd.username);
  await page3.fill("#password", cyd.password);
  await page3.getByRole("button", { name: "Sign in", exact: true }).click();
  await page3.waitForURL((url) => url.pathname === "/sso/link");
  assert.deepEqual(await accessibilityViolations(page3), []);
  await page3.getByRole("button", { name: "Link Test ID" }).click();
  await page3.waitForURL(/done=sso-linked/);
  assert.match(await page3.content(), /cyd-upstream@upstream\.example/);
  await third.close();
});

test("a forged state, or a real one brought back by another browser, is refused", async () => {
  const attacker = await browser.newContext();
  const victim = await browser.newContext();
  const page = await attacker.newPage();
  upstream.mode.hold = true;
  try {
    await page.goto(`${keywarden.base}/sso/test/start`);
    await page.fill('input[name="login"]', "mallory");
    await page.fill('input[name="password"]', "anything");
    await page.click("button[type=submit]");
    await page.waitForLoadState();
    if (await page.locator('input[name="prompt"][value="consent"]').count()) await page.click("button[type=submit]");
    await page.waitForURL(`${upstream.issuer}/held`);
  } finally {
    upstream.mode.hold = false;
  }
  const captured = upstream.mode.held;
  assert.match(captured, /\/sso\/test\/callback\?.*code=/, "the provider answered with a code");

  // The attacker's answer, opened in the victim's browser (login CSRF), is refused.
  const victimPage = await victim.newPage();
  const refused = await victimPage.goto(captured);
  assert.equal(refused.status(), 400);
  assert.match(await victimPage.content(), /was not started in this browser/);
  assert.equal(await signedIn(victimPage, keywarden), false);

  // A state keywarden never issued is refused even with a matching cookie.
  const forged = `kw_ss_${randomBytes(32).toString("base64url")}`;
  await victim.addCookies([{ name: "kw_sso", value: forged, url: keywarden.base }]);
  const forgedAnswer = await victimPage.goto(`${keywarden.base}/sso/test/callback?state=${forged}&code=made-up`);
  assert.equal(forgedAnswer.status(), 400);
  assert.equal(await signedIn(victimPage, keywarden), false);

  // The browser that started the trip still finishes it, once.
  await page.goto(captured);
  await assertLanded(page, "/sso/finish");
  const replay = await page.goto(captured);
  assert.equal(replay.status(), 400, "a trip's answer works once");
  await attacker.close();
  await victim.close();
});

test("an ID token with another nonce is refused", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  upstream.mode.nonce = "a-nonce-keywarden-never-sent";
  try {
    await page.goto(`${keywarden.base}/signin`);
    await page.getByRole("link", { name: "Sign in with Test ID" }).click();
    await throughProvider(page, "ada");
  } finally {
    upstream.mode.nonce = null;
  }
  assert.match(await page.content(), /nonce does not match/);
  assert.equal(await signedIn(page, keywarden), false);
  await context.close();
});

test("an ID token signed by a key the provider does not publish is refused", async () => {
  // `fresh` has never fetched the provider's keys: it gets a set with another key under the same id.
  const { kid, n, e, kty, alg, use } = signingKey();
  upstream.mode.jwks = { keys: [{ kid, n, e, kty, alg, use }] };
  const context = await browser.newContext();
  const page = await context.newPage();
  try {
    await signInWithProvider(page, fresh, "ada");
  } finally {
    upstream.mode.jwks = null;
  }
  assert.match(await page.content(), /signature is not valid/);
  assert.equal(await signedIn(page, fresh), false);
  await context.close();
});

test("an SSO-only account: 'Sign out of all devices' ends every session, and it has no password to reset", async () => {
  const first = await browser.newContext();
  const page = await first.newPage();
  await signInWithProvider(page, keywarden, "eve");
  await page.getByRole("button", { name: "Create account" }).click();
  await page.waitForURL(/\/security/);
  const second = await browser.newContext();
  const other = await second.newPage();
  await signInWithProvider(other, keywarden, "eve");
  assert.equal(await signedIn(other, keywarden), true);

  // Its last way in cannot be unlinked, even after confirming with the provider.
  await page.goto(`${keywarden.base}/security`);
  await page.getByRole("button", { name: "Confirm with Test ID" }).click();
  await throughProvider(page, "eve");
  assert.equal(new URL(page.url()).search, "?done=confirmed");
  await page.getByRole("button", { name: "Unlink Test ID" }).click();
  await page.waitForLoadState();
  assert.match(await page.locator("#sso_error").innerText(), /last way to sign in/);

  await page.getByRole("button", { name: "Sign out of all devices" }).click();
  await page.waitForURL(/\/signin/);
  assert.equal(await signedIn(other, keywarden), false, "the other browser's session ended too");
  assert.equal(await signedIn(page, keywarden), false);

  // Signing in again passes through the provider.
  const trips = upstream.authorizations;
  await signInWithProvider(other, keywarden, "eve");
  assert.equal(await signedIn(other, keywarden), true);
  assert.ok(upstream.authorizations > trips, "the way back in went through the provider");

  // The reset page says what to do instead, and a reset asked for mails no link.
  await page.goto(`${keywarden.base}/reset`);
  assert.match(await page.locator("#sso_reset_help").innerText(), /Test ID.*nothing to reset/s);
  const before = outbox(keywarden).length;
  await page.fill("#email", "eve@upstream.example");
  await page.getByRole("button", { name: "Send the link" }).click();
  const mail = await waitForMail(keywarden, (m) => m.includes("eve@upstream.example") && m.includes("no password"), before);
  assert.match(mail, /you sign in with Test ID/);
  assert.doesNotMatch(mail, /kw_pr_/);
  await first.close();
  await second.close();
});
