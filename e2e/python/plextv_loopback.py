"""What the plex.tv client scripts share: plex.tv's addresses sent to the keywarden under test
(`KW_BASE`) on loopback, and the check that prints each assertion as it passes."""

import os
import sys

import requests

BASE = os.environ["KW_BASE"]
PLEX_HOSTS = ("https://plex.tv", "https://clients.plex.tv")


class Loopback(requests.adapters.HTTPAdapter):
    """Rewrites plex.tv's addresses to the keywarden under test."""

    def send(self, request, **kwargs):
        for host in PLEX_HOSTS:
            if request.url.startswith(host):
                request.url = BASE + request.url[len(host):]
        return super().send(request, **kwargs)


def session():
    """A requests session whose plex.tv requests reach keywarden (plexapi takes it as `session=`)."""
    s = requests.Session()
    for host in PLEX_HOSTS:
        s.mount(host, Loopback())
    return s


def check(condition, what):
    if not condition:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)
