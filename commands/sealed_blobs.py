"""Attachments at rest: content-addressed, encrypted, and erased with their customer.

An uploaded file is encrypted as it streams in (Tink's streaming AEAD, AES-256-GCM-HKDF in
1 MiB segments, each authenticated before a byte of it is handed out) under a key of its
own, and kept under its content's SHA-256 (`<sha256>/<copy>/blob`). Its key is never
stored in clear:

* **uploaded, not yet referenced** (`<sha256>/<copy>/pending`): wrapped by the master key,
  since no complaint (and so no customer) exists yet;
* **referenced** by a complaint (its registration's `attachments`, or a value of an
  attachment field): `claim` wraps it under that complaint's customer's data key
  (`<sha256>/<copy>/owner-<data key id>`, see commands.personal_data) and drops the
  master-wrapped copy. Erasing the customer destroys their data key, so the file no longer
  opens anywhere: in the directory, in the bucket, or in a backup of either
  (crypto-shredding).

A claim takes only an upload waiting for a complaint (or a copy the customer has already):
never another customer's copy, so knowing a file's hash gives no access to it, and the
same file sent for two customers is kept twice, each copy erased with its own customer.
An upload of a file already waiting is kept once. The store learns nothing but the hash,
size and media type: file names are the customers' personal data and stay in the events,
sealed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import tink
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from tink import proto_keyset_format, secret_key_access, streaming_aead

from commands.blobs import BlobMissing, BlobStore
from commands.personal_data import KeyNotHere, Keyring

streaming_aead.register()
_TEMPLATE = streaming_aead.streaming_aead_key_templates.AES256_GCM_HKDF_1MB
CHUNK_BYTES = 64 * 1024
PENDING = "pending"
OWNER = "owner-"


class MediaTypeRefused(ValueError):
    def __init__(self, media_type: str, allowed: Sequence[str]) -> None:
        super().__init__(f"media type {media_type!r} is not accepted for attachments; accepted: {', '.join(allowed)}")
        self.media_type = media_type


class AttachmentTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the attachment is larger than {limit} bytes, the limit of this server"
                         " (COMPLAINTS_ATTACHMENT_MAX_BYTES)")
        self.limit = limit


class AttachmentErased(LookupError):
    """The customer the complaint belongs to was erased: the file no longer opens."""


class AttachmentNotStored(LookupError):
    """Referenced, but no copy of the file opens for this customer (never uploaded here)."""


@dataclass(frozen=True)
class StoredAttachment:
    sha256: str
    size: int
    media_type: str


class Receiving:
    """An upload in progress: `write` each chunk as it arrives (AttachmentTooLarge past the
    limit, and the block then leaves nothing behind)."""

    def __init__(self, stream: Any, limit: int) -> None:
        self._stream = stream
        self._hash = hashlib.sha256()
        self._limit = limit
        self.size = 0
        self.stored: StoredAttachment | None = None  # once received whole

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self._limit:
            raise AttachmentTooLarge(self._limit)
        self._hash.update(chunk)
        self._stream.write(chunk)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


class SealedBlobs:
    def __init__(self, store: BlobStore, keyring: Keyring, max_bytes: int, media_types: Sequence[str]) -> None:
        self.store = store
        self.keyring = keyring
        self.max_bytes = max_bytes
        self.media_types = tuple(media_types)
        self._master = AESGCM(keyring.master.key)

    # ------------------------------------------------------------------ uploads
    def accepted_media_type(self, declared: str | None) -> str:
        """The upload's media type (the Content-Type without parameters, lower case), if
        configured as accepted (`image/*` accepts every image type); MediaTypeRefused if not."""
        media_type = (declared or "").split(";")[0].strip().lower()
        major = media_type.split("/")[0]
        if media_type.count("/") != 1 or not any(
                allowed in (media_type, f"{major}/*", "*/*") for allowed in self.media_types):
            raise MediaTypeRefused(media_type or "(none)", self.media_types)
        return media_type

    @contextmanager
    def receiving(self, media_type: str) -> Iterator[Receiving]:
        """Encrypt what is written to the Receiving as it comes; when the block ends, the file
        is on record under its hash (the Receiving's `stored`), waiting for a complaint to claim it."""
        copy = uuid.uuid4().hex
        keyset = tink.new_keyset_handle(_TEMPLATE)
        with self.store.writing() as incoming:
            encrypting = keyset.primitive(streaming_aead.StreamingAead).new_encrypting_stream(
                incoming.file, _bound(copy))
            with encrypting:
                receiving = Receiving(encrypting, self.max_bytes)
                yield receiving
            sha256 = receiving.sha256
            stored = receiving.stored = StoredAttachment(sha256, receiving.size, media_type)
            existing = self._pending_copy(sha256)
            if existing is None:  # else uploaded already, and waiting for a complaint: kept once
                incoming.keep_as(f"{sha256}/{copy}/blob")
        if existing is None:
            self._wrap_pending(sha256, copy, proto_keyset_format.serialize(keyset, secret_key_access.TOKEN), stored)

    # ------------------------------------------------------------------ claims
    def claim(self, complaint_id: Any, sha256s: Iterable[str]) -> None:
        """Wrap the files a complaint references under its customer's data key, and drop
        their master-wrapped keys (a complaint without a customer key, or an erased one,
        claims nothing)."""
        subject = self.keyring.subject_of(complaint_id)
        key = self._open_key(subject[1]) if subject is not None else None
        if subject is not None and key is not None:
            for sha256 in set(sha256s):
                self._own(sha256, subject[1], key)

    def _own(self, sha256: str, key_id: str, key: AESGCM) -> str | None:
        """The copy of `sha256` the customer of `key_id` owns; an upload waiting for a
        complaint is made theirs. Never another customer's copy: knowing a file's hash
        gives no access to it."""
        if (owned := self._owned_copy(sha256, key_id)) is not None:
            return owned
        pending = self._pending_copy(sha256)
        if pending is None:
            return None
        copy, keyset, record = pending
        self.store.put(f"{sha256}/{copy}/{OWNER}{key_id}",
                       _record(_wrap(key, keyset, _bound(copy, key_id)), record["size"], record["media_type"]))
        self.store.delete(f"{sha256}/{copy}/{PENDING}")
        return copy

    def _owned_copy(self, sha256: str, key_id: str) -> str | None:
        return next((copy for copy, files in self._copies(sha256).items() if f"{OWNER}{key_id}" in files), None)

    # ------------------------------------------------------------------ downloads
    def opened(self, complaint_id: Any, sha256: str) -> tuple[StoredAttachment, Iterator[bytes]]:
        """The file as the complaint's customer's key opens it: what it is, and its bytes
        (streamed, each segment authenticated). AttachmentErased once the customer is erased
        (and the copies no key opens any more are deleted); AttachmentNotStored when no copy
        opens for this customer (or the complaint has no customer key: registered while
        personal data was not sealed)."""
        subject = self.keyring.subject_of(complaint_id)
        if subject is None:
            raise AttachmentNotStored(sha256)
        key = self._open_key(subject[1])
        if key is None:
            self._drop_unopenable(sha256)
            raise AttachmentErased(sha256)
        copy = self._own(sha256, subject[1], key)
        if copy is None:
            raise AttachmentNotStored(sha256)
        record = json.loads(self.store.get(f"{sha256}/{copy}/{OWNER}{subject[1]}"))
        keyset = _unwrap(key, record, _bound(copy, subject[1]))
        stored = StoredAttachment(sha256, record["size"], record["media_type"])
        return stored, self._decrypted(f"{sha256}/{copy}/blob", keyset, _bound(copy))

    def _decrypted(self, name: str, keyset: bytes, bound: bytes) -> Iterator[bytes]:
        primitive = proto_keyset_format.parse(keyset, secret_key_access.TOKEN).primitive(streaming_aead.StreamingAead)
        with self.store.reading(name) as source, primitive.new_decrypting_stream(source, bound) as plain:
            while chunk := plain.read(CHUNK_BYTES):
                yield chunk

    def _drop_unopenable(self, sha256: str) -> None:
        """Delete the keys of erased customers, and the copies no key opens any more."""
        for copy, files in self._copies(sha256).items():
            live = 0
            for file in files:
                try:
                    erased = file.startswith(OWNER) and self.keyring.open_key(file[len(OWNER):]) is None
                except KeyNotHere:  # another store's customer: not ours to judge
                    erased = False
                if erased:
                    self.store.delete(f"{sha256}/{copy}/{file}")
                elif file != "blob":
                    live += 1
            if not live:
                self.store.delete(f"{sha256}/{copy}/blob")

    # ------------------------------------------------------------------ keys
    def _open_key(self, key_id: str) -> AESGCM | None:
        try:
            return self.keyring.open_key(key_id)
        except KeyNotHere:
            return None

    def _copies(self, sha256: str) -> dict[str, list[str]]:
        copies: dict[str, list[str]] = {}
        for name in self.store.names(f"{sha256}/"):
            parts = name.split("/")
            if len(parts) == 3:
                copies.setdefault(parts[1], []).append(parts[2])
        return {copy: files for copy, files in copies.items() if "blob" in files}

    def _pending_copy(self, sha256: str) -> tuple[str, bytes, dict[str, Any]] | None:
        """A copy of `sha256` uploaded and waiting for a complaint: its id, its key (opened
        with the master key) and its key's record."""
        for copy, files in self._copies(sha256).items():
            if PENDING not in files:
                continue
            try:
                record = json.loads(self.store.get(f"{sha256}/{copy}/{PENDING}"))
                if record.get("master_key_id") != self.keyring.master.key_id:
                    continue  # wrapped under a master key since rotated: upload again
                return copy, _unwrap(self._master, record, _bound(copy, PENDING)), record
            except (BlobMissing, InvalidTag):  # claimed meanwhile, or not this master key's
                continue
        return None

    def _wrap_pending(self, sha256: str, copy: str, keyset: bytes, stored: StoredAttachment) -> None:
        self.store.put(f"{sha256}/{copy}/{PENDING}", _record(
            _wrap(self._master, keyset, _bound(copy, PENDING)), stored.size, stored.media_type,
            master_key_id=self.keyring.master.key_id, uploaded_at=datetime.now(UTC).isoformat()))


def _bound(copy: str, owner: str = "blob") -> bytes:
    """What a ciphertext is bound to (AEAD associated data): a wrapped key opens only as
    the key of its copy and owner, a blob only as its copy's."""
    return f"complaints attachment {copy} {owner}".encode()


def _wrap(key: AESGCM, keyset: bytes, bound: bytes) -> str:
    nonce = os.urandom(12)
    return base64.b64encode(nonce + key.encrypt(nonce, keyset, bound)).decode()


def _unwrap(key: AESGCM, record: dict[str, Any], bound: bytes) -> bytes:
    raw = base64.b64decode(record["wrapped"])
    return key.decrypt(raw[:12], raw[12:], bound)


def _record(wrapped: str, size: int, media_type: str, **more: str) -> bytes:
    """A wrapped key's file: the key, and what the store tells of the file (never its name)."""
    return json.dumps({"size": size, "media_type": media_type, "wrapped": wrapped, **more}).encode()
