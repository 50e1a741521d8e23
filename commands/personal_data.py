"""Customers' personal data, sealed per customer and erasable: crypto-shredding.

Each customer (the data subject, named by the CRM's pseudonymous id) gets a data key;
their complaints' personal fields are stored sealed under it (AES-256-GCM, bound to the
complaint and the event's version). The data keys are kept wrapped by the master key in
their own table in the event store's database, never on the bus or in a read model.
Erasing a customer destroys their keys: every copy of the sealed fields, wherever it went
(the store, Kafka, read nodes, dead letters, backups), no longer opens.

A key's row stays after erasure (without the key) so a second erasure is recognised and a
new complaint from the same customer gets a new key. Master keys are named by a
fingerprint; `rotate` re-wraps every live data key under the current master key without
touching an event.

Processes keep opened data keys in memory for `KEY_TTL_SECONDS`: a customer erased by
another process is unreadable everywhere within that time.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SEALED_PREFIX = "pd1:"
KEY_TTL_SECONDS = 5.0
KEYS_TABLE = "personal_data_keys"
COMPLAINTS_TABLE = "personal_data_complaints"


class MasterKeyError(RuntimeError):
    """The master key is missing, or not the one the data keys are wrapped under."""


class KeyNotHere(LookupError):
    """A sealed field whose data key this keyring does not hold (another store): it stays
    sealed, never reads as erased."""


class UnknownCustomer(LookupError):
    """No complaint of this customer was ever stored (HTTP 404)."""

    def __init__(self, customer_id: str) -> None:
        super().__init__(f"no complaint of customer {customer_id!r} is on record")
        self.customer_id = customer_id


@dataclass(frozen=True)
class MasterKey:
    key: bytes

    def __post_init__(self) -> None:
        if len(self.key) != 32:
            raise MasterKeyError(f"a master key is 32 bytes (AES-256), not {len(self.key)}")

    @property
    def key_id(self) -> str:
        """Its fingerprint: names it in the keys' rows without revealing it."""
        return hashlib.sha256(b"complaints master key\0" + self.key).hexdigest()[:16]


@dataclass(frozen=True)
class Erasure:
    customer_id: str
    complaint_ids: list[UUID]
    erased_at: datetime
    legal_basis: str
    first_time: bool


