"""Reads never write: every GET endpoint of the read API answers from a read-only file.

A read-model file is built the way a read node builds it (the event log and every
projector, batch by batch), then closed and opened again with `read_only=True`: any
write a request attempted (to a read model, to the calendar table, anything but the
TEMP tables of its own cursor) would raise, and the request would fail.

The endpoints are not listed here: they come from the app's own OpenAPI, so a new one is
covered as soon as it exists. Each is called with its path parameters filled (a real
complaint id; every value of an enumerated one) and with each of its query parameters in
turn (every value of an enumerated one), each call once live and once `as_of` a past
instant when the endpoint takes `as_of`. Two configurations: an SLA policy whose calendars
and warning time differ from those the file was built with (so an as-of view cannot use
the file's calendar table and must compute its own) with another time zone; and the
defaults, where only the required parameters are also tried `as_of` (each path once).

Because a caught error would hide a write on a read-only connection, the same calls are
also made on a writable connection, and the file's tables must hold the same rows after.
"""

from __future__ import annotations

import random
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import duckdb
import pytest
from fastapi.testclient import TestClient

from aggregates.access import Principal
from aggregates.sla import SlaPolicy, load_sla_policy
from commands.alerts import RaiseAlert
from projections.base import to_batch
from projections.event_log import EventLog
from projections.models import make as make_projectors
from read_api.app import create_read_app
from read_api.schemas import Filters
from tests.histories import envelopes as all_envelopes, history
from tests.identity import AUTHENTICATE, bearer

PACKAGED = load_sla_policy()
BATCH = 25


def other_policy(tmp: Path) -> SlaPolicy:
    """The packaged policy with another version, warning time and business calendar."""
    text = (Path(__file__).resolve().parent.parent / "aggregates" / "sla_policy.toml").read_text()
    text = text.replace('version = "2026-12-03"', 'version = "reads-never-write"', 1)
    text = text.replace("warning_before_minutes = 15", "warning_before_minutes = 90", 1)
    text = text.replace('= ["09:00-12:00", "13:00-18:00"]', '= ["08:00-12:00", "13:00-19:00"]')  # Mon-Fri
    path = tmp / "other-policy.toml"
    path.write_text(text)
    policy = load_sla_policy(path)
    assert policy.calendars["business"] != PACKAGED.calendars["business"]
    return policy


def plan(seed: int = 7, length: int = 90) -> list[tuple[int, int, timedelta, int]]:
    rng = random.Random(seed)
    deltas = [timedelta(minutes=7), timedelta(hours=3), timedelta(hours=16), timedelta(days=1)]
    return [(rng.randrange(2**16), rng.randrange(2**16), rng.choice(deltas), rng.randrange(2**16))
            for _ in range(length)]


@dataclass
class ReadFile:
    path: Path
    complaint_id: str
    alert_id: str
    envelopes: list[Any]
    as_of: datetime  # an instant inside the history, after that complaint's registration
    now: datetime  # after the last event
    team: str
    product: str
    customer: str
    other_policy: SlaPolicy


