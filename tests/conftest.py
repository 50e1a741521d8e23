"""Shared fixtures: a controllable clock, event stores on SQLite and PostgreSQL, the app.

PostgreSQL comes from COMPLAINTS_TEST_POSTGRES (set by scripts/test); run alone, a test
starts scripts/postgres itself. A missing server fails the test: it never skips.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from commands.api import create_app
from commands.desk import ComplaintDesk
from commands.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    # A Monday morning in Shanghai, inside business hours.
    return FakeClock(datetime(2026, 11, 23, 2, 0, tzinfo=UTC))


@pytest.fixture(scope="session")
def postgres_address() -> tuple[str, int]:
    address = os.environ.get("COMPLAINTS_TEST_POSTGRES")
    if not address:
        done = subprocess.run(
            [str(ROOT / "scripts" / "postgres"), "start"], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.fail(f"cannot start PostgreSQL (scripts/postgres start):\n{done.stderr}")
        address = done.stdout.strip().splitlines()[-1]
    host, _, port = address.rpartition(":")
    return host, int(port)


def postgres_settings(address: tuple[str, int]) -> Settings:
    """Settings for a fresh schema of its own, so tests never see each other's events."""
    host, port = address
    schema = "t_" + uuid.uuid4().hex[:12]
    try:
        with psycopg.connect(
            host=host, port=port, dbname="complaints", user="complaints",
            password="complaints", autocommit=True, connect_timeout=10,
        ) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.OperationalError as error:
        pytest.fail(f"PostgreSQL at {host}:{port} is not reachable: {error}")
    return Settings(
        store="postgres", postgres_host=host, postgres_port=port, postgres_schema=schema
    )


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    return Settings(store="sqlite", sqlite_path=tmp_path / "events.sqlite")


@pytest.fixture(params=["sqlite", "postgres"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for each event store the product supports."""
    if request.param == "sqlite":
        return Settings(store="sqlite", sqlite_path=tmp_path / "events.sqlite")
    return postgres_settings(request.getfixturevalue("postgres_address"))


@pytest.fixture
def desk(store_settings: Settings, clock: FakeClock) -> Iterator[ComplaintDesk]:
    app = ComplaintDesk.from_settings(store_settings, clock=clock)
    yield app
    app.close()


@pytest.fixture
def client(desk: ComplaintDesk, store_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(store_settings, desk)) as test_client:
        yield test_client
