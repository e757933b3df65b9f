// keywarden's pages in Debian's Chromium, driven by Playwright: the stories of issue 4.
// Starts the real binary on an ephemeral port with its own data directory and reads mail from the outbox.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createServer } from "node:http";
import { join } from "node:path";
import {
  accessibilityViolations, admin, launchChromium, linkFromOutbox as outboxLink, root, shoot, sizes, startKeywarden,
} from "./support.mjs";

const binary = join(root, "target", "debug", "keywarden");

let server;
let browser;
const linkFromOutbox = (prefix, count) => outboxLink(server, prefix, count);

before(async () => {
  server = await startKeywarden();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  server?.child.kill("SIGTERM");
});

test("sign up, verify, see devices, sign out of all devices, reset with the checkbox", async () => {
  const laptop = await browser.newContext({ viewport: sizes.desktop });
  const page = await laptop.newPage();
  await page.goto(`${server.base}/signup`);
  await shoot(page, "signup");
  await page.getByLabel("Email address").fill("Hana@Example.com");
  await page.getByLabel("Username").fill("hana");
  await page.getByLabel("Password").fill("hana's long passphrase");
  await page.getByRole("button", { name: "Create account" }).click();
  await page.waitForURL(/\/security\?welcome=1$/);
  await page.getByText("This device").waitFor();
  await shoot(page, "security");

  // Verify the email address from the outbox: the link needs a button press.
  await page.goto(`${server.base}/verify-email/${await linkFromOutbox("kw_ev_")}`);
  await shoot(page, "verify-email");
  await page.getByRole("button", { name: "Confirm my email address" }).click();
  await page.getByText("Email address confirmed").waitFor();

  // A second browser signs in.
  const phone = await browser.newContext({ viewport: sizes.phone });
  const phonePage = await phone.newPage();
  await phonePage.goto(`${server.base}/signin`);
  await shoot(phonePage, "signin");
  await phonePage.getByLabel("Email or username").fill("hana@example.com");
  await phonePage.getByLabel("Password").fill("hana's long passphrase");
  await phonePage.getByRole("button", { name: "Sign in", exact: true }).click();
  await phonePage.waitForURL(/\/security$/);

  // The laptop sees both devices and signs out everywhere else.
  await page.goto(`${server.base}/security`);
  assert.equal(await page.locator("ul.devices > li").count(), 2);
  await page.getByLabel("Keep this browser signed in").check();
  await page.getByRole("button", { name: "Sign out of all devices" }).click();
  await page.getByText("Every device was signed out.").waitFor();
  await phonePage.reload();
  await phonePage.waitForURL(/\/signin\?next=\/security$/);

  // Reset the password from the emailed link; the checkbox is on by default.
  await phonePage.goto(`${server.base}/reset`);
  await shoot(phonePage, "reset");
  await phonePage.getByLabel("Email address").fill("hana@example.com");
  await phonePage.getByRole("button", { name: "Send the link" }).click();
  await phonePage.getByText("Check your email").waitFor();
  await phonePage.goto(`${server.base}/reset/${await linkFromOutbox("kw_pr_")}`);
  await shoot(phonePage, "reset-password");
  assert.equal(await phonePage.getByLabel("Sign out connected devices after password change").isChecked(), true);
  await phonePage.getByLabel("New password", { exact: true }).fill("hana's new passphrase");
  await phonePage.getByLabel("New password, again").fill("hana's new passphrase");
  await phonePage.getByRole("button", { name: "Set new password" }).click();
  await phonePage.getByText("Every device was signed out").waitFor();

  // The laptop's session is gone; the new password works.
  await page.goto(`${server.base}/security`);
  await page.waitForURL(/\/signin/);
  await page.getByLabel("Email or username").fill("hana");
  await page.getByLabel("Password").fill("hana's new passphrase");
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.waitForURL(/\/security$/);
  await laptop.close();
  await phone.close();
});

test("a cross-site form post is refused and every page carries a strict CSP", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${server.base}/signup`);
  await page.getByLabel("Email address").fill("ivo@example.com");
  await page.getByLabel("Username").fill("ivo");
  await page.getByLabel("Password").fill("ivo's long passphrase");
  await page.getByRole("button", { name: "Create account" }).click();
  await page.waitForURL(/\/security/);

  // Another site tries to make the signed-in browser sign out everywhere.
  const evil = createServer((_, res) => {
    res.setHeader("content-type", "text/html");
    res.end(`<form method="post" action="${server.base}/security/signout-all"><input name="csrf" value="forged"></form>
             <script>document.forms[0].submit()</script>`);
  });
  await new Promise((r) => evil.listen(0, "127.0.0.2", r));
  const forged = page.waitForResponse((r) => r.url().endsWith("/security/signout-all"));
  await page.goto(`http://127.0.0.2:${evil.address().port}/`);
  const response = await forged;
  assert.equal(response.status(), 403);
  evil.close();
  await page.goto(`${server.base}/security`);
  await page.getByText("This device").waitFor(); // still signed in

  for (const path of ["/signin", "/signup", "/reset", "/security"]) {
    const res = await page.goto(`${server.base}${path}`);
    const csp = res.headers()["content-security-policy"];
    assert.match(csp, /default-src 'none'/, path);
    assert.match(csp, /frame-ancestors 'none'/, path);
    assert.equal(res.headers()["x-frame-options"], "DENY", path);
  }
  await context.close();
});

