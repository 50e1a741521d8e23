"""A real Keycloak for the tests: tokens for the realm `complaints` (scripts/keycloak-realm.json).

The server comes from COMPLAINTS_TEST_KEYCLOAK (base URL, set by scripts/test); otherwise
`keycloak_url()` starts scripts/keycloak itself. A server that cannot start is an error for
the caller to turn into a failure: tests never skip for a missing identity provider.

People (realm role of the same name; password = username + "-pw"): intake, agent (team
billing), agent2 (role agent, team logistics), supervisor (team billing), department_head,
quality, executive, auditor, analyst, admin. Machine clients (client credentials):
complaints-intake / intake-secret, complaints-importer / importer-secret,
complaints-automation / automation-secret.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
REALM = "complaints"
WEB_CLIENT = "complaints-web"
AUDIENCE = "complaints-api"
ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin"

# username -> (realm role, team or None)
PEOPLE: dict[str, tuple[str, str | None]] = {
    "intake": ("intake", None),
    "agent": ("agent", "billing"),
    "agent2": ("agent", "logistics"),
    "supervisor": ("supervisor", "billing"),
    "department_head": ("department_head", None),
    "quality": ("quality", None),
    "executive": ("executive", None),
    "auditor": ("auditor", None),
    "analyst": ("analyst", None),
    "admin": ("admin", None),
}
# client id -> (secret, realm role of its service account)
SERVICE_CLIENTS: dict[str, tuple[str, str]] = {
    "complaints-intake": ("intake-secret", "intake"),
    "complaints-importer": ("importer-secret", "importer"),
    "complaints-automation": ("automation-secret", "automation"),
}


class Keycloak:
    """Tokens and a little administration against a running Keycloak at `base_url`."""

    def __init__(self, base_url: str, realm: str = REALM) -> None:
        self.base_url = base_url.rstrip("/")
        self.realm = realm
        self.issuer = f"{self.base_url}/realms/{realm}"
        self.token_url = f"{self.issuer}/protocol/openid-connect/token"
        self.jwks_url = f"{self.issuer}/protocol/openid-connect/certs"
        self.discovery_url = f"{self.issuer}/.well-known/openid-configuration"
        self._http = httpx.Client(timeout=30)

    def __repr__(self) -> str:
        return f"Keycloak({self.base_url!r})"

    def _grant(self, url: str, form: dict[str, str]) -> str:
        response = self._http.post(url, data=form)
        if response.status_code != 200:
            raise RuntimeError(f"token request for {form.get('username') or form['client_id']} "
                               f"failed: {response.status_code} {response.text}")
        return response.json()["access_token"]

    def token(self, username: str, password: str | None = None) -> str:
        """An access token for a person (password grant through the public client complaints-web)."""
        return self._grant(self.token_url, {
            "grant_type": "password",
            "client_id": WEB_CLIENT,
            "username": username,
            "password": f"{username}-pw" if password is None else password,
            "scope": "openid",
        })

    def client_token(self, client_id: str, secret: str) -> str:
        """An access token for a machine client (client-credentials grant)."""
        return self._grant(self.token_url, {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
        })

    def admin_token(self) -> str:
        """A token of the bootstrap administrator (master realm, admin-cli) for the admin REST API."""
        return self._grant(f"{self.base_url}/realms/master/protocol/openid-connect/token", {
            "grant_type": "password",
            "client_id": "admin-cli",
            "username": ADMIN_USER,
            "password": ADMIN_PASSWORD,
        })

    def discovery(self) -> dict:
        """The realm's OpenID Connect discovery document."""
        response = self._http.get(self.discovery_url)
        response.raise_for_status()
        return response.json()

    def jwks(self) -> dict:
        response = self._http.get(self.jwks_url)
        response.raise_for_status()
        return response.json()

    def _admin(self, method: str, path: str, token: str | None = None, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.admin_token()}"}
        response = self._http.request(method, f"{self.base_url}/admin/realms/{self.realm}{path}",
                                      headers=headers, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"admin {method} {path}: {response.status_code} {response.text}")
        return response

    def rotate_signing_key(self) -> str:
        """Add a new RS256 key (an `rsa-generated` key provider) with a priority above every
        existing key provider, so that tokens issued from now on carry a new `kid`. The old
        keys stay active and in the JWKS (tokens signed with them still verify). Returns the
        new kid. Can be called any number of times."""
        admin = self.admin_token()
        realm_id = self._admin("GET", "", admin).json()["id"]
        providers = self._admin("GET", "/components", admin, params={"type": "org.keycloak.keys.KeyProvider"}).json()
        top = max((int(p.get("config", {}).get("priority", ["0"])[0]) for p in providers), default=0)
        name = f"rotated-{uuid.uuid4().hex[:8]}"
        created = self._admin("POST", "/components", admin, json={
            "name": name,
            "providerId": "rsa-generated",
            "providerType": "org.keycloak.keys.KeyProvider",
            "parentId": realm_id,
            "config": {
                "priority": [str(top + 100)],
                "enabled": ["true"],
                "active": ["true"],
                "algorithm": ["RS256"],
                "keySize": ["2048"],
            },
        })
        component_id = created.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
        keys = self._admin("GET", "/keys", admin).json()["keys"]
        for key in keys:
            if key.get("providerId") == component_id and key.get("use", "SIG") == "SIG":
                return key["kid"]
        raise RuntimeError(f"no key from the new provider {name} ({component_id}) in {keys}")

    def close(self) -> None:
        self._http.close()


def keycloak_url() -> str:
    """Base URL of the test Keycloak: COMPLAINTS_TEST_KEYCLOAK, or scripts/keycloak started now.

    Raises RuntimeError (with the script's output, which ends with the server log tail) when
    the server cannot start."""
    url = os.environ.get("COMPLAINTS_TEST_KEYCLOAK")
    if url:
        return url.rstrip("/")
    done = subprocess.run([str(ROOT / "scripts" / "keycloak"), "start"], capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"cannot start Keycloak (scripts/keycloak start, exit {done.returncode}):\n"
                           f"{done.stdout}{done.stderr}")
    return lines[-1].strip()
