"""The tools people run beside a media server, against keywarden's plex.tv-compatible API (issue 21).

Each phase reproduces one tool's own requests and parsing, read from its source: the unmodified
`plexapi` package where it covers the call, and otherwise the tool's requests (headers, paths,
bodies) and its parser (`xml.dom.minidom` for Tautulli, `ElementTree` for Ombi's XML models), so a
field a tool reads and we do not write fails here. plex.tv's addresses go to keywarden on loopback.

Phases: `claim` (plexapi's claimToken()), `plexapi` (users(), resources(), webhooks),
`oauth` (MyPlexPinLogin(oauth=True), completed by the browser through /auth), `tautulli`, `ombi`.
"""

import os
import sys
import uuid
import xml.etree.ElementTree as ElementTree
from xml.dom import minidom

import requests
import plexapi
from plexapi.exceptions import BadRequest
from plexapi.myplex import MyPlexAccount, MyPlexPinLogin

from plextv_loopback import BASE, check, session

LOGIN, PASSWORD = os.environ["KW_LOGIN"], os.environ["KW_PASSWORD"]


def account(device):
    plexapi.BASE_HEADERS["X-Plex-Client-Identifier"] = device
    plexapi.BASE_HEADERS["X-Plex-Device-Name"] = device
    return MyPlexAccount(LOGIN, PASSWORD, session=session())


def phase_claim():
    """plexapi's claimToken(), printed for the container's script."""
    owner = account("plexapi-claimer")
    token = owner.claimToken()
    check(token.startswith("claim-"), "claimToken() gives a claim-… token")
    print(f"CLAIM={token}", flush=True)
    print(f"OWNER_TOKEN={owner.authToken}", flush=True)


def phase_plexapi():
    owner = account("plexapi-script")
    check(owner.users() == [], "users(): none, from a well-formed empty container")
    server_id = os.environ["KW_SERVER_ID"]
    resources = owner.resources()
    servers = [r for r in resources if r.clientIdentifier == server_id]
    check(len(servers) == 1, "resources() lists the claimed server")
    server = servers[0]
    check("server" in server.provides and server.owned, "it is an owned media server")
    check(server.accessToken == owner.authToken, "its accessToken is the account's")
    uris = sorted(c.uri for c in server.connections)
    check(uris == sorted(os.environ["KW_SERVER_URIS"].split(",")), f"with the addresses it published: {uris}")
    local = [c for c in server.connections if c.local]
    check(len(local) == 1 and local[0].address == "127.0.0.1" and local[0].port == 32400, "and which is local")

    check(owner.webhooks() == [], "webhooks(): none yet")
    check(owner.addWebhook("https://hooks.example.net/plex") == ["https://hooks.example.net/plex"], "addWebhook()")
    check(owner.addWebhook("http://10.0.0.5:8181/hook")[1] == "http://10.0.0.5:8181/hook", "a second, kept in order")
    check(owner.deleteWebhook("https://hooks.example.net/plex") == ["http://10.0.0.5:8181/hook"], "deleteWebhook()")
    try:
        owner.addWebhook("javascript:alert(1)")
        check(False, "a non-http webhook is refused")
    except BadRequest:
        check(True, "a non-http webhook is refused with BadRequest")
    check(owner.deleteWebhook("http://10.0.0.5:8181/hook") == [], "the last one deleted (urls= empty)")
    print("plex tools: plexapi phase passed", flush=True)


def phase_oauth():
    """MyPlexPinLogin(oauth=True): prints the /auth URL, then waits for the browser to approve it."""
    plexapi.BASE_HEADERS["X-Plex-Client-Identifier"] = "plexapi-oauth-" + uuid.uuid4().hex[:8]
    login = MyPlexPinLogin(session=session(), oauth=True)
    url = login.oauthUrl(forwardUrl=os.environ["KW_FORWARD_URL"])
    check(len(login._code) == 25, "strong=True gives a 25-character code")
    print(f"OAUTH_URL={url}", flush=True)
    login.run(timeout=90)
    check(login.waitForLogin(), "the PIN is approved in the browser and collected")
    check(MyPlexAccount(token=login.token, session=session()).username == LOGIN, "its token is the account's")
    print("plex tools: oauth phase passed", flush=True)


