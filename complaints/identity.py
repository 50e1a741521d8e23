"""Who is asking: bearer tokens verified, principals made from them, requests limited per principal.

Two issuers, one verifier:
- an OpenID Connect provider (Keycloak in the tests and in production): its JWKS fetched
  from the discovery document, cached, and fetched again when a token names a key id it
  has not seen (a key rotation);
- on the embedded default only, a local development issuer with its own key in
  `var/` (`COMPLAINTS_DEV_ISSUER_KEY`), which signs tokens for the demo users
  (`complaints token`, the page's dev sign-in). It is refused when
  `COMPLAINTS_ENV=production`.

Signatures, issuer, audience and expiry are checked by PyJWT; roles come from a
configurable claim (Keycloak's `realm_access.roles` by default).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import APIRouter, HTTPException, Request
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

from aggregates.access import ROLES, Principal

log = logging.getLogger(__name__)

DEV_ISSUER = "urn:complaints:dev-issuer"
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]


class Unauthenticated(Exception):
    """No token, or one that does not verify (HTTP 401)."""


# ---------------------------------------------------------------------------- keys
class LocalIssuer:
    """The development issuer: an RSA key kept in a file, tokens for the demo users."""

    def __init__(self, key_file: Path, audience: str) -> None:
        self.audience = audience
        self.key = _load_or_create_key(key_file)
        public = self.key.public_key()
        self.jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
        self.kid = _thumbprint(self.jwk)
        self.jwk |= {"kid": self.kid, "use": "sig", "alg": "RS256"}
        self.public_key = public

    def token(self, user: DevUser, lifetime: int = 8 * 3600) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": DEV_ISSUER, "aud": self.audience, "sub": user.username, "iat": now,
            "exp": now + lifetime, "jti": uuid.uuid4().hex, "name": user.name,
            "preferred_username": user.username, "realm_access": {"roles": list(user.roles)},
        }
        if user.team:
            claims["team"] = user.team
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.jwk]}

    def key_for(self, kid: str | None) -> Any:
        if kid != self.kid:
            raise Unauthenticated(f"the token was signed with key {kid!r}, not this issuer's")
        return self.public_key


def _load_or_create_key(path: Path) -> rsa.RSAPrivateKey:
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(pem)
    log.info("created the development issuer's key %s", path)
    return key


def _thumbprint(jwk: dict[str, Any]) -> str:
    """The key's RFC 7638 thumbprint: a key id that changes with the key."""
    members = json.dumps({k: jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(members.encode()).digest()).rstrip(b"=").decode()


class ProviderKeys:
    """An OpenID Connect provider's signing keys: the JWKS from its discovery document,
    cached, fetched again for an unknown key id (PyJWKClient, at most once per cooldown)."""

    def __init__(self, issuer: str, jwks_url: str | None = None) -> None:
        self.issuer = issuer
        self._jwks_url = jwks_url
        self._client: jwt.PyJWKClient | None = None
        self._lock = threading.Lock()

    def client(self) -> jwt.PyJWKClient:
        with self._lock:
            if self._client is None:
                url = self._jwks_url or _discover(self.issuer)["jwks_uri"]
                # An unknown key id fetches the keys again at most every 5 s: a rotation is
                # seen within seconds, and forged key ids cannot hammer the provider.
                self._client = jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=10, cooldown_duration=5)
            return self._client

    def key_for(self, kid: str | None) -> Any:
        if kid is None:
            raise Unauthenticated("the token names no signing key (kid)")
        try:
            return self.client().get_signing_key(kid).key
        except jwt.PyJWKClientConnectionError as error:
            raise Unauthenticated(f"the identity provider's keys cannot be fetched: {error}") from error
        except jwt.PyJWKClientError as error:
            raise Unauthenticated(f"no signing key {kid!r} at the identity provider") from error


def _discover(issuer: str) -> dict[str, Any]:
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 (the configured issuer)
            document: dict[str, Any] = json.load(answer)
    except OSError as error:
        raise Unauthenticated(f"the identity provider {issuer} does not answer ({url}): {error}") from error
    return document