test("after a web channel revocation the browser holding its key gets back in; a copied cookie does not", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${server.base}/signup`);
  await page.getByLabel("Email address").fill("joan@example.com");
  await page.getByLabel("Username").fill("joan");
  await page.getByLabel("Password").fill("joan's long passphrase");
  await page.getByRole("button", { name: "Create account" }).click();
  await page.waitForURL(/\/security/);

  // A leaking proxy saw the session cookie; someone uses it in another browser.
  const session = (await context.cookies()).filter((c) => c.name === "kw_session");
  assert.equal(session.length, 1);
  const thief = await browser.newContext();
  await thief.addCookies(session);
  const thiefPage = await thief.newPage();

  // The operator revokes every web session, as after the 2017 leak.
  const env = { ...process.env };
  for (const name of Object.keys(env)) if (name.startsWith("KEYWARDEN_")) delete env[name];
  const out = execFileSync(binary, ["admin", "revoke", "--channel", "web", "--data-dir", server.dataDir], { env }).toString();
  assert.match(out, /may recover silently/);
  await new Promise((r) => setTimeout(r, 600));

  // The real browser still holds its key: it is back on its security page without typing anything.
  await page.goto(`${server.base}/security`);
  await page.waitForURL(/\/security$/, { timeout: 10000 });
  await page.getByText("This device").waitFor();
  await page.getByText("Session restored after a security incident").waitFor();

  // The copied cookie lands on the sign-in form and stays there.
  await thiefPage.goto(`${server.base}/security`);
  await thiefPage.waitForURL(/\/signin/);
  await new Promise((r) => setTimeout(r, 1000));
  assert.match(thiefPage.url(), /\/signin/);
  await thiefPage.getByRole("button", { name: "Sign in", exact: true }).waitFor();
  await context.close();
  await thief.close();
});

/** WCAG 2.1 A and AA violations axe-core finds on the current page, as readable lines. */
test("every page passes axe-core's WCAG 2.1 AA checks at phone and desktop width, and forms tab in order", async () => {
  const context = await browser.newContext({ viewport: sizes.desktop });
  const page = await context.newPage();
  const pages = ["/signin", "/signup", "/reset", "/reset/kw_pr_unknown", "/verify-email/kw_ev_unknown", "/account/keep/kw_ka_unknown", "/auth/", "/no-such-page"];
  const check = async (path) => {
    for (const viewport of Object.values(sizes)) {
      await page.setViewportSize(viewport);
      assert.deepEqual(await accessibilityViolations(page), [], `${path} at ${viewport.width}px`);
    }
  };
  for (const path of pages) {
    await page.goto(`${server.base}${path}`);
    await check(path);
  }

  // Keyboard users meet the sign-in fields in reading order.
  await page.goto(`${server.base}/signin`);
  await page.getByLabel("Email or username").focus();
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.id), "password");
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.textContent.trim()), "Sign in");

  // Signed in: the security page and an error page shown after a failed form.
  await page.goto(`${server.base}/signup`);
  await page.getByLabel("Email address").fill("kai@example.com");
  await page.getByLabel("Username").fill("kai");
  await page.getByLabel("Password").fill("kai's long passphrase");
  await page.getByRole("button", { name: "Create account" }).click();
  await page.waitForURL(/\/security/);
  await check("/security");
  // An app's sign-in (/auth hands on to /link): "You are signing in to …", with where it goes back.
  const app = { "X-Plex-Client-Identifier": "a11y-app", "X-Plex-Product": "Overseerr", accept: "application/json" };
  const pin = await (await fetch(`${server.base}/api/v2/pins?strong=true`, { method: "POST", headers: app })).json();
  await page.goto(`${server.base}/auth/#!?clientID=a11y-app&code=${pin.code}&forwardUrl=${encodeURIComponent("https://requests.example.org/")}`);
  await page.waitForURL(/\/link\?code=/);
  await page.getByRole("heading", { name: "You are signing in to Overseerr" }).waitFor();
  await check("/link (an app's sign-in)");
  await page.goto(`${server.base}/security`);
  await page.getByLabel("Current password").fill("not my password");
  await page.getByLabel("New password", { exact: true }).fill("kai's new passphrase");
  await page.getByLabel("New password, again").fill("kai's new passphrase");
  await page.getByRole("button", { name: "Change password" }).click();
  await page.getByRole("alert").waitFor();
  await check("/security/password (refused)");
  await context.close();
});

test("sign-up by invitation and closed sign-up pass axe-core too, and an invited person signs up from the link", async () => {
  const invited = await startKeywarden({ KEYWARDEN_SIGNUP__MODE: "invite" });
  const closed = await startKeywarden({ KEYWARDEN_SIGNUP__MODE: "closed" });
  const context = await browser.newContext({ viewport: sizes.desktop });
  try {
    const page = await context.newPage();
    // The CLI prints the link with the configured public URL; the code is what matters here.
    const code = admin(invited, "invites", "create", "--email", "ivo@example.com").trim().split("invite=")[1];
    assert.match(code, /^kw_iv_/);
    for (const [where, path] of [[invited, "/signup"], [invited, `/signup?invite=${code}`], [closed, "/signup"]]) {
      await page.goto(`${where.base}${path}`);
      for (const viewport of Object.values(sizes)) {
        await page.setViewportSize(viewport);
        assert.deepEqual(await accessibilityViolations(page), [], `${path} at ${viewport.width}px`);
      }
    }
    assert.match(await page.locator("h1").innerText(), /Sign-up is closed/);
    await page.goto(`${invited.base}/signup`);
    await page.getByLabel("Invitation code").waitFor();
    await page.goto(`${invited.base}/signup?invite=${code}`);
    await page.getByLabel("Email address").fill("ivo@example.com");
    await page.getByLabel("Username").fill("ivo");
    await page.getByLabel("Password").fill("ivo's long passphrase");
    await page.getByRole("button", { name: "Create account" }).click();
    await page.waitForURL(/\/security/);
  } finally {
    await context.close();
    invited.child.kill("SIGTERM");
    closed.child.kill("SIGTERM");
  }
});
