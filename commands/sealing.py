"""Sealing secrets kept in the event store: AES-256-GCM under a master key.

Subscriptions' secrets (webhook signing keys, chat robots' signing secrets) are events'
fields, and events are forever: they are stored sealed, bound to their subscription (the
associated data), so a copied ciphertext does not open under another subscription. The
master key comes from the composition root (`COMPLAINTS_SECRETS_KEY`, a file made when
missing); the desk seals, the notifier unseals.
"""

from __future__ import annotations

import base64
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "aesgcm1:"


class SealBroken(ValueError):
    """A sealed secret that does not open: another master key, or altered."""


class Sealer:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError(f"the master key must be 32 bytes (AES-256), not {len(key)}")
        self._aead = AESGCM(key)

    def seal(self, plaintext: str, bound_to: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), bound_to.encode())
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def unseal(self, sealed: str, bound_to: str) -> str:
        if not sealed.startswith(PREFIX):
            raise SealBroken("not a sealed secret")
        raw = base64.urlsafe_b64decode(sealed[len(PREFIX):])
        try:
            return self._aead.decrypt(raw[:12], raw[12:], bound_to.encode()).decode()
        except InvalidTag:
            raise SealBroken("the secret does not open with this master key (COMPLAINTS_SECRETS_KEY)") from None


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