# ---------------------------------------------------------------------------- verification
class TokenVerifier:
    """Bearer token -> Principal; verified tokens are remembered until they expire."""

    def __init__(self, keys: LocalIssuer | ProviderKeys, issuer: str, audience: str, *,
                 roles_claim: str = "realm_access.roles", team_claim: str = "team",
                 leeway: float = 30, cache_size: int = 10_000) -> None:
        self.keys, self.issuer, self.audience = keys, issuer, audience
        self.roles_claim, self.team_claim, self.leeway = roles_claim.split("."), team_claim, leeway
        self.cache_size = cache_size
        self._verified: dict[str, tuple[Principal, float]] = {}

    def principal(self, token: str) -> Principal:
        known = self._verified.get(token)
        if known is not None and known[1] > time.time():
            return known[0]
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token, self.keys.key_for(header.get("kid")), algorithms=ALGORITHMS,
                audience=self.audience, issuer=self.issuer, leeway=self.leeway,
                options={"require": ["exp", "iss", "sub"]},
            )
        except jwt.PyJWTError as error:
            raise Unauthenticated(f"the token is not valid: {error}") from error
        principal = self.principal_of(claims)
        if len(self._verified) >= self.cache_size:
            self._verified.clear()
        self._verified[token] = (principal, float(claims["exp"]))
        return principal

    def principal_of(self, claims: dict[str, Any]) -> Principal:
        roles: Any = claims
        for step in self.roles_claim:
            roles = roles.get(step, {}) if isinstance(roles, dict) else {}
        known = frozenset(r for r in roles if r in ROLES) if isinstance(roles, list) else frozenset()
        team = claims.get(self.team_claim)
        if isinstance(team, list):
            team = team[0] if team else None
        name = _display_name(claims)
        return Principal(subject=str(claims["sub"]), name=str(name), roles=known,
                         team=str(team).strip("/") if team else None)


def _display_name(claims: dict[str, Any]) -> str:
    """The name a person goes by: Chinese names family name first, with no space (the
    providers' `name` claim is given name, space, family name)."""
    given, family = claims.get("given_name"), claims.get("family_name")
    if given and family and any("\u4e00" <= ch <= "\u9fff" for ch in given + family):
        return f"{family}{given}"
    name = claims.get("name") or claims.get("preferred_username") or claims.get("azp") or claims["sub"]
    return str(name)


# ---------------------------------------------------------------------------- limits
@dataclass(frozen=True)
class RateLimits:
    """Requests per principal: commands, reads, and the costly reads (exports, as_of views)."""

    commands: str = "100/second"
    reads: str = "100/second"
    costly: str = "60/minute"

    def limiter(self) -> Callable[[Principal, Request], float | None]:
        """`check(principal, request)`: None, or the seconds to wait (the request is refused)."""
        strategy = FixedWindowRateLimiter(MemoryStorage())
        items = {"commands": parse(self.commands), "reads": parse(self.reads), "costly": parse(self.costly)}

        def check(principal: Principal, request: Request) -> float | None:
            if request.method == "POST":
                bucket = "commands"
            elif request.url.path.startswith("/export") or "as_of" in request.query_params:
                bucket = "costly"
            else:
                bucket = "reads"
            if strategy.hit(items[bucket], principal.subject, bucket):
                return None
            reset = strategy.get_window_stats(items[bucket], principal.subject, bucket).reset_time
            return max(1.0, reset - time.time())

        return check


