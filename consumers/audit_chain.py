"""Verifying the audit trail: every stored event's chain link, the global chain over the
notification log, and the signed checkpoints of that global chain.

The per-aggregate chain (`commands.event_chain`) makes an edit, a removal, a swap or an
insertion inside an aggregate's history break a link that names the event. What it cannot
show alone is an aggregate's tail cut off, a whole aggregate removed, or the log's own tail
truncated: for those there is the global chain over the log, in position order,

    g_0 = 32 zero bytes
    g_n = SHA-256(g_(n-1) || position (8 bytes, big endian) || element)

where the element of an event is its link (or, for an event without one, from before the
chain, the SHA-256 of its stored state), and the checkpoints `consumers.checkpoints` signs
(Ed25519) every so many events: (position, g at that position, events counted). A
checkpoint kept where the database's users cannot reach pins everything up to its position.

`verify(rows, key, checkpoints, public_key)` walks the log once, in order, and reports the
first broken link; `links_of(recorder, key, complaint_id)` lists one aggregate's links for
the read API's audit view. Reading the rows (`log_rows`, over `NotificationRows`' plain
tuples) and one HMAC and one SHA-256 per event are the whole cost: see
bench/audit_verify.py.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from binascii import hexlify
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, islice
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from commands.event_chain import GENESIS, SUFFIX_BYTES, link, split
from consumers.stored_events import NotificationRows, Row

_PREFIX = b',"chain":"'
_QUOTE_BRACE = b'"}'
_HEX = frozenset(b"0123456789abcdef")
_HEX64 = re.compile(rb"[0-9a-f]{64}")
_VERSIONS = [v.to_bytes(8, "big") for v in range(1024)]
# After a break, how many more rows are read to explain it (the aggregate's next events).
LOOKAHEAD_ROWS = 50_000


# ---------------------------------------------------------------------------- checkpoints
def key_id(public_key: Ed25519PublicKey) -> str:
    """A public key's short name: the first 16 hex digits of SHA-256 of its raw bytes."""
    return hashlib.sha256(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:16]


def checkpoint_message(checkpoint: Mapping[str, Any]) -> bytes:
    """The bytes a checkpoint's signature covers (every member but the signature)."""
    return ("complaints audit checkpoint v1\n%d\n%s\n%d\n%s\n%s" % (
        int(checkpoint["position"]), checkpoint["global_hash"], int(checkpoint["events"]),
        checkpoint["signed_at"], checkpoint["key_id"])).encode()


def global_element(state: bytes) -> bytes:
    """What the global chain takes of a stored state: its link (as `split` reads it), else
    the state's SHA-256 (an event from before the chain)."""
    if state[-76:-66] == _PREFIX and state[-2:] == _QUOTE_BRACE:
        digits = state[-66:-2]
        if _HEX64.fullmatch(digits):
            return bytes.fromhex(digits.decode())
    return hashlib.sha256(state).digest()


def global_step(previous: bytes, position: int, element: bytes) -> bytes:
    return hashlib.sha256(previous + position.to_bytes(8, "big") + element).digest()


def public_keys(keys: Ed25519PublicKey | Iterable[Ed25519PublicKey] | None) -> dict[str, Ed25519PublicKey]:
    if keys is None:
        return {}
    if isinstance(keys, Ed25519PublicKey):
        keys = [keys]
    return {key_id(k): k for k in keys}


# ---------------------------------------------------------------------------- the report
@dataclass
class Break:
    """The first place the trail does not hold."""

    position: int | None
    aggregate_id: Any  # a UUID; None for a checkpoint's break
    version: int | None
    topic: str | None
    problem: str

    def where(self) -> str:
        if self.aggregate_id is None:
            return f"position {self.position}"
        at = f"position {self.position}: " if self.position is not None else ""
        kind = (self.topic or "").rpartition(":")[2] or "event"
        return f"{at}aggregate {self.aggregate_id} version {self.version} ({kind})"

    def __str__(self) -> str:
        return f"{self.where()}: {self.problem}"


