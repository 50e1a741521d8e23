"""The test identity provider: scripts/keycloak-realm.json as a real Keycloak serves it.

What the complaint desk relies on in every access token: the issuer, the audience
complaints-api, the realm role under realm_access.roles, a person's name and
preferred_username, and the string claim `team` for people in a team. Also: a signing key
rotation gives new tokens a new kid that the JWKS publishes.
"""

from __future__ import annotations

import jwt
import pytest

from tests.keycloak import AUDIENCE, PEOPLE, SERVICE_CLIENTS, Keycloak


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def audiences(payload: dict) -> list[str]:
    aud = payload.get("aud", [])
    return [aud] if isinstance(aud, str) else list(aud)


@pytest.fixture(scope="module")
def people(keycloak: Keycloak) -> dict[str, dict]:
    """One access token per person, decoded."""
    return {username: claims(keycloak.token(username)) for username in PEOPLE}


@pytest.fixture(scope="module")
def services(keycloak: Keycloak) -> dict[str, dict]:
    """One access token per machine client, decoded."""
    return {client: claims(keycloak.client_token(client, secret))
            for client, (secret, _) in SERVICE_CLIENTS.items()}


def test_issuer_is_the_realm_on_loopback(keycloak: Keycloak) -> None:
    assert keycloak.issuer == f"{keycloak.base_url}/realms/complaints"
    discovery = keycloak.discovery()
    assert discovery["issuer"] == keycloak.issuer
    assert discovery["jwks_uri"] == keycloak.jwks_url


def assert_issued_for(payload: dict, keycloak: Keycloak, role: str) -> None:
    """Issued by the realm, for the API, with the role."""
    assert payload["iss"] == keycloak.issuer
    assert AUDIENCE in audiences(payload)
    assert role in payload["realm_access"]["roles"]


@pytest.mark.parametrize("username", sorted(PEOPLE))
def test_person_token(people: dict[str, dict], keycloak: Keycloak, username: str) -> None:
    role, team = PEOPLE[username]
    payload = people[username]
    assert_issued_for(payload, keycloak, role)
    assert payload["preferred_username"] == username
    assert payload["name"].strip()
    assert payload["azp"] == "complaints-web"
    assert payload["exp"] - payload["iat"] == 300
    if team is None:
        assert "team" not in payload
    else:
        assert payload["team"] == team


def test_only_the_own_role(people: dict[str, dict]) -> None:
    """No person carries another desk role (the realm's default roles are not granted)."""
    desk_roles = {role for role, _ in PEOPLE.values()} | {"automation", "importer"}
    for username, payload in people.items():
        assert set(payload["realm_access"]["roles"]) & desk_roles == {PEOPLE[username][0]}, username


def test_wrong_password_is_refused(keycloak: Keycloak) -> None:
    with pytest.raises(RuntimeError, match="401"):
        keycloak.token("agent", "not-the-password")


@pytest.mark.parametrize("client_id", sorted(SERVICE_CLIENTS))
def test_service_client_token(services: dict[str, dict], keycloak: Keycloak, client_id: str) -> None:
    _, role = SERVICE_CLIENTS[client_id]
    payload = services[client_id]
    assert_issued_for(payload, keycloak, role)
    assert payload["azp"] == client_id
    assert "team" not in payload


def test_wrong_client_secret_is_refused(keycloak: Keycloak) -> None:
    with pytest.raises(RuntimeError, match="401"):
        keycloak.client_token("complaints-intake", "importer-secret")


def test_tokens_verify_against_the_jwks(keycloak: Keycloak) -> None:
    token = keycloak.token("agent")
    key = jwt.PyJWKClient(keycloak.jwks_url).get_signing_key_from_jwt(token)
    payload = jwt.decode(token, key.key, algorithms=["RS256"], audience=AUDIENCE, issuer=keycloak.issuer)
    assert payload["team"] == "billing"


def test_signing_key_rotation(keycloak: Keycloak) -> None:
    before = jwt.get_unverified_header(keycloak.token("agent"))["kid"]
    kids = []
    for _ in range(2):
        kid = keycloak.rotate_signing_key()
        token = keycloak.token("agent")
        assert jwt.get_unverified_header(token)["kid"] == kid
        published = {key["kid"] for key in keycloak.jwks()["keys"]}
        assert kid in published
        assert before in published  # the previous keys still verify tokens issued earlier
        kids.append(kid)
    assert len({before, *kids}) == 3
