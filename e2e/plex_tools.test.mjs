// The tools people run beside their media servers (issue 21), each with its own requests and
// parsing: the official container's claim script (bash, curl, sed), plexapi (claimToken, users,
// resources, webhooks, OAuth PIN login through /auth), Tautulli, Overseerr's "Sign in with Plex"
// from a page on another origin in Chromium, and Ombi. See e2e/python/plex_tools.py.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createServer } from "node:http";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { randomUUID } from "node:crypto";
import xml2js from "xml2js";
import { startKeywarden, launchChromium, proveAddress, root } from "./support.mjs";

let server;
let browser;
let app; // a page on another origin, as Overseerr's own site is
const owner = { username: "mediafan", email: "mediafan@example.com", password: "mediafan's long passphrase" };
const machine = "0123456789abcdef0123456789abcdef01234567";
const published = ["http://127.0.0.1:32400", "https://203-0-113-7.media.example.net:32400"];

const python = process.env.KEYWARDEN_E2E_PYTHON ?? join(root, "e2e", ".venv", "bin", "python");
const script = join(root, "e2e", "python", "plex_tools.py");
const env = () => ({
  ...process.env,
  KW_BASE: server.base,
  KW_LOGIN: owner.username,
  KW_EMAIL: owner.email,
  KW_PASSWORD: owner.password,
  KW_SERVER_ID: machine,
  KW_SERVER_URIS: published.join(","),
  KW_FORWARD_URL: `${app.origin}/plex-done`,
});

function tool(phase) {
  assert.ok(existsSync(python), `Python with plexapi is required at ${python} (.ci/run installs e2e/python/requirements.txt)`);
  const run = spawnSync(python, [script, phase], { env: env(), encoding: "utf8" });
  process.stdout.write(run.stdout);
  assert.equal(run.status, 0, `${phase} failed:\n${run.stdout}\n${run.stderr}\n${server.problems()}`);
  return run.stdout;
}

before(async () => {
  server = await startKeywarden();
  const created = await fetch(`${server.base}/api/v1/accounts`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(owner),
  });
  assert.equal(created.status, 201);
  await proveAddress(server, owner.email);
  browser = await launchChromium();
  // Another origin (another port): the page Overseerr's sign-in runs in, and where forwardUrl leads.
  const http = createServer((request, response) => {
    response.writeHead(200, { "content-type": "text/html" });
    response.end(`<!doctype html><title>${request.url === "/plex-done" ? "Back in the app" : "Requests"}</title><h1>app</h1>`);
  });
  await new Promise((resolve) => http.listen(0, "127.0.0.1", resolve));
  app = { http, origin: `http://127.0.0.1:${http.address().port}` };
});

after(async () => {
  await browser?.close();
  app?.http.close();
  server?.child.kill();
});

test("the media server container claims itself with plexapi's claimToken(), and plexapi lists it, its users and webhooks", async () => {
  const claim = tool("claim").match(/^CLAIM=(.+)$/m)[1];
  // The first-run script of the official container image, as it is: curl's request, sed's parsing.
  const firstRun = `
    clientId='${machine}'
    loginInfo="$(curl -s -X POST \\
          -H 'X-Plex-Client-Identifier: '\${clientId} \\
          -H 'X-Plex-Product: Plex Media Server'\\
          -H 'X-Plex-Version: 1.1' \\
          -H 'X-Plex-Provides: server' \\
          -H 'X-Plex-Platform: Linux' \\
          -H 'X-Plex-Platform-Version: 1.0' \\
          -H 'X-Plex-Device-Name: PlexMediaServer' \\
          -H 'X-Plex-Device: Linux' \\
          "${server.base}/api/claim/exchange?token=\${PLEX_CLAIM}")"
    token="$(echo "$loginInfo" | sed -n 's/.*<authentication-token>\\(.*\\)<\\/authentication-token>.*/\\1/p')"
    printf '%s' "$token"`;
  const run = spawnSync("bash", ["-c", firstRun], { env: { ...process.env, PLEX_CLAIM: claim }, encoding: "utf8" });
  assert.equal(run.status, 0, run.stderr);
  const token = run.stdout;
  assert.match(token, /^kw_pt_[A-Za-z0-9_-]{43}$/, "sed extracted exactly the token");
  // Replaying the same claim gets nothing the script would take for a token.
  const again = spawnSync("bash", ["-c", firstRun], { env: { ...process.env, PLEX_CLAIM: claim }, encoding: "utf8" });
  assert.equal(again.stdout, "", "a claim token works once");

  // The server signs in with it and publishes where it can be reached.
  const query = published.map((uri) => `Connection[][uri]=${encodeURIComponent(uri)}`).join("&");
  const publish = await fetch(`${server.base}/devices/${machine}?${query}`, {
    method: "PUT",
    headers: { "X-Plex-Token": token, "X-Plex-Client-Identifier": machine, "X-Plex-Provides": "server" },
  });
  assert.equal(publish.status, 200);
  tool("plexapi");
});

