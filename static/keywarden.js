// keywarden's only script. It answers passkey (WebAuthn) prompts for the passkey forms, and it keeps
// a signing key for this browser that script can use but never read (a non-extractable WebCrypto
// key in IndexedDB) and proves possession of it (DPoP, RFC 9449): at sign-in, to bind the session
// to the key, and after a leak response, to get a new session without the password. Without it
// the pages still work; the session is just not bound and passkeys are not offered.
// A plex.tv-style app opens /auth#!?clientID=…&code=…&forwardUrl=…: the request is in the
// fragment, which never reaches the server, so this page hands the PIN's code (and where the app
// wants the browser back, which the server checks) on to /link.
if (/^\/auth\/?$/.test(location.pathname) && location.hash.length > 1) {
  const asked = new URLSearchParams(location.hash.replace(/^#!?\??/, ""));
  const next = new URLSearchParams();
  if (asked.get("code")) next.set("code", asked.get("code"));
  if (asked.get("forwardUrl")) next.set("forward", asked.get("forwardUrl"));
  location.replace(`/link?${next}`);
}

(async () => {
  const DB = "keywarden", STORE = "keys", NAME = "dpop";
  const open = () => new Promise((resolve, reject) => {
    const request = indexedDB.open(DB, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  const run = async (mode, act) => {
    const db = await open();
    return new Promise((resolve, reject) => {
      const request = act(db.transaction(STORE, mode).objectStore(STORE));
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
  };
  const stored = () => run("readonly", (s) => s.get(NAME));
  async function keyPair() {
    let pair = await stored();
    if (!pair) {
      pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
      await run("readwrite", (s) => s.put(pair, NAME));
    }
    return pair;
  }
  const b64 = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)))
    .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const encode = (value) => b64(new TextEncoder().encode(JSON.stringify(value)));
  async function proof(pair, htm, htu) {
    const { kty, crv, x, y } = await crypto.subtle.exportKey("jwk", pair.publicKey);
    const claims = { jti: crypto.randomUUID(), htm, htu, iat: Math.floor(Date.now() / 1000) };
    const input = `${encode({ typ: "dpop+jwt", alg: "ES256", jwk: { kty, crv, x, y } })}.${encode(claims)}`;
    const signature = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, pair.privateKey, new TextEncoder().encode(input));
    return `${input}.${b64(signature)}`;
  }

  for (const form of document.querySelectorAll("form[data-dpop]")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        form.elements.dpop.value = await proof(await keyPair(), "POST", new URL(form.action, location.href).href);
      } catch { /* no key: the session is simply not bound */ }
      form.submit();
    });
  }

  // Passkeys (WebAuthn). The server's options carry binary fields as base64url; the browser wants
  // bytes, and its answer goes back into the form as JSON with base64url fields.
  const bytes = (text) => Uint8Array.from(atob(text.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  const withIds = (list) => (list || []).map((c) => ({ ...c, id: bytes(c.id) }));
  const creation = (o) => ({ ...o, challenge: bytes(o.challenge), user: { ...o.user, id: bytes(o.user.id) }, excludeCredentials: withIds(o.excludeCredentials) });
  const request = (o) => ({ ...o, challenge: bytes(o.challenge), allowCredentials: withIds(o.allowCredentials) });
  function answer(credential) {
    const r = credential.response;
    const response = { clientDataJSON: b64(r.clientDataJSON) };
    if (r.attestationObject) response.attestationObject = b64(r.attestationObject);
    if (r.authenticatorData) {
      response.authenticatorData = b64(r.authenticatorData);
      response.signature = b64(r.signature);
      response.userHandle = r.userHandle ? b64(r.userHandle) : null;
    }
    return { id: credential.id, rawId: b64(credential.rawId), type: credential.type, response, extensions: credential.getClientExtensionResults() };
  }
  async function ceremony(button, form) {
    if (form.elements.webauthn_options) return { ceremony_id: "", options: JSON.parse(form.elements.webauthn_options.value) };
    const response = await fetch(new URL(button.dataset.options, location.href).href, {
      method: "POST", credentials: "same-origin", body: new URLSearchParams({ csrf: form.elements.csrf.value }),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.message || "the server refused");
    return body;
  }
  // Passkey buttons appear only where the browser can use passkeys (and this script runs).
  if (window.PublicKeyCredential && window.isSecureContext) {
    for (const element of document.querySelectorAll("button[data-passkey], [data-passkey-only]")) element.hidden = false;
  }
  for (const form of document.querySelectorAll("form[data-passkey]")) {
    form.addEventListener("submit", async (event) => {
      const button = event.submitter;
      if (!button || !button.dataset.passkey) return; // an ordinary submit, such as a typed code
      event.preventDefault();
      const status = form.querySelector("[data-passkey-status]");
      try {
        if (!window.PublicKeyCredential) throw new Error("this browser does not support passkeys");
        const { ceremony_id, options } = await ceremony(button, form);
        const credential = button.dataset.passkey === "create"
          ? await navigator.credentials.create({ publicKey: creation(options.publicKey) })
          : await navigator.credentials.get({ publicKey: request(options.publicKey) });
        form.elements.webauthn_response.value = JSON.stringify(answer(credential));
        if (form.elements.ceremony_id) form.elements.ceremony_id.value = ceremony_id;
        if (form.elements.dpop) {
          try {
            form.elements.dpop.value = await proof(await keyPair(), "POST", new URL(form.action, location.href).href);
          } catch { /* no key: the session is simply not bound */ }
        }
        form.submit();
      } catch (error) {
        if (status) status.textContent = `The passkey was not used: ${error.message}`;
      }
    });
  }

  const recover = document.querySelector("[data-recover]");
  const pair = recover && await stored();
  if (pair) {
    const url = new URL("/recover", location.href).href;
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", dpop: await proof(pair, "POST", url) },
      body: JSON.stringify({ csrf: recover.dataset.csrf, next: recover.dataset.next }),
    });
    if (response.ok) location.replace((await response.json()).next);
  }
})();
