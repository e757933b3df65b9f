// keywarden as an OpenID Connect provider, judged by client libraries nobody here wrote (issue 6):
// node's openid-client driving Debian's Chromium through sign-in and consent, and Python's Authlib
// through a scripted login, both against the real server on loopback.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { spawnSync } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { generateKeyPairSync } from "node:crypto";
import { join } from "node:path";
import * as oidc from "openid-client";
import { startKeywarden, launchChromium, proveAddress, registerClient, root, shoot, accessibilityViolations } from "./support.mjs";

let server;
let browser;
let callback;
const person = { username: "oidc-ada", email: "ada@oidc.example", password: "ada's long passphrase" };

before(async () => {
  server = await startKeywarden();
  const created = await fetch(`${server.base}/api/v1/accounts`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(person),
  });
  assert.equal(created.status, 201);
  await proveAddress(server, person.email);
  browser = await launchChromium();
  // The relying party's redirect endpoint: it only has to answer, the test reads the URL.
  callback = createServer((req, res) => res.end("back at the app"));
  await new Promise((resolve) => callback.listen(0, "127.0.0.1", resolve));
});

after(async () => {
  await browser?.close();
  callback?.close();
  server?.child.kill();
});

test("openid-client: discovery, code flow with PKCE through Chromium's sign-in and consent, userinfo, refresh", async () => {
  const redirectUri = `http://127.0.0.1:${callback.address().port}/cb`;
  const secret = registerClient(server, "shop", "--name", "Corner Shop", "--redirect-uri", redirectUri);
  const config = await oidc.discovery(
    new URL(server.base),
    "shop",
    { client_secret: secret, id_token_signed_response_alg: "ES256" },
    undefined,
    { execute: [oidc.allowInsecureRequests] },
  );
  assert.equal(config.serverMetadata().issuer, server.base);

  const verifier = oidc.randomPKCECodeVerifier();
  const state = oidc.randomState();
  const nonce = oidc.randomNonce();
  const url = oidc.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope: "openid profile email",
    code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
    code_challenge_method: "S256",
    state,
    nonce,
  });

  const page = await (await browser.newContext()).newPage();
  await page.goto(url.href);
  assert.match(page.url(), /\/signin\?next=/);
  await page.fill("#login", person.username);
  await page.fill("#password", person.password);
  await page.click("button:has-text('Sign in')");
  await page.waitForSelector("text=Allow Corner Shop to use your account?");
  assert.deepEqual(await accessibilityViolations(page), []);
  await shoot(page, "oauth-consent");
  // Chrome applies form-action to the redirect after the form: the consent page must allow the app.
  await Promise.all([page.waitForURL((u) => u.href.startsWith(redirectUri)), page.click("button:has-text('Allow')")]);

  const tokens = await oidc.authorizationCodeGrant(config, new URL(page.url()), {
    pkceCodeVerifier: verifier,
    expectedState: state,
    expectedNonce: nonce,
    idTokenExpected: true,
  });
  const claims = tokens.claims();
  assert.equal(claims.preferred_username, person.username);
  assert.equal(claims.aud, "shop");

  const info = await oidc.fetchUserInfo(config, tokens.access_token, claims.sub);
  assert.equal(info.email, person.email);

  const refreshed = await oidc.refreshTokenGrant(config, tokens.refresh_token);
  assert.notEqual(refreshed.access_token, tokens.access_token);
  assert.equal(refreshed.claims().sub, claims.sub);
  // The first refresh token is spent; presented again (after the retry grace) it kills the grant.
  await new Promise((r) => setTimeout(r, 11000));
  await assert.rejects(oidc.refreshTokenGrant(config, tokens.refresh_token), (err) => err.error === "invalid_grant");
  await assert.rejects(oidc.fetchUserInfo(config, refreshed.access_token, claims.sub));
});

