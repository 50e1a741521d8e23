"""schemathesis against the read API's own OpenAPI: no 5xx, every response as documented.

Each operation of the schema gets its own test, fed by schemathesis' Hypothesis strategy
for that operation: valid parameters (positive mode), and invalid ones (negative mode:
refused with a 4xx, never a 5xx). (schemathesis' pytest plugin does not run on pytest 9
yet, so the operations are parametrised here.) Bounded: a few examples per operation, no
deadline per example; about a minute in all on two cores. The command API's own run, with
its stateful sequences: tests/test_command_api_schemathesis.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance, negative_data_rejection, response_schema_conformance, status_code_conformance,
)

from complaints.settings import Settings
from read_api.app import create_read_app
from tests.test_read_api import History, build_read_db
from tests.identity import AUTHENTICATE, bearer

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
NEGATIVE = [not_a_server_error, negative_data_rejection]


class LateDb:
    """The app needs its database only per request: the fixture fills it in."""

    db: duckdb.DuckDBPyConnection | None = None

    def cursor(self) -> duckdb.DuckDBPyConnection:
        assert self.db is not None, "the read_db fixture has not run"
        return self.db.cursor()


LATE = LateDb()
NOW: list[Any] = []
APP = create_read_app(LATE, AUTHENTICATE, clock=lambda: NOW[0])
AUTH = bearer()  # an operator: every read
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP)
OPERATIONS = {op.label: op for op in (result.ok() for result in SCHEMA.get_all_operations())}
WITH_PARAMETERS = sorted(label for label, op in OPERATIONS.items() if any(True for _ in op.iter_parameters()))


@pytest.fixture(scope="module", autouse=True)
def read_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    history = History(Settings(store="sqlite", sqlite_path=Path(tmp_path_factory.mktemp("st")) / "events.sqlite"))
    LATE.db = build_read_db(history.desk)
    NOW[:] = [history.now]
    yield
    LATE.db.close()
    history.desk.close()


def test_every_operation_is_covered() -> None:
    assert len(OPERATIONS) >= 12 and "GET /dashboards/supervisor" in OPERATIONS


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_operation_conforms_to_its_openapi(label: str) -> None:
    @given(case=OPERATIONS[label].as_strategy())
    @settings(max_examples=15, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=CHECKS, headers=AUTH)

    run()


@pytest.mark.parametrize("label", WITH_PARAMETERS)
def test_invalid_parameters_are_refused_without_a_5xx(label: str) -> None:
    @given(case=OPERATIONS[label].as_strategy(generation_mode=GenerationMode.NEGATIVE))
    @settings(max_examples=10, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=NEGATIVE, headers=AUTH)

    run()