# --- Tautulli (plexpy/plextv.py, plexpy/http_handler.py) --------------------------------------

TAUTULLI_HEADERS = {
    "X-Plex-Product": "Tautulli",
    "X-Plex-Version": "2.15.0",
    "X-Plex-Client-Identifier": "tautulli-" + uuid.uuid4().hex[:12],
    "X-Plex-Platform": "Linux",
    "X-Plex-Platform-Version": "6.1",
    "X-Plex-Device": "Linux 6.1",
    "X-Plex-Device-Name": "tautulli (Tautulli)",
    "X-Plex-Language": "en",
}


def tautulli(method, uri, token=None):
    """Tautulli's HTTPHandler: its headers, the token as a header, XML parsed by minidom."""
    headers = dict(TAUTULLI_HEADERS)
    if token:
        headers["X-Plex-Token"] = token
    response = requests.request(method, BASE + uri, headers=headers, timeout=10)
    check(response.status_code in (200, 201), f"Tautulli {method} {uri}: {response.status_code}")
    return minidom.parseString(response.content)


def attr(node, name):
    """Tautulli's helpers.get_xml_attr."""
    return node.getAttribute(name) if node.getAttribute(name) else ""


def phase_tautulli():
    # Signing in with Plex: a strong PIN, approved by its owner, polled until the token appears.
    pin = tautulli("POST", "/api/v2/pins?strong=true").getElementsByTagName("pin")[0]
    pin_id, code = pin.getAttribute("id"), pin.getAttribute("code")
    check(len(code) == 25 and pin_id.isdigit(), "get_pin(): a strong PIN with a numeric id")
    account("tautulli-owner-phone").link(code)
    token = tautulli("GET", f"/api/v2/pins/{pin_id}").getElementsByTagName("pin")[0].getAttribute("authToken")
    check(token.startswith("kw_pt_"), "get_pin() collects the token")

    # get_full_users_list(): the owner from /users/account, friends from /api/users.
    own = tautulli("GET", "/users/account", token).getElementsByTagName("user")
    check(len(own) == 1, "/users/account has one user element")
    details = {k: attr(own[0], a) for k, a in [("user_id", "id"), ("username", "username"), ("email", "email"),
                                                ("is_home_user", "home"), ("is_restricted", "restricted"),
                                                ("user_token", "authToken")]}
    check(details["user_id"].isdigit() and details["username"] == LOGIN, f"own account details: {details['username']}")
    check(details["is_home_user"] == "0" and details["is_restricted"] == "0", "home and restricted as 0")
    check(details["user_token"] == token, "authToken is the token")
    subscription = tautulli("GET", "/users/account", token).getElementsByTagName("subscription")
    check(subscription and attr(subscription[0], "active") == "0", "get_plexpass_status(): no Plex Pass")
    friends = tautulli("GET", "/api/users", token).getElementsByTagName("User")
    check(friends == [], "no friends")

    # get_server_connections() and discover(): the server by its identifier, owned, present, `server`.
    server_id = os.environ["KW_SERVER_ID"]
    resources = tautulli("GET", "/api/resources?includeHttps=1", token)
    container = resources.getElementsByTagName("MediaContainer")[0]
    check(container.getAttribute("size") != "0", "resources are not empty")
    devices = [d for d in resources.getElementsByTagName("Device") if attr(d, "clientIdentifier") == server_id]
    check(len(devices) == 1, "get_server_connections() finds the server")
    device = devices[0]
    check(attr(device, "presence") == "1" and attr(device, "owned") == "1" and attr(device, "provides") == "server",
          "discover() keeps it: presence 1, owned 1, provides exactly server")
    connections = [{k: attr(c, k) for k in ("protocol", "address", "port", "uri", "local")}
                   for c in device.getElementsByTagName("Connection")]
    check(any(c["address"] == "127.0.0.1" and c["port"] == "32400" and c["local"] == "1" for c in connections),
          f"its connections: {connections}")
    check(attr(device, "publicAddressMatches") in ("0", "1"), "publicAddressMatches is 0 or 1")
    check(attr(device, "accessToken") == token, "get_server_token(): the accessToken")

    # get_server_times(): /pms/servers.xml, the server's createdAt and updatedAt.
    servers = tautulli("GET", "/pms/servers.xml", token).getElementsByTagName("Server")
    times = [s for s in servers if attr(s, "machineIdentifier") == server_id]
    check(len(times) == 1 and attr(times[0], "createdAt").isdigit() and attr(times[0], "updatedAt").isdigit(),
          "get_server_times(): Unix seconds")
    shared = tautulli("GET", f"/api/servers/{server_id}/shared_servers", token).getElementsByTagName("SharedServer")
    check(shared == [], "get_plextv_shared_servers(): nobody")
    listed = tautulli("GET", "/devices.xml", token).getElementsByTagName("Device")
    names = {attr(d, "clientIdentifier"): attr(d, "provides") for d in listed}
    check(names.get(server_id) == "server", "get_devices_list(): the server among the devices")
    pong = requests.get(BASE + "/api/v2/ping", headers={**TAUTULLI_HEADERS, "X-Plex-Token": token}, timeout=10)
    check(pong.status_code == 200, "ping_plextv()")
    print("plex tools: tautulli phase passed", flush=True)