test("openid-client: device authorization grant approved at /link in Chromium, then refresh", async () => {
  registerClient(server, "tv", "--name", "Media Player", "--public");
  const config = await oidc.discovery(new URL(server.base), "tv", { id_token_signed_response_alg: "ES256" }, oidc.None(), {
    execute: [oidc.allowInsecureRequests],
  });
  const started = await oidc.initiateDeviceAuthorization(config, { scope: "openid profile", device_name: "Living-room TV" });
  assert.match(started.user_code, /^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$/);
  assert.equal(started.verification_uri, `${server.base}/link`);
  const polling = oidc.pollDeviceAuthorizationGrant(config, started);

  // The person opens the link on their laptop, signs in, checks the device and links it.
  const page = await (await browser.newContext()).newPage();
  await page.goto(started.verification_uri_complete);
  await page.fill("#login", person.username);
  await page.fill("#password", person.password);
  await page.click("button:has-text('Sign in')");
  await page.waitForSelector("text=You are linking: Media Player, Living-room TV");
  assert.ok((await page.textContent("main")).includes(started.user_code));
  assert.deepEqual(await accessibilityViolations(page), []);
  await shoot(page, "link-device");
  await page.click("button:has-text('Link this device')");
  await page.waitForSelector("text=Device linked");

  const tokens = await polling;
  assert.equal(tokens.claims().preferred_username, person.username);
  const refreshed = await oidc.refreshTokenGrant(config, tokens.refresh_token);
  assert.notEqual(refreshed.access_token, tokens.access_token);
  await page.goto(`${server.base}/security`);
  const main = await page.textContent("main");
  assert.ok(main.includes("Living-room TV"), "the linked device is listed on /security");
  assert.ok(main.includes("Apps you allowed") && main.includes("Corner Shop"), "and the app allowed in the first test");
  assert.deepEqual(await accessibilityViolations(page), []);
  await shoot(page, "security-with-apps");
});

test("Authlib (Python): code flow with PKCE, ID tokens in ES256 and EdDSA against the JWKS, userinfo, refresh, introspection, revocation, private_key_jwt", () => {
  const python = process.env.KEYWARDEN_E2E_PYTHON ?? join(root, "e2e", ".venv", "bin", "python");
  assert.ok(existsSync(python), `Python with Authlib is required at ${python} (.ci/run installs it: e2e/python/requirements.txt)`);
  const redirectUri = "http://127.0.0.1:9/authlib/callback";
  const forum = registerClient(server, "forum", "--name", "Forum", "--redirect-uri", redirectUri);
  const site = registerClient(server, "site", "--name", "Site", "--redirect-uri", redirectUri, "--first-party", "--id-token-alg", "EdDSA");
  // A client that authenticates with private_key_jwt: its public key registered, the private one for Authlib.
  const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const jwksFile = join(server.dataDir, "reports-jwks.json");
  writeFileSync(jwksFile, JSON.stringify({ keys: [{ ...publicKey.export({ format: "jwk" }), kid: "reports-1", alg: "ES256" }] }));
  assert.equal(registerClient(server, "reports", "--name", "Reports", "--jwks-file", jwksFile), undefined, "no secret printed");
  const run = spawnSync(python, [join(root, "e2e", "python", "authlib_interop.py")], {
    env: {
      ...process.env,
      KW_JWT_CLIENT: "reports",
      KW_JWT_PRIVATE_KEY: privateKey.export({ format: "pem", type: "pkcs8" }),
      KW_BASE: server.base,
      KW_REDIRECT_URI: redirectUri,
      KW_LOGIN: person.username,
      KW_PASSWORD: person.password,
      KW_CLIENTS: JSON.stringify([
        { id: "forum", secret: forum, alg: "ES256" },
        { id: "site", secret: site, alg: "EdDSA" },
      ]),
    },
    encoding: "utf8",
  });
  process.stdout.write(run.stdout);
  assert.equal(run.status, 0, `authlib interop failed:\n${run.stdout}\n${run.stderr}`);
  assert.match(run.stdout, /authlib interop: all checks passed/);
});
