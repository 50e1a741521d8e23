"""Signed checkpoints of the notification log's global chain (`consumers.audit_chain`).

A follower of the log: it hashes every event into the global chain and, every `every`
events (and when the log has been idle for `idle_seconds` with events not yet covered, and
when it stops), writes a checkpoint

    {"position": P, "global_hash": "<g_P hex>", "events": N, "signed_at": "<UTC ISO>",
     "key_id": "<16 hex>", "signature": "<Ed25519 signature hex>"}

as one JSON line appended to its file (`COMPLAINTS_AUDIT_CHECKPOINTS`) and published to
Kafka (`<topic>.checkpoints`) when Kafka is configured. The signature covers
`audit_chain.checkpoint_message` (every member but the signature). An operator copies the
file, or follows the topic, to where the database's users cannot reach: a checkpoint held
elsewhere pins the log up to its position.

Crashes: a line is written whole by one `write` and fsync'd before the next; after a
SIGKILL a torn last line (no newline) is cut off on start, and the checkpointer resumes
from the last whole checkpoint (it holds g and the count), so it never signs a position
twice. One checkpointer per file: it holds an exclusive lock (`<file>.lock`), and a second
one waits. Which checkpoints Kafka has acknowledged is kept in `<file>.published`; those
after it are published again after a restart (consumers keep one per position).

The checkpointer needs no chain key: it signs the links as stored. Verifying them is
`complaints audit verify`'s work.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding, PublicFormat, load_pem_public_key,
)
from eventsourcing.persistence import PersistenceError

from commands.event_chain import GENESIS
from consumers.audit_chain import checkpoint_message, global_element, key_id
from consumers.retrying import pause
from consumers.stored_events import NotificationRows

log = logging.getLogger(__name__)

Publisher = Callable[[dict[str, Any]], None]


class CheckpointsDamaged(Exception):
    """A whole line of the checkpoints file is not a checkpoint."""


# ---------------------------------------------------------------------------- keys
def signing_key_from(seed: bytes) -> Ed25519PrivateKey:
    """The Ed25519 key of a 32-byte seed (the signing key file's content)."""
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey, as_hex: bool = False) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    if as_hex:
        return public.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    return public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def load_public_key(text: bytes | str) -> Ed25519PublicKey:
    """A public key as `complaints audit public-key` prints it: PEM, or 64 hex digits."""
    data = text.encode() if isinstance(text, str) else text
    stripped = data.strip()
    if b"-----BEGIN" in stripped:  # PEM, after any comment lines (`public-key` prints the key id first)
        key = load_pem_public_key(stripped[stripped.index(b"-----BEGIN"):])
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        return key
    if re.fullmatch(rb"[0-9a-fA-F]{64}", stripped):
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(stripped.decode()))
    raise ValueError("not a public key: expected PEM or 64 hex digits (`complaints audit public-key`)")


# ---------------------------------------------------------------------------- the file
def read_checkpoints(path: Path) -> list[dict[str, Any]]:
    """The checkpoints in a file, in order; a torn last line (a crash while writing) is
    left out; a damaged whole line raises CheckpointsDamaged."""
    return _scan(path)[0]


def _scan(path: Path) -> tuple[list[dict[str, Any]], int]:
    """(checkpoints, bytes of whole lines)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    whole = data.rfind(b"\n") + 1
    records = []
    for number, line in enumerate(data[:whole].splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            int(record["position"]), bytes.fromhex(record["global_hash"]), int(record["events"])
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointsDamaged(f"{path} line {number} is not a checkpoint ({error}): the file was"
                                     " damaged; keep a copy, and move it aside to start a new one") from None
        records.append(record)
    return records, whole


# ---------------------------------------------------------------------------- Kafka
class KafkaCheckpoints:
    """Publishes checkpoints to a topic of their own (one partition, kept forever)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.producer: Any = None

    def __call__(self, record: dict[str, Any]) -> None:
        from kafka.errors import KafkaError

        try:
            if self.producer is None:
                self._ensure_topic()
                from consumers.relay import make_producer

                self.producer = make_producer(self.bootstrap, client_id="complaints-checkpoints")
            value = json.dumps(record, separators=(",", ":")).encode()
            self.producer.send(self.topic, key=str(record["position"]).encode(), value=value).get(timeout=30)
        except KafkaError:
            self.close()
            raise

    def _ensure_topic(self) -> None:
        from kafka.admin import KafkaAdminClient, NewTopic
        from kafka.errors import TopicAlreadyExistsError

        from consumers.relay import TOPIC_CONFIG

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="complaints-checkpoints-admin",
                                 request_timeout_ms=30_000, bootstrap_timeout_ms=3_000)
        try:
            admin.create_topics([NewTopic(self.topic, 1, 1, topic_configs=TOPIC_CONFIG)], timeout_ms=30_000)
            log.info("created topic %s for the audit checkpoints", self.topic)
        except TopicAlreadyExistsError:
            pass
        finally:
            admin.close()

    def close(self) -> None:
        if self.producer is not None:
            try:
                self.producer.close(timeout=5)
            except Exception as error:  # a broken producer may fail to close too
                log.debug("closing the checkpoints' producer: %s", error)
            self.producer = None


