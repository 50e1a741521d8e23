"""schemathesis against the command API as the composition root serves it
(`Wiring.command_app`: strict JSON, the body limit, /health and the sign-in routes).

- Every operation, with valid input (schemathesis' positive mode): no 5xx, only documented
  status codes, content types and response schemas.
- Every operation with a body or parameters, with invalid input (negative mode): no 5xx,
  and refused (a 4xx): a string where a number belongs, a number past its bound, a field
  the command does not have. Coercion that hid mistakes ("2" taken for 2) fails here.
- Statefully, along the links schemathesis infers from the schema (a registration's
  `complaint_id` into that complaint's commands and reads, a subscription's id into its
  changes): sequences of commands on real complaints, where 409s and 404s are answers too.

Bounded like tests/test_read_api_schemathesis.py: a few examples per operation, no
deadline per example. (schemathesis' pytest plugin does not run on pytest 9 yet, so the
operations are parametrised here.)
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance, negative_data_rejection, response_schema_conformance, status_code_conformance,
)

from complaints.identity import DevUser
from complaints.settings import Settings
from complaints.store import open_desk
from complaints.wiring import Wiring
from tests.identity import ISSUER, ISSUER_KEY

POSITIVE = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
NEGATIVE = [not_a_server_error, status_code_conformance, negative_data_rejection]
FUZZER = DevUser("fuzzer", "Fuzzer", ("department_head", "importer", "auditor", "admin"))
AUTH = {"Authorization": f"Bearer {ISSUER.token(FUZZER)}"}
SCENARIOS, STEPS = 60, 8  # stateful: sequences, and calls per sequence at most

WORK = Path(tempfile.mkdtemp(prefix="command-schemathesis-"))
SETTINGS = Settings(
    store="sqlite", sqlite_path=WORK / "events.sqlite", dev_issuer_key=ISSUER_KEY,
    secrets_key=WORK / "secrets.key", links_key=WORK / "links.key", notify_allow_hosts=["127.0.0.1"],
    attachments_dir=WORK / "attachments",
    rate_limit_commands="1000000/second", rate_limit_reads="1000000/second", rate_limit_costly="1000000/second")
WIRING = Wiring(SETTINGS)
APP = WIRING.command_app()
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP)
OPERATIONS = {op.label: op for op in (result.ok() for result in SCHEMA.get_all_operations())}
# The sign-in's own token endpoint signs whatever user it is asked for: not this API's concern here.
FUZZED = sorted(label for label in OPERATIONS if not label.startswith(("GET /metrics", "POST /auth/")))
WITH_INPUT = sorted(label for label in FUZZED
                    if OPERATIONS[label].body or any(True for _ in OPERATIONS[label].iter_parameters()))


@pytest.fixture(scope="module", autouse=True)
def closed_at_the_end() -> Iterator[None]:
    yield
    WIRING.close()
    shutil.rmtree(WORK, ignore_errors=True)


def test_every_operation_is_covered() -> None:
    assert len(FUZZED) >= 28 and "POST /complaints" in FUZZED and "POST /complaints/{complaint_id}/escalate" in FUZZED
    assert len(WITH_INPUT) >= 24


@pytest.mark.parametrize("label", FUZZED)
def test_valid_input_conforms_to_the_openapi(label: str) -> None:
    @given(case=OPERATIONS[label].as_strategy())
    @settings(max_examples=12, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=POSITIVE, headers=AUTH)

    run()


@pytest.mark.parametrize("label", WITH_INPUT)
def test_invalid_input_is_refused_without_a_5xx(label: str) -> None:
    @given(case=OPERATIONS[label].as_strategy(generation_mode=GenerationMode.NEGATIVE))
    @settings(max_examples=12, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=NEGATIVE, headers=AUTH)

    run()


# A schema of its own: the runs above leave what they learnt in theirs, and the sequences
# drawn here would depend on which of them ran first in this process.
STATEFUL_SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP)


class Workflow(STATEFUL_SCHEMA.as_state_machine()):  # type: ignore[misc]
    """Sequences of calls along the inferred links, as the fuzzer (every role it needs).
    Each sequence runs on an event store of its own (the app's desk is swapped), so the
    same sequence meets the same answers, as Hypothesis needs when it replays one."""

    def setup(self) -> None:
        self.shared_desk = APP.state.desk
        self.store = Path(tempfile.mkdtemp(dir=WORK))
        APP.state.desk = open_desk(SETTINGS.model_copy(update={"sqlite_path": self.store / "events.sqlite"}))

    def teardown(self) -> None:
        APP.state.desk.close()
        APP.state.desk = self.shared_desk
        shutil.rmtree(self.store, ignore_errors=True)

    answered: Counter[tuple[str, int]] = Counter()

    def before_call(self, case: schemathesis.Case) -> None:
        # The server owns time: a random occurred_at is a 422 (the operations' own runs above
        # try those), and here it would end most sequences before they begin.
        if isinstance(case.body, dict):
            case.body.pop("occurred_at", None)

    def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
        return {"headers": AUTH}

    def validate_response(self, response: Any, case: schemathesis.Case, additional_checks: Any = None,
                          **kwargs: Any) -> None:
        Workflow.answered[case.operation.label, response.status_code] += 1
        case.validate_response(response, checks=POSITIVE, transport_kwargs=kwargs)


def test_the_links_are_inferred() -> None:
    linked = STATEFUL_SCHEMA.operations_with_incoming_links()
    assert "POST /complaints/{complaint_id}/triage" in linked and "GET /complaints/{complaint_id}" in linked
    assert "POST /subscriptions/{subscription_id}/change" in linked


def test_stateful_sequences_along_the_links() -> None:
    Workflow.answered.clear()
    Workflow.run(settings=settings(max_examples=SCENARIOS, stateful_step_count=STEPS, deadline=None,
                                   derandomize=True, database=None, suppress_health_check=list(HealthCheck)))
    answered = Workflow.answered
    # Not vacuous: complaints were registered, and links led to them (answered, or refused by
    # the lifecycle; a 404 is a random id, a 422 never reached one).
    assert answered["POST /complaints", 201] >= 5, answered
    followed = sum(n for (label, code), n in answered.items() if "{complaint_id}" in label and code in (200, 409))
    assert followed >= 3, answered
