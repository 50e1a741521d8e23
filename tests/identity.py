"""Identity for the tests: a development issuer of their own, tokens and principals.

The command and read APIs take the composition root's `authenticate` dependency; the
tests give them one over this issuer (no rate limits), and send tokens for its users.
Tests of real sign-in use Keycloak (`tests/keycloak.py`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from aggregates.access import Principal
from complaints.identity import DEV_ISSUER, DevUser, LocalIssuer, TokenVerifier, authenticator

AUDIENCE = "complaints-api"
# Processes the tests start trust it too: COMPLAINTS_DEV_ISSUER_KEY=ISSUER_KEY (conftest.backbone_env).
ISSUER_KEY = Path(tempfile.mkdtemp(prefix="complaints-test-issuer-")) / "key.pem"
ISSUER = LocalIssuer(ISSUER_KEY, AUDIENCE)
VERIFIER = TokenVerifier(ISSUER, DEV_ISSUER, AUDIENCE)
AUTHENTICATE = authenticator(VERIFIER, None)

# Who the tests act as unless they say otherwise: an operator who may do everything there
# is to do (every command, state occurred_at, read everything).
OPERATOR_USER = DevUser("operator", "Test operator", ("department_head", "importer", "auditor"))


def principal_of(user: DevUser) -> Principal:
    return Principal(user.username, user.name, frozenset(user.roles), user.team)


OPERATOR = principal_of(OPERATOR_USER)


def bearer(user: DevUser = OPERATOR_USER) -> dict[str, str]:
    return {"Authorization": f"Bearer {ISSUER.token(user)}"}


def acting(subject: str) -> Principal:
    """An operator named `subject` (for tests that tell who did what)."""
    return Principal(subject, subject, OPERATOR.roles)