test("Tautulli signs in with a strong PIN and reads the account, resources, servers, users, shares and devices", () => {
  tool("tautulli");
});

test("Ombi signs in with v1 JSON, reads the account, servers, users and a PIN", () => {
  tool("ombi");
});

test("plexapi's MyPlexPinLogin(oauth=True): approved through /auth in Chromium, which goes back to forwardUrl", async () => {
  const child = spawn(python, [script, "oauth"], { env: env() });
  let output = "";
  const finished = new Promise((resolve) => child.on("exit", resolve));
  const oauthUrl = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no OAuth URL: ${output}`)), 30000);
    child.stdout.on("data", (chunk) => {
      output += chunk;
      const found = output.match(/^OAUTH_URL=(.+)$/m);
      if (found) {
        clearTimeout(timer);
        resolve(found[1]);
      }
    });
    child.stderr.on("data", (chunk) => (output += chunk));
  });
  assert.match(oauthUrl, /^https:\/\/app\.plex\.tv\/auth\/#!\?clientID=/);
  const context = await browser.newContext();
  const page = await context.newPage();
  // app.plex.tv is keywarden here, as plex.tv is for the API.
  await page.goto(oauthUrl.replace("https://app.plex.tv", server.base));
  await page.waitForURL(/\/signin/);
  await page.fill("#login", owner.username);
  await page.fill("#password", owner.password);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.waitForURL(/\/link\?code=/);
  assert.match(await page.locator("h1").innerText(), /You are signing in to PlexAPI/);
  assert.match(await page.locator(".card").innerText(), /go back to 127\.0\.0\.1/);
  await page.getByRole("button", { name: "Link this device" }).click();
  await page.waitForURL(`${app.origin}/plex-done`);
  assert.equal(await page.title(), "Back in the app");
  await context.close();
  const code = await finished;
  process.stdout.write(output);
  assert.equal(code, 0, output);
});

test("Overseerr: Sign in with Plex from a page on another origin (CORS), then its server calls: account.json, resources, ping", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(app.origin);
  // Overseerr's src/utils/plex.ts: its headers, a strong PIN, the /auth popup, polling every second.
  const popupOpened = context.waitForEvent("page");
  const signedIn = page.evaluate(async (base) => {
    const headers = {
      Accept: "application/json",
      "X-Plex-Product": "Overseerr",
      "X-Plex-Version": "Plex OAuth",
      "X-Plex-Client-Identifier": crypto.randomUUID(),
      "X-Plex-Model": "Plex OAuth",
      "X-Plex-Platform": "Chrome",
      "X-Plex-Platform-Version": "120.0",
      "X-Plex-Device": "Linux",
      "X-Plex-Device-Name": "Chrome (Overseerr)",
      "X-Plex-Device-Screen-Resolution": `${screen.width}x${screen.height}`,
      "X-Plex-Language": "en",
    };
    const popup = window.open("about:blank", "Plex Auth", "width=600,height=700");
    const pin = await (await fetch(`${base}/api/v2/pins?strong=true`, { method: "POST", headers })).json();
    const params = {
      clientID: headers["X-Plex-Client-Identifier"],
      "context[device][product]": headers["X-Plex-Product"],
      "context[device][version]": headers["X-Plex-Version"],
      "context[device][platform]": headers["X-Plex-Platform"],
      "context[device][platformVersion]": headers["X-Plex-Platform-Version"],
      "context[device][device]": headers["X-Plex-Device"],
      "context[device][deviceName]": headers["X-Plex-Device-Name"],
      "context[device][model]": headers["X-Plex-Model"],
      "context[device][screenResolution]": headers["X-Plex-Device-Screen-Resolution"],
      "context[device][layout]": "desktop",
      code: pin.code,
    };
    const encoded = Object.keys(params).map((k) => [k, params[k]].map(encodeURIComponent).join("=")).join("&");
    popup.location.href = `${base}/auth/#!?${encoded}`;
    for (let i = 0; i < 60; i++) {
      const polled = await (await fetch(`${base}/api/v2/pins/${pin.id}`, { headers })).json();
      if (polled?.authToken) {
        popup.close();
        return { id: pin.id, token: polled.authToken };
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    throw new Error("the PIN was never approved");
  }, server.base);
  const popup = await popupOpened;
  await popup.waitForURL(/\/signin/);
  await popup.fill("#login", owner.username);
  await popup.fill("#password", owner.password);
  await popup.getByRole("button", { name: "Sign in", exact: true }).click();
  await popup.waitForURL(/\/link\?code=/);
  assert.match(await popup.locator("h1").innerText(), /You are signing in to Overseerr/);
  await popup.getByRole("button", { name: "Link this device" }).click();
  const { id, token } = await signedIn;
  assert.equal(typeof id, "number", "the PIN's id is a number");
  assert.match(token, /^kw_pt_/);
  await context.close();

  // Overseerr's server/api/plextv.ts, with its axios headers.
  const headers = { "X-Plex-Token": token, "Content-Type": "application/json", Accept: "application/json" };
  const account = await (await fetch(`${server.base}/users/account.json`, { headers })).json();
  assert.equal(typeof account.user.id, "number", "Overseerr compares the id strictly as a number");
  assert.equal(account.user.username, owner.username);
  assert.equal(account.user.hasPassword, true);
  assert.deepEqual(account.user.roles, { roles: [] });
  const devicesText = await (await fetch(`${server.base}/api/resources?includeHttps=1`, { headers })).text();
  const parsed = await xml2js.parseStringPromise(devicesText);
  const devices = parsed?.MediaContainer?.Device?.map((d) => ({
    clientIdentifier: d.$.clientIdentifier,
    provides: d.$.provides.split(","),
    owned: d.$.owned == "1",
    createdAt: new Date(parseInt(d.$?.createdAt, 10) * 1000),
    connection: d?.Connection?.map((c) => ({ uri: c.$.uri, port: parseInt(c.$.port, 10), local: c.$.local == "1" })),
  }));
  const media = devices.find((d) => d.clientIdentifier === machine);
  assert.ok(media && media.owned && media.provides.includes("server"), JSON.stringify(devices));
  assert.ok(media.createdAt.getFullYear() >= 2026, "createdAt in Unix seconds");
  assert.deepEqual(media.connection.map((c) => c.uri).sort(), [...published].sort());
  assert.ok(media.connection.some((c) => c.port === 32400 && c.local));
  const users = await xml2js.parseStringPromise(await (await fetch(`${server.base}/api/users`, { headers })).text());
  assert.equal(users.MediaContainer.User, undefined, "no users shared with");
  const pong = await fetch(`${server.base}/api/v2/ping`, { headers: { ...headers, "X-Plex-Client-Identifier": randomUUID() } });
  assert.equal((await pong.json()).pong, true, "Overseerr logs a failure without pong");
});
