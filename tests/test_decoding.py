"""The read node's set-based decoder against `aggregates.envelope.parse`, the authority.

The SQL fast path may send a message the slow way for nothing, but must never accept
what parse() rejects, nor store anything other than what parse() reads.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import duckdb
import pytest

from complaints.store import open_desk
from commands.desk import ComplaintDesk
from complaints.settings import Settings
from aggregates import envelope as envelope_module
from consumers.decoding import Decoder
from aggregates.envelope import parse
from consumers.stored_events import wire_encoder
from consumers.sources import Message, Polled
from projections.base import to_batch
from tests.conftest import FakeClock, send_commands


@pytest.fixture(scope="module")
def messages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[bytes]]:
    path = tmp_path_factory.mktemp("decoding") / "events.sqlite"
    desk = open_desk(Settings(store="sqlite", sqlite_path=path), clock=FakeClock(datetime(2026, 11, 23, 2, 0, tzinfo=UTC)))
    send_commands(desk, 60, seed=21)
    encode = wire_encoder(desk.mapper)
    yield [encode(n) for n in desk.recorder.select_notifications(1, 100_000)]
    desk.close()


def decode(values: list[bytes]) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    db = duckdb.connect()
    db.execute("SET TimeZone = 'UTC'")
    polled = Polled.of([Message(0, i, b"k", v) for i, v in enumerate(values)], {0: len(values)})
    decoded = Decoder().decode(db, polled)
    return decoded.batch.to_pylist(), [(d.message.offset, d.error) for d in decoded.dead_letters]


def authority(values: list[bytes]) -> tuple[dict[tuple[str, int], list[dict[str, Any]]], set[int]]:
    """What parse() accepts, by event key (any of a key's copies may be the one kept), and what it rejects."""
    accepted: dict[tuple[str, int], list[dict[str, Any]]] = {}
    rejected = set()
    for i, value in enumerate(values):
        try:
            row = to_batch([parse(value)]).to_pylist()[0]
        except Exception:
            rejected.add(i)
            continue
        accepted.setdefault((row["complaint_id"], row["complaint_version"]), []).append(row)
    return accepted, rejected


def comparable(row: dict[str, Any]) -> dict[str, Any]:
    return row | {"payload": json.loads(row["payload"])}


def same_rows(ours: list[dict[str, Any]], theirs: dict[tuple[str, int], list[dict[str, Any]]]) -> None:
    assert [r["position"] for r in ours] == sorted(r["position"] for r in ours)
    assert sorted((r["complaint_id"], r["complaint_version"]) for r in ours) == sorted(theirs)
    for row in ours:
        assert comparable(row) in [comparable(r) for r in theirs[(row["complaint_id"], row["complaint_version"])]]


def test_clean_messages_all_take_the_canonical_query(messages: list[bytes]) -> None:
    decoder = Decoder()
    db = duckdb.connect()
    from consumers.decoding import _query  # the first query alone
    import pyarrow as pa

    incoming = pa.table({"idx": pa.array(range(len(messages)), pa.int64()), "value": pa.array(messages, pa.binary())})
    canonical = _query(db, decoder.canonical_sql, incoming)
    assert all(canonical["ok"].to_pylist())
    rows, dead = decode(messages)
    assert not dead
    same_rows(rows, authority(messages)[0])


def mutations(good: dict[str, Any]) -> Iterator[bytes]:
    """Ways to spoil (or merely reshape) an envelope."""
    payload = good["payload"]
    for key in good:
        yield json.dumps({k: v for k, v in good.items() if k != key}).encode()  # a field missing
        for bad in (None, "x", 7, 2.5, -1, 0, True, [], {}, "2026-02-30T00:00:00+00:00", 2**40, "7"):
            yield json.dumps(good | {key: bad}).encode()
    for key in payload:
        yield json.dumps(good | {"payload": {k: v for k, v in payload.items() if k != key}}).encode()
        for bad in (None, "x", 7, 2.5, -1, 0, True, [], {}, ["a"], [{"a": 1}], "2026-02-30T10:00:00+00:00",
                    "2024-02-29T10:00:00+00:00", "2026-01-01T10:00:00", "vip", "10", 1e400, "2026-13-01T00:00:00Z"):
            yield json.dumps(good | {"payload": payload | {key: bad}}).encode()
    yield json.dumps(good | {"payload": payload | {"extra": 1}}).encode()
    yield json.dumps(good | {"extra": 1}).encode()
    yield json.dumps(good, indent=1).encode()  # not compact: the second query
    yield json.dumps(dict(reversed(list(good.items())))).encode()  # other key order
    text = json.dumps(good, separators=(",", ":"))
    yield text.replace('"payload":{', '"payload":{"actor":"x",', 1).encode()
    yield (text[:-1] + ',"position":1}').encode()  # a duplicate key (Python keeps the last)
    yield (text[:-2] + ",}}").encode()  # a trailing comma DuckDB would read
    yield text.replace('"actor":"', '"actor":"\\u00e9\\"', 1).encode()  # escapes
    yield text.encode("utf-16")
    yield b"\xff" + text.encode()
    yield b"not json"
    yield text.replace(good["complaint_id"], good["complaint_id"].upper()).encode()


def test_the_fast_path_accepts_only_what_parse_accepts_and_reads_it_the_same(messages: list[bytes]) -> None:
    random.seed(4)
    samples = random.sample(messages, 25)
    spoiled = []
    for value in samples:
        good = json.loads(value)
        for n, bad in enumerate(mutations(good)):
            mark = json.loads(value) | {"position": 10**6 + len(spoiled), "complaint_version": 1000 + len(spoiled)}
            try:
                bad_json = json.loads(bad)
            except (ValueError, UnicodeDecodeError):
                spoiled.append(bad)
                continue
            if isinstance(bad_json, dict) and "payload" in bad_json:  # unique key and position: no copies
                bad_json.update({k: mark[k] for k in ("position", "complaint_version") if k in bad_json
                                 and isinstance(bad_json[k], int) and not isinstance(bad_json[k], bool)
                                 and bad_json[k] == good[k]})
            spoiled.append(bad if n % 7 == 0 else json.dumps(bad_json, separators=(",", ":")).encode())
    assert len(spoiled) > 2000
    rows, dead = decode(spoiled)
    expected, rejected = authority(spoiled)
    assert {offset for offset, _ in dead} == rejected
    same_rows(rows, expected)


def test_poison_inside_a_big_clean_batch_is_a_dead_letter_and_the_rest_applies(messages: list[bytes]) -> None:
    good = json.loads(messages[3])
    poison = [b"{", json.dumps(good | {"payload": good["payload"] | {"nope": 1}}).encode(),
              json.dumps(good | {"event_type": "Teleported"}).encode()]
    values = messages[:100] + poison + messages[100:] + messages[:50]  # and copies of the first 50
    rows, dead = decode(values)
    assert [offset for offset, _ in dead] == [100, 101, 102]
    assert "not JSON" in dead[0][1] and "nope" in dead[1][1] and "Teleported" in dead[2][1]
    same_rows(rows, authority(messages)[0])


def test_an_old_event_version_is_upcast(messages: list[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    triaged = next(json.loads(v) for v in messages if b'"event_type":"Triaged"' in v)
    old = triaged | {"event_version": 0, "payload": {k: v for k, v in triaged["payload"].items()
                                                     if k not in ("priority_reasons", "reason")}}
    monkeypatch.setitem(envelope_module.UPCASTERS, ("Triaged", 0),
                        lambda payload: payload | {"priority_reasons": ["upcast"]})
    others = [v for v in messages[:10] if json.loads(v)["position"] != triaged["position"]]
    rows, dead = decode([json.dumps(old, separators=(",", ":")).encode()] + others)
    assert not dead
    upcast = next(r for r in rows if r["position"] == triaged["position"])
    assert upcast["event_version"] == 2  # v0 -> v1 (the test's step) -> v2 (the real one: `reason` added)
    assert json.loads(upcast["payload"])["priority_reasons"] == ["upcast"]
    assert json.loads(upcast["payload"])["reason"] is None


def test_copies_in_a_clean_poll_are_kept_once_in_position_order(messages: list[bytes]) -> None:
    shuffled = messages[:300]
    random.Random(5).shuffle(shuffled)
    rows, dead = decode(shuffled + messages[:40] + messages[200:220])  # redelivered, as after a relay crash
    assert not dead
    assert [r["position"] for r in rows] == sorted(json.loads(v)["position"] for v in messages[:300])
    same_rows(rows, authority(messages[:300])[0])
