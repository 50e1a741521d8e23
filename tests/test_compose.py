"""compose.yaml is valid and wired: services, environment, ports, healthchecks, dependencies.

Docker is not needed (nor available on the CI machines): the file is parsed and checked
against the project itself (settings that exist, CLI commands that exist, the broker
version scripts/kafka runs).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from complaints.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
APP_SERVICES = ("api", "relay", "read-node-1", "read-node-2", "automation", "notifier")
READ_NODES = ("read-node-1", "read-node-2")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def env(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def test_the_topology_is_complete(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"postgres", "kafka", "install", *APP_SERVICES}
    assert set(compose["volumes"]) >= {"pg-data", "kafka-data", "venv", "automation", "notifier", "keys", *READ_NODES}
    services = compose["services"]
    assert services["postgres"]["image"] == "postgres:16"
    for name in APP_SERVICES:
        assert services[name]["image"] == "python:3.11-slim"
        assert "venv:/venv:ro" in services[name]["volumes"]


def test_kafka_is_a_kraft_node_of_the_version_scripts_kafka_runs(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    pom = (ROOT / "scripts" / "kafka-pom.xml").read_text()
    version = re.search(r"<kafka.version>(.+?)</kafka.version>", pom).group(1)  # type: ignore[union-attr]
    assert kafka["image"] == f"apache/kafka:{version}"
    config = env(kafka)
    assert config["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert config["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{config['KAFKA_NODE_ID']}@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in config["KAFKA_ADVERTISED_LISTENERS"]
    assert config["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # the relay creates them
    assert config["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    external = re.search(r"EXTERNAL://localhost:(\d+)", config["KAFKA_ADVERTISED_LISTENERS"]).group(1)  # type: ignore[union-attr]
    assert f"{external}:{external}" in kafka["ports"]


def test_every_setting_named_exists(compose: dict[str, Any]) -> None:
    known = {f"COMPLAINTS_{name.upper()}" for name in Settings.model_fields}
    for name in APP_SERVICES:
        unknown = {k for k in env(compose["services"][name]) if k.startswith("COMPLAINTS_")} - known
        assert not unknown, f"{name}: no such setting {unknown}"


def test_the_event_store_is_wired_to_postgres(compose: dict[str, Any]) -> None:
    services = compose["services"]
    postgres = env(services["postgres"])
    for name in ("api", "relay", "automation", "notifier"):
        config = env(services[name])
        settings = Settings(**{k.removeprefix("COMPLAINTS_").lower(): v for k, v in config.items()
                               if k.removeprefix("COMPLAINTS_").lower() in Settings.model_fields})
        assert settings.store == "postgres" and settings.postgres_host == "postgres"
        assert settings.postgres_port == 5432
        assert (settings.postgres_user, settings.postgres_password, settings.postgres_db) == (
            postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], postgres["POSTGRES_DB"])


def test_the_bus_is_wired_to_kafka(compose: dict[str, Any]) -> None:
    services = compose["services"]
    advertised = env(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    internal = re.search(r"PLAINTEXT://([^,]+)", advertised).group(1)  # type: ignore[union-attr]
    topics = set()
    for name in ("relay", "automation", "notifier", *READ_NODES):
        config = env(services[name])
        assert config["COMPLAINTS_KAFKA_BOOTSTRAP"] == internal
        topics.add(config["COMPLAINTS_TOPIC"])
    assert len(topics) == 1, "relay and read nodes on different topics"
    assert int(env(services["relay"])["COMPLAINTS_PARTITIONS"]) >= 1
    # Each read node owns its DuckDB file: one writer process per file.
    paths = {(name, env(services[name])["COMPLAINTS_READ_DB"]) for name in READ_NODES}
    for name, path in paths:
        mounts = [v for v in services[name]["volumes"] if v.endswith(":" + str(Path(path).parent))]
        assert mounts == [f"{name}:{Path(path).parent}"], f"{name} needs a volume of its own for {path}"


def test_read_nodes_build_every_read_model(compose: dict[str, Any]) -> None:
    from consumers.read_node import load_projectors

    for name in READ_NODES:
        projectors = load_projectors(env(compose["services"][name])["COMPLAINTS_PROJECTORS"])
        assert projectors and len({p.name for p in projectors}) == len(projectors)


def test_ports_and_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "8000:8000" in services["api"]["ports"]
    assert services["api"]["command"][-4:] == ["--host", "0.0.0.0", "--port", "8000"]
    assert "8000/ready" in " ".join(services["api"]["healthcheck"]["test"])
    for name in ("postgres", "kafka", "api", "relay", "automation", "notifier", *READ_NODES):
        check = services[name].get("healthcheck")
        assert check and check["test"], f"{name} has no healthcheck"
    for name in ("relay", "automation", *READ_NODES):  # headless: /ready on COMPLAINTS_METRICS_PORT
        port = env(services[name])["COMPLAINTS_METRICS_PORT"]
        assert f"127.0.0.1:{port}/ready" in " ".join(services[name]["healthcheck"]["test"])


def test_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]

    def needs(name: str) -> dict[str, str]:
        return {k: v["condition"] for k, v in services[name]["depends_on"].items()}

    for name in APP_SERVICES:
        assert needs(name)["install"] == "service_completed_successfully"
    assert needs("api")["postgres"] == "service_healthy"
    relay = needs("relay")
    assert relay["postgres"] == relay["kafka"] == relay["api"] == "service_healthy"
    # The notifier serves /deliveries on 8001, its /ready there; the API and it share the keys.
    assert "8001/ready" in " ".join(services["notifier"]["healthcheck"]["test"])
    assert env(services["notifier"])["COMPLAINTS_SECRETS_KEY"] == env(services["api"])["COMPLAINTS_SECRETS_KEY"]
    for name in (*READ_NODES, "automation", "notifier"):
        assert needs(name)["kafka"] == "service_healthy"
        assert "relay" in needs(name)
    # No cycles.
    seen: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle {path + (name,)}"
        if name in seen:
            return
        seen.add(name)
        for dependency in services[name].get("depends_on", {}):
            assert dependency in services
            visit(dependency, path + (name,))

    for name in services:
        visit(name, ())


def test_the_commands_exist(compose: dict[str, Any]) -> None:
    from complaints.cli import app

    runner = CliRunner()
    for name in APP_SERVICES:
        command = compose["services"][name]["command"]
        assert command[0] == "/venv/bin/complaints"
        assert runner.invoke(app, [command[1], "--help"]).exit_code == 0, command
    install = " ".join(compose["services"]["install"]["command"])
    assert "pip install" in install and "/venv" in install
