"""The per-aggregate hash chain: every stored event carries a keyed hash of its stored
bytes and of the previous event's hash, so an edit, a removal, a swap or an insertion
made directly in the database breaks a link that names the event.

The link of version v of an aggregate is

    HMAC-SHA256(chain key, previous link || originator id (16 bytes) || v (8 bytes, big
    endian) || topic (UTF-8) || 0x00 || body)

where the previous link of version 1 is 32 zero bytes and `body` is the event's stored
JSON as the transcoder wrote it (personal fields already sealed, so erasing a customer's
key changes no byte the chain covers). The link is written into the stored state itself,
as its last member: `...,"chain":"<64 hex>"}`; `split` takes it out again, giving back
the exact bytes it covers. Keyed, so a forged event needs the key, not just SHA-256.
"""

from __future__ import annotations

import hmac
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any
from uuid import UUID

GENESIS = bytes(32)
_SUFFIX = re.compile(rb',"chain":"([0-9a-f]{64})"\}\Z')
SUFFIX_BYTES = len(b',"chain":""}') + 64

# The stored link of an aggregate's event at a version, read from the store (None: none).
PreviousReader = Callable[[Any, int], bytes | None]


class ChainBroken(Exception):
    """A stored event whose chain link does not hold."""


def link(key: bytes, previous: bytes, originator_id: UUID, version: int, topic: str, body: bytes) -> bytes:
    """The chain link of one event (see the module's docstring)."""
    message = b"".join((previous, originator_id.bytes, version.to_bytes(8, "big"), topic.encode(), b"\0", body))
    return hmac.digest(key, message, "sha256")


def stamp(body: bytes, digest: bytes) -> bytes:
    """`body` (a JSON object's bytes) with the link as its last member."""
    return b'%s,"chain":"%s"}' % (body[:-1], digest.hex().encode())


def split(state: bytes) -> tuple[bytes, bytes | None]:
    """(the bytes the link covers, the link) of a stored state; (state, None) without one."""
    if state[-SUFFIX_BYTES:-66] == b',"chain":"' and state.endswith(b'"}'):
        found = _SUFFIX.search(state, len(state) - SUFFIX_BYTES)
        if found is not None:
            return state[:-SUFFIX_BYTES] + b"}", bytes.fromhex(found[1].decode())
    return state, None


def stored_link(recorder: Any, originator_id: Any, version: int) -> bytes | None:
    """The link stored with an aggregate's event at `version` in `recorder` (None: unchained)."""
    found = recorder.select_events(originator_id, gt=version - 1, lte=version, limit=1)
    return split(bytes(found[0].state))[1] if found else None


def check_key(key: bytes, last: Any, previous: PreviousReader) -> None:
    """Refuse a chain key that does not verify the store's chain: the link of the last
    stored event (`last`, a notification; None: an empty store), if it has one, must hold
    over its previous link (`previous` reads it)."""
    if last is None:
        return
    body, digest = split(bytes(last.state))
    if digest is None:  # the store was never chained yet
        return
    version = last.originator_version
    before = GENESIS if version == 1 else (previous(last.originator_id, version - 1) or GENESIS)
    if link(key, before, last.originator_id, version, last.topic, body) != digest:
        raise ChainBroken(f"the chain key does not verify the last stored event ({last.originator_id} version"
                          f" {version}, position {last.id}): configure the key the store was chained with"
                          " (COMPLAINTS_CHAIN_KEY), or run `complaints audit verify` if the store was altered")


class EventChain:
    """Links new events to the last stored one of their aggregate.

    The previous link comes from memory (the last event the process read or wrote of each
    aggregate) or else from the store (`previous`, bound by whoever opens it), so a process
    that loads an aggregate from a cache still links to what is stored. A failed save
    `forget`s what it wrote, because those events were never stored.
    """

    def __init__(self, key: bytes, previous: PreviousReader | None = None, memory: int = 100_000) -> None:
        if len(key) < 32:
            raise ValueError("the chain key must be at least 32 bytes")
        self.key = key
        self.previous = previous
        self._last: dict[Any, tuple[int, bytes]] = {}
        self._memory = memory
        self._lock = threading.Lock()

    def append(self, originator_id: UUID, version: int, topic: str, body: bytes) -> bytes:
        """The stored state of a new event: `body` stamped with its link."""
        digest = link(self.key, self._previous(originator_id, version), originator_id, version, topic, body)
        self._remember(originator_id, version, digest)
        return stamp(body, digest)

    def observe(self, originator_id: Any, version: int, state: bytes) -> bytes:
        """The body of a stored state read back (its link remembered as the aggregate's last)."""
        body, digest = split(state)
        if digest is not None:
            self._remember(originator_id, version, digest)
        return body

    def forget(self, originator_ids: Iterable[Any]) -> None:
        with self._lock:
            for originator_id in originator_ids:
                self._last.pop(originator_id, None)

    def _previous(self, originator_id: UUID, version: int) -> bytes:
        if version == 1:
            return GENESIS
        known = self._last.get(originator_id)
        if known is not None and known[0] == version - 1:
            return known[1]
        if self.previous is None:
            raise ChainBroken(f"no link known for {originator_id} version {version - 1}")
        stored = self.previous(originator_id, version - 1)
        if stored is None:  # an event from before the chain: a new chain starts here
            return GENESIS
        return stored

    def _remember(self, originator_id: Any, version: int, digest: bytes) -> None:
        with self._lock:
            known = self._last.get(originator_id)
            if known is None or known[0] <= version:
                if known is None and len(self._last) >= self._memory:
                    self._last.pop(next(iter(self._last)))
                self._last[originator_id] = (version, digest)