# --- Ombi (src/Ombi.Api.Plex/PlexApi.cs) --------------------------------------------------------

OMBI_HEADERS = {
    "X-Plex-Client-Identifier": uuid.uuid4().hex,
    "X-Plex-Product": "Ombi",
    "X-Plex-Version": "3",
    "X-Plex-Device": "Ombi",
    "X-Plex-Platform": "Web",
    "Accept": "application/json",
}


def phase_ombi():
    # SignIn: JSON {"user": {"login", "password"}} to /users/sign_in.json; PlexAuthentication.user.
    signed_in = requests.post(BASE + "/users/sign_in.json", headers=OMBI_HEADERS,
                              json={"user": {"login": os.environ["KW_EMAIL"], "password": PASSWORD}}, timeout=10)
    check(signed_in.status_code == 201, f"SignIn: {signed_in.status_code}")
    user = signed_in.json()["user"]
    token = user["authentication_token"]
    check(token.startswith("kw_pt_") and user["username"] == LOGIN and isinstance(user["id"], int), "PlexAuthentication")
    wrong = requests.post(BASE + "/users/sign_in.json", headers=OMBI_HEADERS,
                          json={"user": {"login": os.environ["KW_EMAIL"], "password": "not it"}}, timeout=10)
    check(wrong.status_code == 401, "a wrong password is 401")

    with_token = {**OMBI_HEADERS, "X-Plex-Token": token}
    account_json = requests.get(BASE + "/users/account.json", headers=with_token, timeout=10).json()
    check(account_json["user"]["email"] == os.environ["KW_EMAIL"], "GetAccount")
    # GetServer and GetUsers deserialize XML (ContentType.Xml).
    servers = ElementTree.fromstring(requests.get(BASE + "/pms/servers.xml", headers=with_token, timeout=10).content)
    ids = [s.get("machineIdentifier") for s in servers.findall("Server")]
    check(os.environ["KW_SERVER_ID"] in ids, "GetServer lists the server")
    users = ElementTree.fromstring(requests.get(BASE + "/api/users", headers=with_token, timeout=10).content)
    check(users.tag == "MediaContainer" and users.findall("User") == [], "GetUsers: an empty container")
    check(requests.get(BASE + "/api/v2/ping", headers=with_token, timeout=10).status_code == 200, "Ping")
    # GetPin: JSON, `id` a number.
    pin = requests.post(BASE + "/api/v2/pins?strong=true", headers=OMBI_HEADERS, timeout=10).json()
    polled = requests.get(BASE + f"/api/v2/pins/{pin['id']}", headers=OMBI_HEADERS, timeout=10).text
    check(isinstance(pin["id"], int) and "errors" not in polled, "GetPin")
    print("plex tools: ombi phase passed", flush=True)


if __name__ == "__main__":
    {"claim": phase_claim, "plexapi": phase_plexapi, "oauth": phase_oauth, "tautulli": phase_tautulli,
     "ombi": phase_ombi}[sys.argv[1]]()