@dataclass
class Report:
    events: int = 0
    aggregates: int = 0
    chained: int = 0
    unchained: int = 0  # from before the chain existed (not checkable, not broken)
    last_position: int | None = None
    global_hash: bytes = GENESIS  # g at last_position
    checkpoints: int = 0  # signed checkpoints that held
    last_checkpoint: Mapping[str, Any] | None = None
    signatures_checked: bool = False
    broken: Break | None = None
    complaint: Any = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.broken is None

    def summary(self) -> str:
        what = f"aggregate {self.complaint}" if self.complaint is not None else "the event log"
        counted = (f"{self.events:,} events ({self.chained:,} chained, {self.unchained:,} from before the chain)"
                   + ("" if self.complaint is not None else f" of {self.aggregates:,} aggregates"))
        if self.broken is not None:
            return f"BROKEN: {what}: {self.broken}\n(held before it: {counted})"
        if self.last_position is not None:
            counted += f" up to position {self.last_position}"
        lines = [f"intact: {what}: {counted}"]
        if self.complaint is None:
            lines.append(f"global chain: {self.global_hash.hex()}")
        if self.last_checkpoint is not None:
            lines.append(f"{self.checkpoints} signed checkpoint(s) hold, the last at position "
                         f"{self.last_checkpoint['position']} (signed {self.last_checkpoint['signed_at']})"
                         + ("" if self.signatures_checked else "; signatures NOT checked (no public key)"))
        lines.extend(self.notes)
        return "\n".join(lines)


# ---------------------------------------------------------------------------- reading
def log_rows(recorder: Any, after: int = 0, batch: int = 20_000,
             on_batch: Callable[[int], None] | None = None) -> Iterator[Row]:
    """Every notification after `after`, in order, as plain tuples (position, originator id,
    version, topic, state); `on_batch(rows)` after each batch read (a progress bar)."""
    read: Callable[[int, int], Sequence[Row]] = NotificationRows(recorder)

    def batches(after: int) -> Iterator[Sequence[Row]]:
        while rows := read(after, batch):
            if on_batch is not None:
                on_batch(len(rows))
            yield rows
            after = rows[-1][0]

    return chain.from_iterable(batches(after))  # rows handed on in C, not by a generator's frame


