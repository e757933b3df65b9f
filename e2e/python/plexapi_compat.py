"""The unmodified `plexapi` package (PyPI) against keywarden's plex.tv-compatible API (issue 8).

plexapi has https://plex.tv built in: a transport adapter sends its requests to keywarden on
loopback instead. Phase `sessions` signs in every way the suite covers and writes the tokens that
should still work to KW_TOKENS_FILE; phase `after` checks each of them is refused after
"Sign out of all devices" on /security.
"""

import json
import os
import sys
import time

import pyotp
import plexapi
from plexapi.exceptions import TwoFactorRequired, Unauthorized
from plexapi.exceptions import BadRequest
from plexapi.myplex import MyPlexAccount, MyPlexJWTLogin, MyPlexPinLogin

from plextv_loopback import BASE, check, session


def as_device(identifier, name):
    """plexapi names the device from its global headers; each sign-in below is another device."""
    plexapi.BASE_HEADERS["X-Plex-Client-Identifier"] = identifier
    plexapi.BASE_HEADERS["X-Plex-Device-Name"] = name


def refused(token):
    try:
        MyPlexAccount(token=token, session=session())
    except Unauthorized:
        return True
    return False


def phase_sessions():
    login, password = os.environ["KW_LOGIN"], os.environ["KW_PASSWORD"]
    as_device("plexapi-laptop", "Laptop")
    account = MyPlexAccount(login, password, session=session())
    check(account.username == login and account.email == os.environ["KW_EMAIL"], "MyPlexAccount(username, password)")
    check(account.authToken.startswith("kw_pt_"), "the authToken is a keywarden device token")
    check(account.ping(), "ping")

    again = MyPlexAccount(token=account.authToken, session=session())
    check(again.username == login and again.authToken == account.authToken, "MyPlexAccount(token=...)")
    check(isinstance(account.id, int) and account.id > 0 and again.id == account.id, "the account has a stable numeric id")

    try:
        MyPlexAccount(login, "not the password", session=session())
        check(False, "a wrong password is refused")
    except Unauthorized:
        check(True, "a wrong password is refused with Unauthorized")

    as_device("plexapi-totp-phone", "TOTP phone")
    totp_login, totp_password = os.environ["KW_TOTP_LOGIN"], os.environ["KW_TOTP_PASSWORD"]
    try:
        MyPlexAccount(totp_login, totp_password, session=session())
        check(False, "a TOTP account without a code is refused")
    except TwoFactorRequired:
        check(True, "a TOTP account without a code raises TwoFactorRequired")
    try:
        MyPlexAccount(totp_login, totp_password, session=session(), code="000000" if pyotp.TOTP(os.environ["KW_TOTP_SECRET"]).now() != "000000" else "111111")
        check(False, "a wrong code is refused")
    except TwoFactorRequired:
        check(True, "a wrong code raises TwoFactorRequired")
    code = pyotp.TOTP(os.environ["KW_TOTP_SECRET"]).now()
    with_code = MyPlexAccount(totp_login, totp_password, session=session(), code=code)
    check(with_code.username == totp_login and with_code.twoFactorEnabled, "MyPlexAccount(..., code=) for a TOTP account")

    as_device("plexapi-tablet", "Tablet")
    tablet = MyPlexAccount(login, password, session=session())
    names = {d.clientIdentifier: d for d in account.devices()}
    check({"plexapi-laptop", "plexapi-tablet"} <= set(names), "devices() lists both devices")
    check(names["plexapi-tablet"].name == "Tablet", "a device is named from X-Plex-Device-Name")
    names["plexapi-tablet"].delete()
    check(refused(tablet.authToken), "removing a device signs it out")
    check("plexapi-tablet" not in {d.clientIdentifier for d in account.devices()}, "the removed device is gone")

    as_device("plexapi-script", "Script")
    script = MyPlexAccount(login, password, session=session())
    script.signout()
    check(refused(script.authToken), "signout() ends that token")
    check(not refused(account.authToken), "other devices stay signed in")

    # A media server signs in as a device that provides `server` and publishes its addresses.
    as_device("plexapi-server", "Basement NAS")
    plexapi.BASE_HEADERS["X-Plex-Provides"] = "server"
    server = MyPlexAccount(login, password, session=session())
    plexapi.BASE_HEADERS["X-Plex-Provides"] = "controller"
    published = session().put(
        f"{BASE}/devices/plexapi-server",
        params=[("Connection[][uri]", "http://192.168.1.20:32400"), ("Connection[][uri]", "https://nas.example.net:32400")],
        headers={**plexapi.BASE_HEADERS, "X-Plex-Client-Identifier": "plexapi-server", "X-Plex-Token": server.authToken},
    )
    check(published.status_code == 200, "a media server publishes its connections")
    resources = account.resources()
    check([r.name for r in resources] == ["Basement NAS"], "resources() lists the owned media server only")
    nas = resources[0]
    check(nas.owned and "server" in nas.provides and nas.accessToken == account.authToken, "the server is owned, with an access token")
    check(nas.createdAt is not None and nas.lastSeenAt is not None, "the resource's times parse")
    uris = sorted(c.uri for c in nas.connections)
    check(uris == ["http://192.168.1.20:32400", "https://nas.example.net:32400"], "its connections are listed")
    check([c.local for c in nas.connections if c.address == "192.168.1.20"] == [True], "a private address is local")
    check(account.users() == [], "users() reads the (empty) friends list as XML")

    # A TV shows a PIN; its owner approves it from a signed-in plexapi session; the TV gets a token.
    as_device("plexapi-tv", "Living room TV")
    pin_login = MyPlexPinLogin(session=session())
    code = pin_login.pin
    check(len(code) == 4, "MyPlexPinLogin asks for a four-character PIN")
    check(not pin_login.checkLogin(), "before approval the PIN has no token")
    stranger = session().get(
        f"{BASE}/api/v2/pins/{pin_login._id}",
        headers={**plexapi.BASE_HEADERS, "X-Plex-Client-Identifier": "someone-else"},
    )
    check(stranger.status_code == 404, "another device cannot poll the PIN")
    account.link(code)
    check(pin_login.checkLogin() and pin_login.token.startswith("kw_pt_"), "after account.link(pin) the PIN gives a token")
    tv = MyPlexAccount(token=pin_login.token, session=session())
    check(tv.username == login, "the linked TV signs in as its owner")
    tv_device = [d for d in account.devices() if d.clientIdentifier == "plexapi-tv"]
    check(len(tv_device) == 1 and tv_device[0].name == "Living room TV", "the linked TV is among the devices")
    try:
        account.link(code)
        check(False, "a PIN is approved once")
    except Exception:
        check(True, "a PIN is approved once")

    # The device-key JWT login: register an Ed25519 key with a signed-in token, then trade JWTs
    # signed with it for tokens that plexapi verifies against our published keys.
    as_device("plexapi-jwt", "JWT device")
    device = MyPlexAccount(login, password, session=session())
    jwt_login = MyPlexJWTLogin(session=session(), token=device.authToken)
    jwt_login.generateKeypair()
    jwt_login.registerDevice()
    jwt_token = jwt_login.refreshJWT()
    check(jwt_login.verifyJWT(), "refreshJWT() gives a token signed by our keys, for this key, valid for days")
    check(MyPlexAccount(token=jwt_token, session=session()).username == login, "MyPlexAccount(token=<JWT>)")
    replay = session().post(
        f"{BASE}/api/v2/auth/token", json={"jwt": jwt_login._clientJWT}, headers={**plexapi.BASE_HEADERS, "Accept": "application/json"}
    )
    check(replay.status_code == 401, "a device JWT works once (its nonce is spent)")
    second = jwt_login.refreshJWT()
    check(second != jwt_token and not refused(second), "the key mints again with a new nonce")
    stranger = MyPlexJWTLogin(session=session())
    stranger.generateKeypair()
    try:
        stranger.refreshJWT()
        check(False, "an unregistered key mints nothing")
    except BadRequest:
        check(True, "an unregistered key mints nothing")

    with open(os.environ["KW_TOKENS_FILE"], "w") as out:
        keypair = [jwt_login._privateKey.hex(), jwt_login._publicKey.hex()]
        json.dump({"tokens": [account.authToken, tv.authToken, server.authToken, second], "keypair": keypair}, out)
    print("plexapi compat: sessions phase passed")


def phase_after():
    with open(os.environ["KW_TOKENS_FILE"]) as saved:
        saved = json.load(saved)
    for token in saved["tokens"]:
        check(refused(token), "after Sign out of all devices, plexapi gets Unauthorized")
    as_device("plexapi-jwt", "JWT device")
    private, public = (bytes.fromhex(k) for k in saved["keypair"])
    jwt_login = MyPlexJWTLogin(session=session(), keypair=(private, public))
    try:
        jwt_login.refreshJWT()
        check(False, "the device key mints nothing after Sign out of all devices")
    except BadRequest:
        check(True, "the device key mints nothing after Sign out of all devices")
    print("plexapi compat: after phase passed")


if __name__ == "__main__":
    {"sessions": phase_sessions, "after": phase_after}[sys.argv[1]]()
