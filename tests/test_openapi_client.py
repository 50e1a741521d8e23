"""The published contract works: a client generated from `complaints run`'s /openapi.json
(by openapi-python-client, as an integrator would) signs in, registers a complaint, acts on
it and reads a dashboard, through a real server; its functions are named by the short
operation ids."""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.running import complaints_run

PACKAGE = "complaints_client"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with complaints_run(tmp_path_factory.mktemp("run")) as base:
        yield base


@pytest.fixture(scope="module")
def spec(served: str) -> dict[str, Any]:
    return dict(httpx.get(f"{served}/openapi.json", timeout=10).json())


@pytest.fixture(scope="module")
def generated(spec: dict[str, Any], served: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The client package generated from the served document, importable while the tests run."""
    where = tmp_path_factory.mktemp("client")
    document = where / "openapi.json"
    document.write_text(httpx.get(f"{served}/openapi.json", timeout=10).text)
    tools = Path(sys.executable).parent  # openapi-python-client, and the ruff it formats with
    done = subprocess.run([str(tools / "openapi-python-client"), "generate", "--path", str(document),
                           "--output-path", str(where / PACKAGE), "--meta", "none"],
                          capture_output=True, text=True, timeout=120,
                          env=os.environ | {"PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"})
    assert done.returncode == 0 and "Unable to parse" not in done.stdout + done.stderr, done.stdout + done.stderr
    sys.path.insert(0, str(where))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(where))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def operation_ids(spec: dict[str, Any]) -> list[str]:
    return [op["operationId"] for item in spec["paths"].values() for op in item.values()]


def test_operation_ids_are_short_unique_and_stable(spec: dict[str, Any]) -> None:
    ids = operation_ids(spec)
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    # The route's first tag and its name: what clients' function names are made of.
    for path, item in spec["paths"].items():
        for method, op in item.items():
            tag = op["tags"][0].replace(" ", "_").replace("-", "_")
            assert op["operationId"].startswith(f"{tag}-") and len(op["operationId"]) <= 40, (method, path, op)
    assert {"complaints-register", "complaints-triage", "complaints-assign", "complaints-add_note",
            "dashboards-supervisor", "read_models-sla", "export-export_dataset"} <= set(ids)


def test_a_generated_client_registers_acts_and_reads(spec: dict[str, Any], generated: ModuleType,
                                                      served: str) -> None:
    def module(name: str) -> Any:
        return importlib.import_module(f"{PACKAGE}.{name}")

    # One function module per operation, named by its id.
    api = module("api")
    functions = {name for tag in pkgutil.iter_modules(api.__path__)
                 for _, name, _ in pkgutil.iter_modules([f"{api.__path__[0]}/{tag.name}"])}
    assert functions == {i.replace("-", "_") for i in operation_ids(spec)}

    client = module("client")
    sign_in = module("api.development_sign_in.development_sign_in_token")
    token_body = module("models").DevelopmentSignInTokenBody

    def signed_in(username: str) -> Any:
        answer = sign_in.sync(client=client.Client(base_url=served), body=token_body.from_dict({"username": username}))
        return client.AuthenticatedClient(base_url=served, token=answer["access_token"], raise_on_unexpected_status=True)

    models = module("models")
    intake, lead = signed_in("intake"), signed_in("billing-lead")
    registered = module("api.complaints.complaints_register").sync(client=intake, body=models.RegisterComplaint.from_dict({
        "channel": "web", "customer": {"id": "C-77", "tier": "vip"},
        "customer_personal": {"name": "Li Wei", "contact": "li.wei@example.com"},
        "title": "Charged twice", "description": "The invoice shows two charges", "product": "billing-portal",
        "region": "Shanghai"}))
    assert isinstance(registered, models.CommandResult) and registered.version == 1
    complaint = registered.complaint_id
    steps = [("complaints_triage", models.TriageComplaint.from_dict({"category": "billing", "severity": "major"})),
             ("complaints_assign", models.AssignComplaint.from_dict({"team": "billing", "agent": "billing-1"})),
             ("complaints_add_note", models.AddNote.from_dict({"text": "Refund approved by finance"}))]
    for version, (operation, body) in enumerate(steps, start=2):
        done = module(f"api.complaints.{operation}").sync(client=lead, complaint_id=complaint, body=body)
        assert isinstance(done, models.CommandResult) and done.version == version, (operation, done)
    state = module("api.complaints.complaints_get_complaint").sync(client=lead, complaint_id=complaint)
    # (team and agent are among the state's further fields: ComplaintState allows extra ones)
    assert (state.status, state["team"], state["agent"], state.version) == ("assigned", "billing", "billing-1", 4)

    # The read side, as the in-process read node catches up; narrowed by the new filters.
    supervisor = module("api.dashboards.dashboards_supervisor")
    category = module("models").DashboardsSupervisorCategoryType0("billing")
    deadline = time.monotonic() + 30
    while True:
        board = supervisor.sync(client=lead, agent="billing-1", category=category, region="Shanghai")
        assert isinstance(board, models.SupervisorDashboard), board
        if board.counts.pending == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert board.counts.pending == 1 and [(a.agent, a.to_dict()["open"]) for a in board.agent_load] == [("billing-1", 1)]
    elsewhere = supervisor.sync(client=lead, agent="billing-1", category=category, region="Beijing")
    assert elsewhere.counts.pending == 0