def aggregate_rows(recorder: Any, aggregate_id: UUID) -> list[tuple[int | None, Any, int, str, bytes]]:
    """One aggregate's events in version order, with their positions where the store says
    (SQLite's rowid, PostgreSQL's notification_id), else `select_events`' without."""
    from eventsourcing.postgres import PostgresApplicationRecorder
    from eventsourcing.sqlite import SQLiteApplicationRecorder

    if isinstance(recorder, SQLiteApplicationRecorder):
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(f"SELECT rowid, originator_id, originator_version, topic, state FROM "
                           f"{recorder.events_table_name} WHERE originator_id=? ORDER BY originator_version",
                           (aggregate_id.hex,))
            return [(r[0], r[1], r[2], r[3], bytes(r[4])) for r in cursor.fetchall()]
    if isinstance(recorder, PostgresApplicationRecorder):
        from psycopg.sql import SQL, Identifier

        statement = SQL("SELECT notification_id, originator_id, originator_version, topic, state FROM {}.{} "
                        "WHERE originator_id = %s ORDER BY originator_version").format(
            Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
        with recorder.datastore.get_connection() as conn, conn.cursor() as cursor:
            cursor.execute(statement, (aggregate_id,))
            return [(r["notification_id"], r["originator_id"], r["originator_version"], r["topic"],
                     bytes(r["state"])) for r in cursor.fetchall()]
    return [(None, e.originator_id, e.originator_version, e.topic, bytes(e.state))
            for e in recorder.select_events(aggregate_id)]


def _id_bytes(originator_id: Any) -> bytes:
    if isinstance(originator_id, UUID):
        return originator_id.bytes
    text = str(originator_id)
    if len(text) == 32:  # SQLite's column: the UUID's hex
        return bytes.fromhex(text)
    return UUID(text).bytes


def _as_uuid(originator_id: Any) -> Any:
    try:
        return originator_id if isinstance(originator_id, UUID) else UUID(str(originator_id))
    except ValueError:
        return originator_id


def _damaged(state: bytes) -> bool:
    """Whether a state without a link looks like one whose link was damaged (a byte or two
    of its `,"chain":"<64 hex>"}` suffix changed), rather than an event from before the chain."""
    tail = state[-SUFFIX_BYTES:]
    if len(tail) < SUFFIX_BYTES:
        return False
    if b'"chain":' in state[-SUFFIX_BYTES - 16:]:
        return True
    bad = sum(a != b for a, b in zip(tail[:10], _PREFIX)) + sum(c not in _HEX for c in tail[10:74])
    bad += (tail[74] != 0x22) + (tail[75] != 0x7D)
    return bad <= 2


# ---------------------------------------------------------------------------- one event
class _Chains:
    """The walk's state: per aggregate (by stored originator id) its last version, its last
    link (None: unchained so far) and its id's 16 bytes."""

    def __init__(self, key: bytes, whole_log: bool) -> None:
        self.key = key
        self.whole_log = whole_log
        self.last: dict[Any, tuple[int, bytes | None, bytes]] = {}
        self.chain_began: int | None = None  # position of the log's first chained event
        self.chained = 0
        self.unchained = 0

    def check(self, position: int | None, originator_id: Any, version: int, topic: str,
              state: bytes) -> str | None:
        """The problem of this event, or None (and the aggregate's chain moves on)."""
        known = self.last.get(originator_id)
        if known is None:
            previous_version, previous_link, id_bytes = 0, None, _id_bytes(originator_id)
        else:
            previous_version, previous_link, id_bytes = known
        if version != previous_version + 1:
            if version <= previous_version:
                return f"versions out of order: version {version} follows version {previous_version}"
            missing = previous_version + 1
            if known is None:
                return (f"version {missing}{'' if version == 2 else f' to {version - 1}'} missing: the aggregate's"
                        f" first event is version {version}")
            return f"version {missing} missing: {version} follows {previous_version}"
        body, stored = split(state)
        if stored is None:
            if previous_link is not None:
                return f"no chain link, after a chained version {previous_version}"
            if self.whole_log and self.chain_began is not None:
                return (f"no chain link, although the chain began before it (position {self.chain_began} is"
                        " the first chained event): every later event is chained")
            if _damaged(state):
                return "its chain link is damaged (the stored state's end is not ,\"chain\":\"<64 hex>\"})"
            self.unchained += 1
            self.last[originator_id] = (version, None, id_bytes)
            return None
        expected = link(self.key, previous_link or GENESIS, UUID(bytes=id_bytes), version, topic, body)
        if not hmac.compare_digest(expected, stored):
            return "link mismatch"  # explained by `_explain`
        self.chained += 1
        if self.chain_began is None:
            self.chain_began = position
        self.last[originator_id] = (version, stored, id_bytes)
        return None

    def links_hold_as(self, previous: bytes | None, originator_id: Any, version: int, topic: str,
                      state: bytes) -> bool:
        body, stored = split(state)
        if stored is None:
            return False
        return hmac.compare_digest(
            link(self.key, previous or GENESIS, UUID(bytes=_id_bytes(originator_id)), version, topic, body), stored)


def _explain(chains: _Chains, broken: Break, originator_id: Any, state: bytes,
             following: Sequence[tuple[int | None, Any, int, str, bytes]]) -> str:
    """A link mismatch or a gap, explained by what follows (the same aggregate's next events,
    read ahead) and by the links known so far."""
    known = chains.last.get(originator_id)
    previous_version, previous_link = (known[0], known[1]) if known else (0, None)
    version = broken.version or 0
    if broken.problem.startswith("version") and "missing" in broken.problem:
        missing = previous_version + 1
        for position, _, later_version, _, _ in following:
            if later_version == missing:
                return (f"versions out of order: version {version} is stored before version {missing}"
                        f" (at position {position}): the events were reordered")
        return broken.problem + " (an event was deleted)"
    if broken.problem != "link mismatch":
        return broken.problem
    _, stored = split(state)
    assert stored is not None
    nxt = next((row for row in following if row[2] == version + 1), None)
    if nxt is not None:
        if any(chains.links_hold_as(previous_link, originator_id, version, topic, nxt[4])
               for topic in {broken.topic or "", nxt[3]}):  # states swapped, or whole rows (topics too)
            return (f"link mismatch: the stored states of versions {version} and {version + 1} are swapped"
                    f" (the state at version {version + 1}, position {nxt[0]}, is version {version}'s)")
        if chains.links_hold_as(stored, originator_id, version + 1, nxt[3], nxt[4]):
            return ("link mismatch: its stored bytes were changed (the link is the original one: version"
                    f" {version + 1} links to it)")
    for other_id, (other_version, other_link, _) in chains.last.items():
        if other_link is not None and hmac.compare_digest(other_link, stored):
            return (f"link mismatch: its link is copied from aggregate {_as_uuid(other_id)} version {other_version}"
                    " (an inserted or replaced event)")
    if nxt is not None:
        return (f"link mismatch: the link was replaced (version {version + 1} does not link to it): a forged"
                " link, made without the chain key, or an event inserted or replaced")
    return ("link mismatch: its stored bytes or its link were changed, or it was inserted with a forged link"
            " (made without the chain key)")


# ---------------------------------------------------------------------------- the walk
def verify(rows: Iterable[Row] | Any, key: bytes, checkpoints: Iterable[Mapping[str, Any]] = (),
           public_key: Ed25519PublicKey | Iterable[Ed25519PublicKey] | None = None,
           complaint: UUID | str | None = None) -> Report:
    """Walk the notification log (`rows`, in position order, e.g. `log_rows(recorder)`) and
    report the first break: a link that does not hold (a changed byte, a swap, an insertion
    with a forged or copied link), a missing or misplaced version, an event without a link
    after chained ones, the global chain differing from a signed checkpoint, or the log
    ending before a checkpoint's position (a truncated tail).

    With `complaint`, only that aggregate's chain is checked: `rows` may then be the
    recorder itself (its events are read by id) or rows to filter; checkpoints do not apply.
    Checkpoints' signatures are checked with `public_key` (one or several); without one,
    only their global hashes are.
    """
    report = Report()
    if complaint is not None:
        return _verify_one(rows, key, _as_uuid(complaint), report)
    chains = _Chains(key, whole_log=True)
    keys = public_keys(public_key)
    report.signatures_checked = bool(keys)
    ordered: list[Mapping[str, Any]] = []
    for checkpoint in sorted(checkpoints, key=lambda c: int(c["position"])):
        problem = _checkpoint_problem(checkpoint, keys)
        if problem is not None:
            report.broken = Break(int(checkpoint["position"]), None, None, None, problem)
            return report
        if ordered and int(ordered[-1]["position"]) == int(checkpoint["position"]):
            if ordered[-1]["global_hash"] != checkpoint["global_hash"]:
                report.broken = Break(int(checkpoint["position"]), None, None, None,
                                      "two signed checkpoints of this position disagree")
                return report
            continue
        ordered.append(checkpoint)
    pending = iter(ordered)
    checkpoint = next(pending, None)
    checkpoint_at = int(checkpoint["position"]) if checkpoint is not None else 1 << 63
    held_at = 0  # the position of the last checkpoint that held
    inner, outer = _hmac_pads(key)
    sha256, last, unhex = hashlib.sha256, chains.last, hexlify
    topics: dict[str, bytes] = {}
    g, events, position, fast = GENESIS, 0, 0, 0
    began = False  # whether the chain began (chains.chain_began set)
    id_bytes, join, versions = _id_bytes, b"".join, _VERSIONS
    rows = iter(rows)
    for row in rows:
        position, originator_id, version, topic, state = row
        if position > checkpoint_at:  # past a checkpoint without meeting its position
            assert checkpoint is not None
            report.broken = Break(checkpoint_at, None, None, None, _checkpoint_mismatch(
                checkpoint, g, events, held_at, f"the event at position {checkpoint_at} it ends with is missing"))
            break
        known = last.get(originator_id)
        # The common cases, inline: a chained aggregate's next version, or a new aggregate's
        # first, its link holding (anything else takes `chains.check`, which explains).
        if known is not None:
            previous, ident = known[1], known[2]
            inline = previous is not None and known[0] == version - 1
        else:
            previous, ident, inline = GENESIS, None, version == 1
        if inline:
            if ident is None:
                ident = id_bytes(originator_id)
            tz = topics.get(topic)
            if tz is None:
                tz = topics[topic] = topic.encode() + b"\0"
            # HMAC-SHA256 (RFC 2104) from the key's pads hashed once: hmac.digest costs three
            # times as much here (OpenSSL 3 looks the digest up on every call).
            h = inner()
            h.update(join((previous, ident, versions[version] if version < 1024 else version.to_bytes(8, "big"), tz,
                           state[:-76], b"}")))
            o = outer()
            o.update(h.digest())
            d = o.digest()
            # Every byte of the suffix too: `,"chain":"` + the link's hex + `"}`.
            if state[-76:] == join((_PREFIX, unhex(d), _QUOTE_BRACE)):
                last[originator_id] = (version, d, ident)
                fast += 1
                if not began:
                    began, chains.chain_began = True, position
                g = sha256(g + position.to_bytes(8, "big") + d).digest()
                events += 1
                if position == checkpoint_at:
                    assert checkpoint is not None
                    if g.hex() != checkpoint["global_hash"] or events != int(checkpoint["events"]):
                        report.broken = Break(position, None, None, None,
                                              _checkpoint_mismatch(checkpoint, g, events, held_at))
                        break
                    report.checkpoints += 1
                    report.last_checkpoint, held_at = checkpoint, position
                    checkpoint = next(pending, None)
                    checkpoint_at = int(checkpoint["position"]) if checkpoint is not None else 1 << 63
                continue
        if type(state) is not bytes:
            state = bytes(state)
        problem = chains.check(position, originator_id, version, topic, state)
        if problem is not None:
            report.broken = Break(position, _as_uuid(originator_id), version, topic, problem)
            following = [r for r in islice(rows, LOOKAHEAD_ROWS) if r[1] == originator_id][:2]
            report.broken.problem = _explain(chains, report.broken, originator_id, state, following)
            break
        began = chains.chain_began is not None
        g = global_step(g, position, global_element(state))
        events += 1
        if position == checkpoint_at:
            assert checkpoint is not None
            if g.hex() != checkpoint["global_hash"] or events != int(checkpoint["events"]):
                report.broken = Break(position, None, None, None, _checkpoint_mismatch(checkpoint, g, events, held_at))
                break
            report.checkpoints += 1
            report.last_checkpoint, held_at = checkpoint, position
            checkpoint = next(pending, None)
            checkpoint_at = int(checkpoint["position"]) if checkpoint is not None else 1 << 63
    report.events, report.aggregates = events, len(last)
    report.chained, report.unchained = chains.chained + fast, chains.unchained
    report.last_position, report.global_hash = (position or None), g
    if report.broken is None and checkpoint is not None:
        report.broken = Break(checkpoint_at, None, None, None, (
            f"the log ends at position {position} ({events:,} events), before the signed checkpoint at position"
            f" {checkpoint_at} ({int(checkpoint['events']):,} events, signed {checkpoint['signed_at']}): its tail"
            " was truncated"))
    if report.broken is None and not ordered:
        report.notes.append("no signed checkpoints given: events removed from the end of the log or of an"
                            " aggregate's chain would not show")
    return report


def _hmac_pads(key: bytes) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """`copy` of SHA-256 objects that have hashed the key's inner and outer pads (HMAC's
    first blocks), checked against hmac.digest."""
    block = (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
    h = inner.copy()
    h.update(b"check")
    o = outer.copy()
    o.update(h.digest())
    assert o.digest() == hmac.digest(key, b"check", "sha256")
    return inner.copy, outer.copy


def _checkpoint_problem(checkpoint: Mapping[str, Any], keys: Mapping[str, Ed25519PublicKey]) -> str | None:
    try:
        message = checkpoint_message(checkpoint)
        signature = bytes.fromhex(checkpoint["signature"])
    except (KeyError, ValueError, TypeError) as error:
        return f"a malformed checkpoint ({type(error).__name__}: {error})"
    if not keys:
        return None
    public_key = keys.get(checkpoint["key_id"])
    if public_key is None:
        return (f"the checkpoint is signed by key {checkpoint['key_id']}, not by the given public key(s)"
                f" {', '.join(keys)}")
    try:
        public_key.verify(signature, message)
    except InvalidSignature:
        return f"the checkpoint's signature does not verify (key {checkpoint['key_id']}): the checkpoint was altered"
    return None


def _checkpoint_mismatch(checkpoint: Mapping[str, Any], g: bytes, events: int, held_at: int,
                         why: str | None = None) -> str:
    signed = int(checkpoint["events"])
    count = (f"{signed - events:,} fewer events than it counts" if events < signed else
             f"{events - signed:,} more events than it counts" if events > signed else "as many events as it counts")
    since = f"after position {held_at} (the last checkpoint that held)" if held_at else "from the start"
    return ((why + "; " if why else "") + f"the log up to position {checkpoint['position']} does not hash to the"
            f" checkpoint signed {checkpoint['signed_at']} ({count}): an event {since} up to this position was"
            " removed, added or changed since it was signed")


def _verify_one(source: Any, key: bytes, complaint: Any, report: Report) -> Report:
    """One aggregate's chain, read by id (or filtered from `source`'s rows)."""
    report.complaint = complaint
    if hasattr(source, "select_events"):
        rows: list[Any] = aggregate_rows(source, complaint)
    else:
        rows = [r for r in source if _as_uuid(r[1]) == complaint]
    chains = _Chains(key, whole_log=False)
    for index, (position, originator_id, version, topic, state) in enumerate(rows):
        problem = chains.check(position, originator_id, version, topic, bytes(state))
        if problem is not None:
            report.broken = Break(position, complaint, version, topic, problem)
            report.broken.problem = _explain(chains, report.broken, originator_id, bytes(state), rows[index + 1:])
            break
        report.events += 1
        report.last_position = position
    report.aggregates = 1 if rows else 0
    report.chained, report.unchained = chains.chained, chains.unchained
    if not rows:
        report.notes.append("no events of this aggregate")
    report.notes.append("one aggregate's chain: events removed from its end, and the global chain, are checked by"
                        " a whole-log verify with the signed checkpoints")
    return report


def links_of(recorder: Any, key: bytes, complaint_id: UUID | str) -> list[dict[str, Any]]:
    """One aggregate's links for the read API's audit view: per event its version, position,
    link (hex; None from before the chain), whether it holds, and if not, why.

    Each link is checked against the stored link before it, so a changed event shows as the
    one event broken (the next one still links to the original link it carries)."""
    complaint_id = _as_uuid(complaint_id)
    rows = aggregate_rows(recorder, complaint_id)
    chains = _Chains(key, whole_log=False)
    out: list[dict[str, Any]] = []
    for index, (position, originator_id, version, topic, state) in enumerate(rows):
        stored = split(state)[1]
        problem = chains.check(position, originator_id, version, topic, state)
        if problem is not None:
            broken = Break(position, complaint_id, version, topic, problem)
            problem = _explain(chains, broken, originator_id, state, rows[index + 1:])
            # Go on from what is stored, so the next event is judged on its own.
            chains.last[originator_id] = (version, stored, _id_bytes(originator_id))
        out.append({"version": version, "position": position, "topic": topic,
                    "link": stored.hex() if stored is not None else None,
                    "intact": problem is None, "problem": problem})
    return out


__all__ = ["Break", "Report", "aggregate_rows", "checkpoint_message", "global_element", "global_step", "key_id",
           "links_of", "log_rows", "public_keys", "verify"]