# ---------------------------------------------------------------------------- the follower
class Checkpointer:
    """Follows the log, hashes it into the global chain, signs a checkpoint every `every` events."""

    def __init__(self, recorder: Any, path: Path, signing_key: Ed25519PrivateKey, every: int = 1000,
                 idle_seconds: float = 60.0, publisher: Publisher | None = None, batch_size: int = 2_000,
                 poll_interval: float = 0.5, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        if every < 1:
            raise ValueError("a checkpoint every 1 event at least")
        self.recorder = recorder
        self.read_rows = NotificationRows(recorder)
        self.path = Path(path)
        self.key = signing_key
        self.key_id = key_id(signing_key.public_key())
        self.every = every
        self.idle_seconds = idle_seconds
        self.publisher = publisher
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.clock = clock
        # The chain so far: the last event hashed, g there, events counted; and the last checkpoint's.
        self.position, self.global_hash, self.events = 0, GENESIS, 0
        self.covered_position, self.covered_events = 0, 0
        self.written = 0  # checkpoints written by this process
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._unpublished: list[dict[str, Any]] = []
        self._publish_after = 0.0
        self._publish_failures = 0
        self._rows_at = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ opening
    def open(self) -> bool:
        """Take the file's lock and resume from its last whole checkpoint; False while another
        checkpointer holds the lock."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(self._sibling(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(lock_fd)
            if error.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return False
            raise
        try:
            self._resume()
        except BaseException:
            os.close(lock_fd)
            raise
        self._lock_fd = lock_fd
        return True

    def _resume(self) -> None:
        records, whole = _scan(self.path)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        size = os.fstat(fd).st_size
        if size > whole:  # a crash while writing the last line
            log.warning("%s: cutting off a torn last line (%d bytes) left by a crash", self.path, size - whole)
            os.ftruncate(fd, whole)
            os.fsync(fd)
        if size == 0:
            _fsync_directory(self.path.parent)
        self._fd = fd
        if records:
            last = records[-1]
            self.position = self.covered_position = int(last["position"])
            self.events = self.covered_events = int(last["events"])
            self.global_hash = bytes.fromhex(last["global_hash"])
            if last.get("key_id") != self.key_id:
                log.warning("the last checkpoint in %s is signed by key %s, this checkpointer's is %s: keep both"
                            " public keys to verify", self.path, last.get("key_id"), self.key_id)
            stored = self.recorder.max_notification_id() or 0
            if stored < self.position:
                log.warning("the event store ends at position %d, before the last checkpoint at %d: its tail is"
                            " missing (`complaints audit verify` tells)", stored, self.position)
        if self.publisher is not None:
            published = self._published_position()
            self._unpublished = [r for r in records if int(r["position"]) > published]
        log.info("audit checkpoints: %s resumes after position %d (%d events, %d checkpoints on file)",
                 self.path, self.position, self.events, len(records))

    # ------------------------------------------------------------------ following
    def step(self) -> int:
        """Hash what follows in the log (one batch), checkpointing every `every` events;
        returns the rows read."""
        if not self.open():
            return 0
        rows = self.read_rows(self.position, self.batch_size)
        if rows:
            self._rows_at = time.monotonic()
            g, events, every, covered = self.global_hash, self.events, self.every, self.covered_events
            sha256, element = hashlib.sha256, global_element
            for position, _, _, _, state in rows:
                if type(state) is not bytes:
                    state = bytes(state)
                g = sha256(g + position.to_bytes(8, "big") + element(state)).digest()
                events += 1
                if events - covered >= every:
                    self.position, self.global_hash, self.events = position, g, events
                    self._checkpoint()
                    covered = events
            self.position, self.global_hash, self.events = rows[-1][0], g, events
        elif (self.idle_seconds and self.events > self.covered_events
              and time.monotonic() - self._rows_at >= self.idle_seconds):
            self._checkpoint()
        self._publish()
        return len(rows)

    def checkpoint_now(self) -> dict[str, Any] | None:
        """A checkpoint of what has been hashed and not yet covered (None: nothing new)."""
        if self._fd is None or self.events <= self.covered_events:
            return None
        return self._checkpoint()

    def _checkpoint(self) -> dict[str, Any]:
        assert self._fd is not None
        record: dict[str, Any] = {
            "position": self.position, "global_hash": self.global_hash.hex(), "events": self.events,
            "signed_at": self.clock().astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "key_id": self.key_id,
        }
        record["signature"] = self.key.sign(checkpoint_message(record)).hex()
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        written = 0
        while written < len(line):  # one write in practice; a short one is finished, never interleaved
            written += os.write(self._fd, line[written:])
        os.fsync(self._fd)
        self.covered_position, self.covered_events = self.position, self.events
        self.written += 1
        if self.publisher is not None:
            self._unpublished.append(record)
        log.debug("audit checkpoint at position %d (%d events)", self.position, self.events)
        return record

    def _publish(self) -> None:
        if self.publisher is None or not self._unpublished or time.monotonic() < self._publish_after:
            return
        try:
            for record in list(self._unpublished):
                self.publisher(record)
                self._unpublished.pop(0)
                self._mark_published(int(record["position"]))
        except Exception as error:  # Kafka away: the file has them, they go later
            self._publish_failures += 1
            wait = min(60.0, 2.0 ** self._publish_failures)
            self._publish_after = time.monotonic() + wait
            log.warning("cannot publish %d audit checkpoint(s) (%s: %s); retrying in %.0fs (the file %s has them)",
                        len(self._unpublished), type(error).__name__, error, wait, self.path)
            return
        self._publish_failures = 0

    def _published_position(self) -> int:
        try:
            return int(self._sibling(".published").read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _mark_published(self, position: int) -> None:
        target = self._sibling(".published")
        draft = target.with_name(target.name + ".tmp")
        draft.write_text(f"{position}\n")
        os.replace(draft, target)

    def _sibling(self, suffix: str) -> Path:
        return self.path.with_name(self.path.name + suffix)

    # ------------------------------------------------------------------ running
    def run(self, stop: Callable[[], bool] = lambda: False, duty: float = 1.0) -> None:
        """Follow the log until `stop()`; waits (as a standby) while another holds the file.

        `duty` < 1: while behind, rest after each batch so that hashing takes at most that
        share of the time (a thread beside the relay must not take the relay's GIL time
        while both catch up; 0.2 still follows 40,000+ events/s)."""
        waiting_said = False
        while not stop():
            try:
                if not self.open():
                    if not waiting_said:
                        log.info("audit checkpoints: another checkpointer holds %s; standing by", self.path)
                        waiting_said = True
                    pause(5.0, stop)
                    continue
                started = time.perf_counter()
                if not self.step():
                    pause(self.poll_interval, stop)
                elif duty < 1.0:
                    pause((time.perf_counter() - started) * (1.0 / duty - 1.0), stop)
            except PersistenceError as error:
                log.warning("audit checkpoints: cannot read the event store (%s: %s); retrying",
                            type(error).__name__, error)
                pause(5.0, stop)
            except CheckpointsDamaged as error:
                log.error("audit checkpoints: stopped: %s", error)
                raise
            except Exception:  # keep following: a checkpointer that dies quietly covers nothing
                log.exception("audit checkpoints: unexpected failure; retrying in 5s")
                pause(5.0, stop)

    def start_background(self, duty: float = 0.2) -> None:
        """Follow the log in a thread of this process (see `run` for `duty`)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self.run, args=(self._stop.is_set, duty), daemon=True,
                                            name="audit-checkpoints")
            self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def close(self) -> None:
        """Stop, checkpoint what is hashed but not covered, release the file."""
        self.stop()
        if self._fd is not None:
            try:
                self.checkpoint_now()
                self._publish()
            except Exception as error:  # closing must not fail the process's shutdown
                log.warning("audit checkpoints: no final checkpoint (%s: %s)", type(error).__name__, error)
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None
        if isinstance(self.publisher, KafkaCheckpoints):
            self.publisher.close()


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