class Keyring:
    """The customers' data keys, in `personal_data_keys` beside the event store's tables.

    `transaction(commit)` is the event store's own (eventsourcing's SQLite or PostgreSQL
    datastore); `placeholder` its parameter style; `schema` qualifies the tables on
    PostgreSQL.
    """

    def __init__(self, transaction: Callable[..., Any], *, postgres: bool, schema: str = "",
                 master: MasterKey, retired: Sequence[MasterKey] = (),
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._transaction = transaction
        self._p = "%s" if postgres else "?"
        prefix = f'"{schema}".' if postgres and schema else ""
        self._keys, self._complaints = prefix + KEYS_TABLE, prefix + COMPLAINTS_TABLE
        self.master = master
        self._masters = {m.key_id: m for m in (master, *retired)}
        self._wrapping = {key_id: AESGCM(m.key) for key_id, m in self._masters.items()}
        self.clock = clock
        self._opened: dict[str, tuple[float, AESGCM | None]] = {}
        self._subjects: dict[str, tuple[str, str]] = {}  # complaint id -> (customer id, key id)
        self._live: dict[str, tuple[float, str, AESGCM]] = {}  # customer id -> (when, key id, key)
        self._local = threading.local()  # the rows to write with the events being stored
        self._lock = threading.Lock()
        self._create_tables(postgres)

    # ------------------------------------------------------------------ schema and checks
    def _create_tables(self, postgres: bool) -> None:
        blob = "BYTEA" if postgres else "BLOB"
        with self._cursor(commit=True) as cursor:
            cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {self._keys} (key_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL,"
                f" wrapped {blob}, master_key_id TEXT, created_at TEXT NOT NULL, erased_at TEXT,"
                " erased_by TEXT, legal_basis TEXT)")
            cursor.execute(f"CREATE INDEX IF NOT EXISTS personal_data_keys_customer ON {self._keys} (customer_id)")
            cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {self._complaints} (complaint_id TEXT PRIMARY KEY,"
                " customer_id TEXT NOT NULL, key_id TEXT NOT NULL)")
            cursor.execute(
                f"CREATE INDEX IF NOT EXISTS personal_data_complaints_customer ON {self._complaints} (customer_id)")

    def check_master_key(self) -> int:
        """The number of live data keys, after checking the master key opens one of each
        master key id on record; a clear refusal otherwise (never garbage later)."""
        with self._cursor() as cursor:
            cursor.execute(f"SELECT master_key_id, min(key_id) AS key_id, count(*) AS n FROM {self._keys}"
                           " WHERE wrapped IS NOT NULL GROUP BY master_key_id")
            groups = [(row["master_key_id"], row["key_id"], row["n"]) for row in cursor.fetchall()]
        for master_key_id, key_id, count in groups:
            if master_key_id not in self._masters:
                raise MasterKeyError(
                    f"{count} customers' data keys are wrapped under master key {master_key_id}, and the configured"
                    f" master key is {self.master.key_id}: configure the right key file (COMPLAINTS_MASTER_KEY), or"
                    " the old one as COMPLAINTS_RETIRED_MASTER_KEYS and run `complaints personal-data rotate`")
            self._open(key_id)
        return sum(count for _, _, count in groups)

    # ------------------------------------------------------------------ keys
    def key_for(self, complaint_id: UUID, customer_id: str) -> tuple[str, AESGCM]:
        """The key a new complaint's personal data is sealed with: the customer's live key,
        or a new one if they have none.

        What this records (a new key's row, the complaint's row) is written with the event,
        in its transaction (`write_pending`, called by the recorder): a registration costs
        no commit of its own, and a registration that is not stored leaves no row. A
        registration racing its customer's erasure may be sealed under the key just
        destroyed: it reads erased, as if it came first (run the erasure again to record it
        there too)."""
        # A registration is a complaint's first event: were this complaint on record, its
        # registration would fail to store (and these rows with it).
        p = self._p
        remembered = self._live.get(customer_id)
        if remembered is not None and time.monotonic() - remembered[0] < KEY_TTL_SECONDS:
            key_id, key = remembered[1], remembered[2]
        else:
            with self._cursor() as cursor:
                cursor.execute(f"SELECT min(key_id) AS key_id FROM {self._keys} WHERE customer_id = {p}"
                               " AND wrapped IS NOT NULL", (customer_id,))
                row = cursor.fetchone()
            if row is not None and row["key_id"] is not None:
                key_id = row["key_id"]
                key = self.open_key(key_id)
                if key is None:  # erased since it was read
                    return self.key_for(complaint_id, customer_id)
            else:
                key_id, raw = uuid.uuid4().hex, AESGCM.generate_key(256)
                key = AESGCM(raw)
                self._pending().append((
                    f"INSERT INTO {self._keys} (key_id, customer_id, wrapped, master_key_id, created_at)"
                    f" VALUES ({p}, {p}, {p}, {p}, {p})",
                    (key_id, customer_id, self._wrap(key_id, raw), self.master.key_id, self.clock().isoformat())))
        self._pending().append((
            f"INSERT INTO {self._complaints} (complaint_id, customer_id, key_id) VALUES ({p}, {p}, {p})"
            " ON CONFLICT (complaint_id) DO NOTHING", (str(complaint_id), customer_id, key_id)))
        self._remember(complaint_id, customer_id, key_id, key)
        return key_id, key

    def _pending(self) -> list[tuple[str, tuple[Any, ...]]]:
        pending: list[tuple[str, tuple[Any, ...]]] | None = getattr(self._local, "pending", None)
        if pending is None:
            pending = self._local.pending = []
        return pending

    def write_pending(self, cursor: Any) -> None:
        """Write the rows `key_for` recorded in this thread, with `cursor` (the event store's,
        in the transaction that stores the events sealed under them)."""
        pending = self._pending()
        for statement, params in pending:
            cursor.execute(statement, params)
        pending.clear()

    def forget(self, complaint_ids: Iterable[Any]) -> None:
        """Drop what this thread recorded for events that were not stored."""
        self._pending().clear()
        with self._lock:
            for complaint_id in complaint_ids:
                self._subjects.pop(str(complaint_id), None)

    def _remember(self, complaint_id: UUID, customer_id: str, key_id: str, key: AESGCM | None) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._opened) > 100_000:
                self._opened.clear()
                self._live.clear()
            if len(self._subjects) > 200_000:
                self._subjects.clear()
            self._opened[key_id] = (now, key)
            self._subjects[str(complaint_id)] = (customer_id, key_id)
            if key is not None:
                self._live[customer_id] = (now, key_id, key)

    def subject_of(self, complaint_id: UUID | str) -> tuple[str, str] | None:
        """(customer id, key id) of a complaint on record."""
        complaint_id = str(complaint_id)
        if complaint_id in self._subjects:
            return self._subjects[complaint_id]
        with self._cursor() as cursor:
            cursor.execute(f"SELECT customer_id, key_id FROM {self._complaints} WHERE complaint_id = {self._p}",
                           (complaint_id,))
            row = cursor.fetchone()
        if row is None:
            return None
        with self._lock:
            if len(self._subjects) > 200_000:
                self._subjects.clear()
            found = self._subjects[complaint_id] = (row["customer_id"], row["key_id"])
        return found

    def open_key(self, key_id: str) -> AESGCM | None:
        """The data key (None once erased; KeyNotHere if never here), from memory for up to
        KEY_TTL_SECONDS."""
        now = time.monotonic()
        known = self._opened.get(key_id)
        if known is not None and now - known[0] < KEY_TTL_SECONDS:
            return known[1]
        key = self._open(key_id)
        with self._lock:
            if len(self._opened) > 100_000:
                self._opened.clear()
            self._opened[key_id] = (now, key)
        return key

    def _open(self, key_id: str) -> AESGCM | None:
        with self._cursor() as cursor:
            cursor.execute(f"SELECT wrapped, master_key_id FROM {self._keys} WHERE key_id = {self._p}", (key_id,))
            row = cursor.fetchone()
        if row is None:
            raise KeyNotHere(f"no data key {key_id} in this event store")
        return self._unwrap(key_id, row["wrapped"], row["master_key_id"])

    def _unwrap(self, key_id: str, wrapped: Any, master_key_id: str | None) -> AESGCM | None:
        """The data key of a row (None: erased)."""
        return None if wrapped is None else AESGCM(self._raw_key(key_id, wrapped, master_key_id))

    def _raw_key(self, key_id: str, wrapped: Any, master_key_id: str | None) -> bytes:
        master = self._masters.get(master_key_id or "")
        if master is None:
            raise MasterKeyError(f"data key {key_id} is wrapped under master key {master_key_id}, which is"
                                 f" not configured (the configured one is {self.master.key_id})")
        wrapped = bytes(wrapped)
        try:
            return self._wrapping[master.key_id].decrypt(wrapped[:12], wrapped[12:], key_id.encode())
        except InvalidTag:
            raise MasterKeyError(f"master key {master.key_id} does not open data key {key_id}: the key file holds"
                                 " another key than its fingerprint says, or the row was altered") from None

    def _wrap(self, key_id: str, data_key: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._wrapping[self.master.key_id].encrypt(nonce, data_key, key_id.encode())

    # ------------------------------------------------------------------ erasure and rotation
    def complaints_of(self, customer_id: str) -> list[UUID]:
        with self._cursor() as cursor:
            cursor.execute(f"SELECT complaint_id FROM {self._complaints} WHERE customer_id = {self._p}"
                           " ORDER BY complaint_id", (customer_id,))
            return [UUID(row["complaint_id"]) for row in cursor.fetchall()]

    def erase(self, customer_id: str, legal_basis: str, erased_by: str) -> Erasure:
        """Destroy the customer's data keys (UnknownCustomer if they have none on record).
        Erasing again changes nothing and answers with the first erasure's record."""
        at = self.clock()
        with self._cursor(commit=True) as cursor:
            # Written first, for SQLite's lock (see key_for): the live keys, erased now.
            cursor.execute(f"UPDATE {self._keys} SET wrapped = NULL, master_key_id = NULL, erased_at = {self._p},"
                           f" erased_by = {self._p}, legal_basis = {self._p}"
                           f" WHERE customer_id = {self._p} AND wrapped IS NOT NULL RETURNING key_id",
                           (at.isoformat(), erased_by, legal_basis, customer_id))
            live = [row["key_id"] for row in cursor.fetchall()]
            cursor.execute(f"SELECT key_id, erased_at, legal_basis FROM {self._keys} WHERE customer_id = {self._p}",
                           (customer_id,))
            rows = cursor.fetchall()
            if not rows:
                raise UnknownCustomer(customer_id)
        with self._lock:
            for key_id in live:
                self._opened[key_id] = (time.monotonic(), None)
            self._live.pop(customer_id, None)
        if not live:
            first = min((row for row in rows if row["erased_at"]), key=lambda row: row["erased_at"])
            at, legal_basis = datetime.fromisoformat(first["erased_at"]), first["legal_basis"]
        return Erasure(customer_id, self.complaints_of(customer_id), at, legal_basis, first_time=bool(live))

    def rotate(self) -> int:
        """Re-wrap every live data key under the current master key; the number re-wrapped."""
        with self._cursor() as cursor:
            cursor.execute(f"SELECT key_id, wrapped, master_key_id FROM {self._keys}"
                           f" WHERE wrapped IS NOT NULL AND master_key_id <> {self._p}", (self.master.key_id,))
            stale = cursor.fetchall()
        for row in stale:
            raw = self._raw_key(row["key_id"], row["wrapped"], row["master_key_id"])
            with self._cursor(commit=True) as cursor:
                cursor.execute(f"UPDATE {self._keys} SET wrapped = {self._p}, master_key_id = {self._p}"
                               f" WHERE key_id = {self._p} AND wrapped IS NOT NULL",
                               (self._wrap(row["key_id"], raw), self.master.key_id, row["key_id"]))
        return len(stale)

    @contextmanager
    def _cursor(self, commit: bool = False) -> Iterator[Any]:
        with self._transaction(commit=commit) as cursor:
            yield cursor

    # ------------------------------------------------------------------ sealing
    def seal(self, key_id: str, key: AESGCM, fields: dict[str, Any], complaint_id: UUID, version: int) -> str:
        nonce = os.urandom(12)
        plain = json.dumps(fields, ensure_ascii=False, separators=(",", ":"), default=str).encode()
        sealed = key.encrypt(nonce, plain, _bound(complaint_id, version))
        return f"{SEALED_PREFIX}{key_id}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, sealed: str, complaint_id: UUID | str, version: int) -> dict[str, Any] | None:
        """The fields sealed in an event, or None when their customer was erased (KeyNotHere
        when this store never held the key)."""
        if not sealed.startswith(SEALED_PREFIX):
            raise ValueError("not sealed personal data")
        key_id, _, text = sealed[len(SEALED_PREFIX):].partition(":")
        key = self.open_key(key_id)
        if key is None:
            return None
        raw = base64.b64decode(text)
        try:
            fields: dict[str, Any] = json.loads(key.decrypt(raw[:12], raw[12:], _bound(complaint_id, version)))
        except InvalidTag:
            raise ValueError(f"the personal data of {complaint_id} version {version} does not open with its"
                             " customer's key: it was altered or copied from another event") from None
        return fields


def _bound(complaint_id: UUID | str, version: int) -> bytes:
    return f"{complaint_id}:{version}".encode()