def authenticator(verifier: TokenVerifier, limits: RateLimits | None) -> Callable[[Request], Awaitable[Principal]]:
    """The FastAPI dependency both APIs take: the request's principal, or 401 / 429."""
    check = limits.limiter() if limits is not None else None

    # A coroutine on purpose: FastAPI would run a plain function in its thread pool, which
    # costs the command API a tenth of its rate; verifying a known token is a dict lookup.
    async def authenticate(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(401, "sign in: send `Authorization: Bearer <token>` (on the embedded"
                                     " default, `complaints token --role agent` prints one)",
                                headers={"WWW-Authenticate": "Bearer"})
        try:
            principal = verifier.principal(token.strip())
        except Unauthenticated as error:
            raise HTTPException(401, str(error), headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}) from None
        if check is not None and (wait := check(principal, request)) is not None:
            raise HTTPException(429, f"too many requests from {principal.subject}: try again in {wait:.0f} s",
                                headers={"Retry-After": str(int(wait + 0.999))})
        request.state.principal = principal
        return principal

    return authenticate


# ---------------------------------------------------------------------------- development
@dataclass(frozen=True)
class DevUser:
    username: str
    name: str
    roles: tuple[str, ...]
    team: str | None = None


# One demo user per role; the agents' names are the demo data's agents.
DEV_USERS: tuple[DevUser, ...] = (
    DevUser("intake", "王芳 Wang Fang", ("intake",)),
    DevUser("billing-1", "李娜 Li Na", ("agent",), "billing"),
    DevUser("logistics-1", "张伟 Zhang Wei", ("agent",), "logistics"),
    DevUser("billing-lead", "刘洋 Liu Yang", ("supervisor",), "billing"),
    DevUser("head", "陈静 Chen Jing", ("department_head",)),
    DevUser("quality", "杨磊 Yang Lei", ("quality",)),
    DevUser("executive", "赵敏 Zhao Min", ("executive",)),
    DevUser("auditor", "黄勇 Huang Yong", ("auditor",)),
    DevUser("analyst", "周婷 Zhou Ting", ("analyst",)),
    DevUser("admin", "吴强 Wu Qiang", ("admin",)),
    DevUser("automation", "automation", ("automation",)),
    DevUser("importer", "importer", ("importer",)),
    DevUser("notifier", "notifier", ("notifier",)),
)


def dev_user(role: str | None = None, username: str | None = None) -> DevUser:
    for user in DEV_USERS:
        if user.username == username or (username is None and role in user.roles):
            return user
    raise KeyError(f"no demo user {username or 'with role ' + str(role)}: the demo users are "
                   + ", ".join(f"{u.username} ({'/'.join(u.roles)})" for u in DEV_USERS))


def dev_router(issuer: LocalIssuer) -> APIRouter:
    """The development sign-in: the demo users, a token for one, the issuer's keys."""
    router = APIRouter(prefix="/auth/dev", tags=["development sign-in"])

    @router.get("/users", summary="The demo users, one per role (development only)")
    def users() -> list[dict[str, Any]]:
        return [{"username": u.username, "name": u.name, "roles": list(u.roles), "team": u.team} for u in DEV_USERS]

    @router.post("/token", summary="A token for a demo user (development only)")
    def token(body: dict[str, str]) -> dict[str, Any]:
        try:
            user = dev_user(username=body.get("username"))
        except KeyError as error:
            raise HTTPException(422, [{"loc": ["body", "username"], "msg": str(error.args[0]),
                                       "type": "value_error"}]) from None
        return {"access_token": issuer.token(user), "token_type": "Bearer", "expires_in": 8 * 3600,
                "user": {"username": user.username, "name": user.name, "roles": list(user.roles), "team": user.team}}

    @router.get("/jwks.json", summary="The development issuer's public keys")
    def jwks() -> dict[str, Any]:
        return issuer.jwks()

    return router


def config_router(mode: str, issuer: str, client_id: str | None, *, roles_claim: str = "realm_access.roles",
                  team_claim: str = "team") -> APIRouter:
    """What the page needs to sign in (the development sign-in, or the provider's) and to
    show who signed in."""
    router = APIRouter(tags=["sign-in"])

    @router.get("/auth/config", summary="How to sign in here")
    def config() -> dict[str, Any]:
        return {"mode": mode, "issuer": issuer, "client_id": client_id, "roles_claim": roles_claim,
                "team_claim": team_claim}

    return router
