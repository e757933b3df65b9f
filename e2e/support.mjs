// What the end-to-end suites share: starting the real binary, Chromium, the outbox and screenshots.

import { spawn, execSync, execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..");
/** Where cargo put the debug binary: `CARGO_TARGET_DIR`, a `build.target-dir` in cargo's config or
 * the checkout's `target/`, as `cargo metadata` reports it (`KEYWARDEN_BIN` overrides). */
function findBinary() {
  if (process.env.KEYWARDEN_BIN) return process.env.KEYWARDEN_BIN;
  const metadata = execFileSync("cargo", ["metadata", "--format-version", "1", "--no-deps"], { cwd: root, encoding: "utf8" });
  return join(JSON.parse(metadata).target_directory, "debug", "keywarden");
}
const binary = findBinary();
const shots = join(root, "test-artifacts", "screenshots");
export const sizes = { phone: { width: 390, height: 844 }, desktop: { width: 1280, height: 900 } };

/** Starts keywarden on an ephemeral port with its own data directory and `settings` (more
 * `KEYWARDEN_*` variables); resolves once it listens. */
export function startKeywarden(settings = {}) {
  const dataDir = mkdtempSync(join(tmpdir(), "keywarden-e2e-"));
  const env = { ...process.env, KEYWARDEN_PASSWORD_HASHING__PROFILE: "insecure-test-only", KEYWARDEN_LOG_FORMAT: "json" };
  // The suite's own variables are not the server's configuration.
  for (const name of Object.keys(env)) if (name.startsWith("KEYWARDEN_TEST_") || name === "KEYWARDEN_BIN") delete env[name];
  Object.assign(env, settings);
  const child = spawn(binary, ["serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir], { env, cwd: dataDir });
  let log = "";
  return new Promise((resolve, reject) => {
    // Cleared once listening, so a finished suite does not wait for it.
    const deadline = setTimeout(() => reject(new Error(`keywarden did not start: ${log}`)), 30000);
    child.stderr.on("data", (chunk) => {
      log += chunk;
      for (const line of log.split("\n")) {
        try {
          const event = JSON.parse(line);
          if (event.message === "keywarden is listening") {
            clearTimeout(deadline);
            // `problems()`: the warnings and errors logged so far, for a failing test to show.
            const problems = () => log.split("\n").filter((l) => /"level":"(WARN|ERROR)"/.test(l)).join("\n");
            resolve({ base: `http://${event.addr}`, dataDir, child, problems });
          }
        } catch { /* not a complete JSON line yet */ }
      }
    });
    child.on("exit", (code) => reject(new Error(`keywarden exited with ${code}: ${log}`)));
  });
}

/** Debian's Chromium, headless, never a downloaded browser. */
export function launchChromium() {
  const executablePath = execSync("command -v chromium", { shell: "/bin/sh" }).toString().trim();
  return chromium.launch({
    executablePath,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
}

/** The messages in the server's outbox, oldest first: their headers, and their text with
 * quoted-printable soft line breaks undone and base64 parts decoded (appended). */
function outboxMessages(server) {
  let names;
  try {
    names = readdirSync(join(server.dataDir, "outbox")).filter((n) => n.endsWith(".eml")).sort();
  } catch {
    return []; // no outbox yet
  }
  return names.map((name) => {
    let raw = readFileSync(join(server.dataDir, "outbox", name), "latin1").replace(/=\r?\n/g, "");
    const headers = raw.split(/\r?\n\r?\n/, 1)[0];
    for (const block of raw.match(/(?:^[A-Za-z0-9+/=]{20,}\r?\n)+/gm) ?? []) {
      raw += Buffer.from(block.replace(/\s/g, ""), "base64").toString("latin1");
    }
    return { headers, text: raw };
  });
}

/** Waits until `pick(tokens)` finds one among the tokens with this prefix, one per message in
 * outbox order (messages without one are left out). */
async function waitForToken(server, prefix, accept, pick, what) {
  for (let i = 0; i < 200; i++) {
    const found = outboxMessages(server)
      .filter(accept)
      .map((m) => m.text.match(new RegExp(`${prefix}[A-Za-z0-9_-]{43}`))?.[0])
      .filter(Boolean);
    const token = pick(found);
    if (token) return token;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`no ${prefix} link ${what}`);
}

/** The `count`-th token with this prefix in the server's outbox, waiting for it to arrive. */
export function linkFromOutbox(server, prefix, count = 1) {
  return waitForToken(server, prefix, () => true, (found) => found[count - 1], "in the outbox");
}

/** A screenshot of the current page at phone and desktop width. */
export async function shoot(page, name) {
  mkdirSync(shots, { recursive: true });
  for (const [size, viewport] of Object.entries(sizes)) {
    await page.setViewportSize(viewport);
    await page.screenshot({ path: join(shots, `${name}-${size}.png`), fullPage: true });
  }
  await page.setViewportSize(sizes.desktop);
}

// axe-core (Deque) judges accessibility; we evaluate its source in the page through DevTools,
// which our Content-Security-Policy rightly does not let a <script> tag do.
const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

/** axe-core's WCAG 2.1 A and AA violations on the current page, one line each. */
export async function accessibilityViolations(page) {
  await page.evaluate(axeSource);
  return page.evaluate(async () => {
    const result = await window.axe.run(document, { runOnly: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] });
    return result.violations.map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  });
}

/** Runs `keywarden admin ARGS` against a started server's data directory; returns its stdout. */
export function admin(server, ...args) {
  const env = { ...process.env };
  for (const name of Object.keys(env)) if (name.startsWith("KEYWARDEN_")) delete env[name];
  return execFileSync(binary, ["admin", ...args, "--data-dir", server.dataDir], { env }).toString();
}

/** Registers an OAuth client with `keywarden admin clients add`; resolves to its secret, if any. */
export function registerClient(server, id, ...flags) {
  const out = admin(server, "clients", "add", id, ...flags);
  return out.match(/^client_secret: (\S+)$/m)?.[1];
}

/** The newest token with this prefix mailed to `to`, waiting for it to arrive. */
export function linkMailedTo(server, prefix, to) {
  const addressed = new RegExp(`^To:.*${to.replace(/[.+]/g, "\\$&")}`, "im");
  return waitForToken(server, prefix, (m) => addressed.test(m.headers), (found) => found.at(-1), `mailed to ${to}`);
}

/** Proves the address `email` with the link mailed to it, as its owner would: in `page` when given
 * (the browser stays signed in), else through the API. Nothing is added to how an account signs
 * in before its address is proven. */
export async function proveAddress(server, email, page) {
  const token = await linkMailedTo(server, "kw_ev_", email.toLowerCase());
  if (page) {
    // At the origin the browser is signed in at (the passkey suite uses localhost).
    const back = page.url();
    await page.goto(`${new URL(back).origin}/verify-email/${token}`);
    await page.getByRole("button", { name: "Confirm my email address" }).click();
    await page.getByText("now confirmed for your account").waitFor();
    await page.goto(back);
    return;
  }
  const response = await fetch(`${server.base}/api/v1/email/verify`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ token }),
  });
  if (response.status !== 204) throw new Error(`verifying ${email}: ${response.status} ${await response.text()}`);
}

/** Moves every session's last proof of its person into the past, as if it signed in long ago
 * (the fixture moves time instead of waiting out `mfa.step_up_secs`). */
export async function ageSessions(server) {
  execFileSync("sqlite3", [join(server.dataDir, "keywarden.db"), "UPDATE sessions SET verified_at = 0"]);
  // A change made behind the server's back reaches its validation cache through the invalidation
  // log, which it reads every 250 ms.
  await new Promise((resolve) => setTimeout(resolve, 600));
}