@pytest.fixture(scope="module")
def read_file(tmp_path_factory: pytest.TempPathFactory) -> ReadFile:
    tmp = tmp_path_factory.mktemp("reads-never-write")
    desk, envelopes = history(plan())
    alert_id = desk.raise_alert(RaiseAlert(  # an alert too, for GET /alerts/{alert_id}
        key="reads-never-write", rule="rule", rules_version="1", subject_type="product", subject="x",
        severity="warning", title_en="t", title_zh="t", recipients=["supervisor"]),
        Principal("automation:alerts", "rules", frozenset({"automation"}))).alert_id
    alert_events = [e for e in all_envelopes(desk) if e.event_type.startswith("Alert")]
    desk.close()
    path = tmp / "read.duckdb"
    db = duckdb.connect(str(path))
    log = EventLog()
    log.create_schema(db)
    projectors = make_projectors(policy=PACKAGED)
    for projector in projectors:
        projector.create_schema(db)
    for i in range(0, len(envelopes), BATCH):
        db.begin()
        new = log.insert_new(db, to_batch(envelopes[i:i + BATCH]))
        for projector in projectors:
            projector.apply(db, new)
        db.commit()
    db.begin()  # the alert's events to the alert stream's projectors (a read node splits the streams)
    new = log.insert_new(db, to_batch(alert_events))
    for projector in projectors:
        if getattr(projector, "stream", "complaint") == "alert":
            projector.apply(db, new)
    db.commit()
    (team,), (product,), (customer,) = (db.execute(
        f"SELECT {column} FROM complaint_facts WHERE {column} IS NOT NULL ORDER BY registered_at LIMIT 1"
    ).fetchone() for column in ("team", "product", "customer_id"))
    first = db.execute("SELECT complaint_id, registered_at FROM complaint_facts ORDER BY registered_at LIMIT 1").fetchone()
    db.close()
    assert first is not None
    return ReadFile(path=path, complaint_id=first[0], alert_id=str(alert_id), envelopes=envelopes,
                    as_of=envelopes[len(envelopes) // 2].occurred_at,
                    now=envelopes[-1].occurred_at + timedelta(hours=1), team=team, product=product,
                    customer=customer, other_policy=other_policy(tmp))


# ------------------------------------------------------------------ the calls, from the OpenAPI
def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = spec
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def _alternatives(schema: dict[str, Any], spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The non-null alternatives of a parameter's schema (anyOf flattened, refs resolved)."""
    schema = _resolve(schema, spec)
    if "anyOf" in schema or "oneOf" in schema:
        out: list[dict[str, Any]] = []
        for sub in schema.get("anyOf", schema.get("oneOf", [])):
            out += _alternatives(sub, spec)
        return out
    return [] if schema.get("type") == "null" else [schema]


# Parameters whose values only narrow what a figure counts (each of them takes the same path).
NARROWING = frozenset(Filters.model_fields) | {"status", "order", "dated_by"}


def values_of(name: str, schema: dict[str, Any], spec: dict[str, Any], f: ReadFile) -> list[Any]:
    """Values worth trying for a parameter: every one of an enumeration that picks what is
    computed (a dimension, a granularity, a dataset...), one of a filter's, else one valid one."""
    known = {"team": f.team, "product": f.product, "customer": f.customer, "tz": "America/New_York",
             "text": "Broken", "complaint_id": f.complaint_id, "alert_id": f.alert_id,
             "field": "timely_response:true", "tag": "vip", "of": "timely_response"}
    for alt in _alternatives(schema, spec):
        if "enum" in alt:
            # A filter's values narrow the same computation: one is enough (the suite's time).
            return list(alt["enum"])[:1] if name in NARROWING else list(alt["enum"])
        if "const" in alt:
            return [alt["const"]]
        if name in known:
            return [known[name]]
        if alt.get("format") == "date-time":
            return [f.as_of.isoformat()]
        if alt.get("format") == "date":
            return [f.as_of.date().isoformat()]
        if alt.get("format") == "uuid":
            return [f.complaint_id]
        if alt.get("type") == "integer":
            return [max(1, alt.get("minimum", 1))]
        if alt.get("type") == "number":
            return [max(1, alt.get("minimum", 1))]
        if alt.get("type") == "boolean":
            return [True, False]
        if alt.get("type") == "string":
            return ["x"]
    raise AssertionError(f"no value for the parameter {name}: {schema}")


@dataclass(frozen=True)
class Call:
    template: str  # the OpenAPI path
    url: str
    params: tuple[tuple[str, Any], ...]
    expect: int | None = None  # None: any 2xx


def _is_uuid(parameter: dict[str, Any], spec: dict[str, Any]) -> bool:
    return any(alt.get("format") == "uuid" for alt in _alternatives(parameter["schema"], spec))


def calls(spec: dict[str, Any], f: ReadFile, as_of_each: bool = True) -> Iterator[Call]:
    """Every call to make; `as_of_each`: each query parameter's value as of the past instant
    too (else only the required parameters are, once per path)."""
    for template, operations in spec["paths"].items():
        operation = operations.get("get")
        if operation is None:
            continue
        parameters = operation.get("parameters", [])
        path_params = [p for p in parameters if p["in"] == "path"]
        query_params = [p for p in parameters if p["in"] == "query" and p["name"] != "as_of"]
        takes_as_of = any(p["in"] == "query" and p["name"] == "as_of" for p in parameters)
        # What every call gives: the required query parameters (e.g. /rates' `of`).
        required = tuple((p["name"], values_of(p["name"], p["schema"], spec, f)[0])
                         for p in query_params if p.get("required"))
        times: list[tuple[tuple[str, Any], ...]] = [required]
        if takes_as_of:
            times.append((*required, ("as_of", f.as_of.isoformat())))

        def url(values: dict[str, Any], template: str = template) -> str:
            return re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]), template)

        # Every combination of the path parameters' values (a complaint id, a dataset...).
        fills: list[dict[str, Any]] = [{}]
        for p in path_params:
            fills = [fill | {p["name"]: v} for fill in fills for v in values_of(p["name"], p["schema"], spec, f)]
        for n, fill in enumerate(fills):
            for at in times:
                yield Call(template, url(fill), at)
            if n:
                continue  # each query parameter with the first fill only
            for p in query_params:
                for value in values_of(p["name"], p["schema"], spec, f):
                    for at in (times if as_of_each else times[:1]):
                        yield Call(template, url(fill), ((p["name"], value),
                                                         *(given for given in at if given[0] != p["name"])))
        # A complaint that does not exist: 404 (and no write either).
        if any(_is_uuid(p, spec) for p in path_params):
            missing = fills[0] | {p["name"]: uuid4() for p in path_params if _is_uuid(p, spec)}
            for at in times:
                yield Call(template, url(missing), at, 404)


