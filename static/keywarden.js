// keywarden's only script. It keeps a signing key for this browser that script can use but never read
// (a non-extractable WebCrypto key in IndexedDB) and proves possession of it (DPoP, RFC 9449):
// at sign-in, to bind the session to the key, and after a leak response, to get a new session
// without the password. Without it the pages still work; the session is just not bound.
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
