"""keywarden's OpenID Connect provider, judged by Authlib (a client library nobody here wrote).

Run by e2e/oidc.test.mjs against the real server on loopback. For each client given in
KW_CLIENTS (JSON: [{"id", "secret", "alg"}]) it does the authorization code flow with PKCE
through a scripted browser login (the sign-in and consent forms, with their CSRF tokens),
validates the ID token against the published JWKS, reads userinfo, refreshes, introspects and
revokes — exiting non-zero on the first thing that is not as the standards say.
"""

import html
import json
import os
import re
import sys
from urllib.parse import urljoin, urlparse, parse_qs

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.jose import JsonWebKey, jwt
from authlib.oidc.core import CodeIDToken

BASE = os.environ["KW_BASE"]
REDIRECT_URI = os.environ["KW_REDIRECT_URI"]
LOGIN = os.environ["KW_LOGIN"]
PASSWORD = os.environ["KW_PASSWORD"]


def check(condition, what):
    if not condition:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def hidden_fields(page, action):
    """The hidden inputs of the form posting to `action`, as a browser would send them."""
    start = page.index(f'action="{action}"')
    end = page.index("</form>", start)
    form = page[start:end]
    return {html.unescape(n): html.unescape(v) for n, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form)}


def browser_login(authorization_url):
    """Follows the authorization request like a person would; returns the URL the client gets back."""
    browser = requests.Session()
    response = browser.get(authorization_url, allow_redirects=False)
    signed_in = False
    for _ in range(10):
        location = response.headers.get("location")
        if location and location.startswith(REDIRECT_URI):
            return location
        if location:
            response = browser.get(urljoin(BASE, location), allow_redirects=False)
            continue
        page = response.text
        if 'action="/signin"' in page and not signed_in:
            fields = hidden_fields(page, "/signin")
            fields.update(login=LOGIN, password=PASSWORD)
            response = browser.post(urljoin(BASE, "/signin"), data=fields, allow_redirects=False)
            signed_in = True
        elif 'action="/oauth/authorize/decision"' in page:
            check("Allow" in page, "the consent page asks")
            fields = hidden_fields(page, "/oauth/authorize/decision")
            fields["decision"] = "allow"
            response = browser.post(urljoin(BASE, "/oauth/authorize/decision"), data=fields, allow_redirects=False)
        else:
            check(False, f"the flow reached an unexpected page ({response.status_code}): {page[:300]}")
    check(False, "the flow did not come back to the client")


def run(client_id, secret, alg):
    meta = requests.get(urljoin(BASE, "/.well-known/openid-configuration")).json()
    check(meta["issuer"] == BASE, "discovery names the issuer")
    session = OAuth2Session(
        client_id,
        secret,
        scope="openid profile email",
        redirect_uri=REDIRECT_URI,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic",
    )
    verifier = generate_token(64)
    nonce = generate_token(20)
    url, state = session.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce)
    callback = browser_login(url)
    query = parse_qs(urlparse(callback).query)
    check(query.get("iss") == [BASE] and query.get("state") == [state], "the response carries state and iss (RFC 9207)")

    token = session.fetch_token(meta["token_endpoint"], authorization_response=callback, code_verifier=verifier)
    check(token["token_type"].lower() == "bearer" and "refresh_token" in token, f"{client_id}: code exchanged with PKCE")

    keys = JsonWebKey.import_key_set(requests.get(meta["jwks_uri"]).json())
    claims = jwt.decode(
        token["id_token"],
        keys,
        claims_cls=CodeIDToken,
        claims_options={"iss": {"essential": True, "value": BASE}},
        claims_params={"nonce": nonce, "client_id": client_id},
    )
    claims.validate()
    header = json.loads(__import__("base64").urlsafe_b64decode(token["id_token"].split(".")[0] + "==="))
    check(header["alg"] == alg, f"{client_id}: ID token signed with {alg} and valid against the JWKS")
    check(claims["preferred_username"] == LOGIN and claims["nonce"] == nonce, "ID token names the person and the nonce")

    info = session.get(meta["userinfo_endpoint"]).json()
    check(info["sub"] == claims["sub"] and "@" in info["email"], "userinfo answers for the token's subject")

    old_access = token["access_token"]
    refreshed = session.refresh_token(meta["token_endpoint"])
    check(refreshed["access_token"] != old_access, "refresh gives a new access token")
    check(refreshed["refresh_token"] != token["refresh_token"], "refresh rotates the refresh token")

    seen = session.introspect_token(meta["introspection_endpoint"], token=refreshed["access_token"]).json()
    check(seen["active"] is True and seen["client_id"] == client_id and seen["sub"] == claims["sub"], "introspection")

    revoked = session.revoke_token(meta["revocation_endpoint"], token=refreshed["refresh_token"])
    check(revoked.status_code == 200, "revocation accepted")
    seen = session.introspect_token(meta["introspection_endpoint"], token=refreshed["access_token"]).json()
    check(seen == {"active": False}, "after revocation the grant's access token is inactive")
    gone = requests.get(meta["userinfo_endpoint"], headers={"Authorization": f"Bearer {refreshed['access_token']}"})
    check(gone.status_code == 401, "and userinfo refuses it")


def private_key_jwt(client_id, private_key_pem):
    """client_credentials with Authlib's private_key_jwt client authentication (RFC 7523)."""
    from authlib.oauth2.rfc7523 import PrivateKeyJWT

    meta = requests.get(urljoin(BASE, "/.well-known/openid-configuration")).json()
    check("private_key_jwt" in meta["token_endpoint_auth_methods_supported"], "discovery offers private_key_jwt")
    token_endpoint = meta["token_endpoint"]
    from joserfc.jwk import ECKey

    key = ECKey.import_key(private_key_pem)
    auth = PrivateKeyJWT(token_endpoint, headers={"kid": f"{client_id}-1"}, alg="ES256")
    session = OAuth2Session(client_id, key, token_endpoint_auth_method=auth)
    token = session.fetch_token(token_endpoint, grant_type="client_credentials")
    check(token["token_type"].lower() == "bearer" and "refresh_token" not in token, "client_credentials with private_key_jwt")
    seen = session.introspect_token(meta["introspection_endpoint"], token=token["access_token"]).json()
    check(seen["active"] is True and seen["sub"] == client_id, "the service token introspects as the client's own")


if __name__ == "__main__":
    for client in json.loads(os.environ["KW_CLIENTS"]):
        run(client["id"], client["secret"], client["alg"])
    if os.environ.get("KW_JWT_CLIENT"):
        private_key_jwt(os.environ["KW_JWT_CLIENT"], os.environ["KW_JWT_PRIVATE_KEY"])
    print("authlib interop: all checks passed")