def sweep(db: duckdb.DuckDBPyConnection, f: ReadFile, as_of_each: bool = True, **settings: Any) -> int:
    """Every call of every GET endpoint through the app over `db`; returns how many."""
    app = create_read_app(db, AUTHENTICATE, clock=lambda: f.now, **settings)
    spec = app.openapi()
    seen: set[str] = set()
    failures: list[str] = []
    made = 0
    with TestClient(app, headers=bearer()) as client:
        for call in calls(spec, f, as_of_each):
            response = client.get(call.url, params=list(call.params))
            made += 1
            ok = (response.status_code == call.expect if call.expect is not None
                  else 200 <= response.status_code < 300)
            if not ok:
                failures.append(f"GET {call.url} {dict(call.params)}: {response.status_code} {response.text[:300]}")
            seen.add(call.template)
        # The routes outside the OpenAPI (the dashboard page) read no database; called too.
        for route in app.routes:
            path = getattr(route, "path", "")
            if "GET" in getattr(route, "methods", set()) and "{" not in path and path not in spec["paths"]:
                assert client.get(path).status_code < 400, path
    assert not failures, f"{len(failures)} of {made} calls failed:\n" + "\n".join(failures[:20])
    assert seen == {p for p, ops in spec["paths"].items() if "get" in ops}
    return made


CONFIGURATIONS = {
    # As of the past instant, each parameter's value is tried under the other configuration
    # (the harder one: its calendars are computed in TEMP tables), here only once per path.
    "defaults": lambda f: {"as_of_each": False},
    "other policy and zone, no cache": lambda f: {
        "policy": f.other_policy, "timezone": "America/New_York", "cache_seconds": 0},
}


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_every_get_endpoint_answers_from_a_read_only_file(read_file: ReadFile, configuration: str) -> None:
    db = duckdb.connect(str(read_file.path), read_only=True)
    try:
        with pytest.raises(duckdb.Error):  # the premise: this connection cannot write
            db.execute("CREATE TABLE written (x INTEGER)")
        sweep(db, read_file, **CONFIGURATIONS[configuration](read_file))
    finally:
        db.close()


def contents(db: duckdb.DuckDBPyConnection) -> dict[str, tuple[Any, ...]]:
    """Every table of the database (not TEMP) with its row count and a hash of its rows."""
    tables = [row[0] for row in db.execute(
        "SELECT table_name FROM duckdb_tables() WHERE NOT temporary ORDER BY 1").fetchall()]
    return {t: db.execute(f'SELECT count(*), sum(hash(t)::HUGEINT) FROM "{t}" t').fetchone() for t in tables}


def test_every_get_endpoint_leaves_a_writable_file_as_it_was(read_file: ReadFile, tmp_path: Path) -> None:
    """A write that some code caught and ignored would pass the read-only test unseen."""
    copy = tmp_path / "writable.duckdb"  # the module's file stays as built, whatever happens here
    shutil.copyfile(read_file.path, copy)
    db = duckdb.connect(str(copy))
    try:
        before = contents(db)
        assert before["sla_calendar_windows"][0] > 0
        sweep(db, read_file, **CONFIGURATIONS["other policy and zone, no cache"](read_file))
        assert contents(db) == before
    finally:
        db.close()


def test_an_as_of_view_under_other_calendars_computes_them_in_temp_tables(read_file: ReadFile) -> None:
    """The as-of figures under a policy whose calendars the file does not hold equal those
    of a file built under that policy from the start: the TEMP calendar is the right one."""
    from projections import queries

    policy = read_file.other_policy
    built = duckdb.connect()
    live = duckdb.connect(str(read_file.path), read_only=True)
    try:
        log = EventLog()
        log.create_schema(built)
        projectors = make_projectors(policy=policy)
        for projector in projectors:
            projector.create_schema(built)
        built.begin()
        new = log.insert_new(built, to_batch(read_file.envelopes))
        for projector in projectors:
            projector.apply(built, new)
        built.commit()
        for at in (read_file.as_of, read_file.envelopes[-1].position):
            expected = queries.dashboard(built, as_of=at, policy=policy)
            assert queries.dashboard(live, as_of=at, policy=policy) == expected
            # the calendar matters: business time differs under the file's own calendars
            assert queries.sla_clocks(live, as_of=at, policy=policy) != queries.sla_clocks(
                live, as_of=at, policy=PACKAGED.model_copy(update={"warning_before_minutes": 90}))
    finally:
        built.close()
        live.close()
