"""Schemathesis hooks for keywarden: every generated request carries a fresh access token.

A generated request may end its own session (sign-out, "sign out everywhere", a password change):
with one token for the whole run, everything after that would be a 401. So each test case signs
in anew (the suite's server hashes with the insecure test profile, so this is cheap).
"""

import os

import requests
import schemathesis

BASE = os.environ["KEYWARDEN_URL"]
LOGIN = os.environ.get("KEYWARDEN_LOGIN", "schemathesis")
PASSWORD = os.environ.get("KEYWARDEN_PASSWORD", "correct horse battery staple")


@schemathesis.auth(refresh_interval=None)
class FreshToken:
    def get(self, case, context):
        answer = requests.post(
            f"{BASE}/api/v1/sessions",
            json={
                "login": LOGIN,
                "password": PASSWORD,
                "device": {"client_id": "schemathesis", "product": "schemathesis", "platform": "linux", "name": "fuzzer"},
            },
            timeout=10,
        )
        answer.raise_for_status()
        return answer.json()["access_token"]

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"
