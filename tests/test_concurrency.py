"""Writers racing on one complaint: exactly one wins, the others get a conflict, nothing is lost.

A barrier inside `save` holds every writer until all have loaded the same version, so
the race really happens on every run, in threads and in separate processes, on SQLite
and on PostgreSQL.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from typing import Any
from uuid import UUID

import pytest

from complaints.store import open_desk
from commands.desk import ComplaintDesk, VersionConflict
from commands.models import AddNote, RegisterComplaint
from complaints.settings import Settings
from tests.identity import OPERATOR

WRITERS = 4


class RacingDesk(ComplaintDesk):
    """A desk whose saves wait until every writer has loaded the complaint."""

    name = ComplaintDesk.name  # the same tables as the real desk

    def __init__(self, settings: Settings, barrier: Any) -> None:
        # The tables exist already; PostgreSQL rejects concurrent CREATE TABLE IF NOT EXISTS.
        super().__init__(settings.eventsourcing_env() | {"CREATE_TABLE": "n"})
        self.barrier = barrier

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        self.barrier.wait(timeout=30)
        return super().save(*objs, **kwargs)


def write_note(settings: Settings, barrier: Any, complaint_id: UUID, writer: int) -> str:
    desk = RacingDesk(settings, barrier)
    try:
        desk.execute(complaint_id, AddNote(text=f"note {writer}"), OPERATOR)
        return "won"
    except VersionConflict as conflict:
        assert conflict.current_version == 2
        return "conflict"
    finally:
        desk.close()


def _process_writer(settings: Settings, barrier: Any, complaint_id: UUID, writer: int, results: Any) -> None:
    results.put(write_note(settings, barrier, complaint_id, writer))


def registered(settings: Settings) -> UUID:
    desk = open_desk(settings)
    try:
        return desk.register(RegisterComplaint(
            channel="phone", customer={"id": "C-9"},
            customer_personal={"name": "N", "contact": "n@example.com"},
            title="Race", description="Two agents at once",
        ), OPERATOR).complaint_id
    finally:
        desk.close()


def stored_versions(settings: Settings, complaint_id: UUID) -> list[int]:
    desk = open_desk(settings)
    try:
        return [e.originator_version for e in desk.events.get(complaint_id)]
    finally:
        desk.close()


def test_racing_threads_one_wins(store_settings: Settings) -> None:
    complaint_id = registered(store_settings)
    barrier = threading.Barrier(WRITERS)
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda w=w: results.append(write_note(store_settings, barrier, complaint_id, w)))
        for w in range(WRITERS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == ["conflict"] * (WRITERS - 1) + ["won"]
    assert stored_versions(store_settings, complaint_id) == [1, 2]


@pytest.mark.slow
def test_racing_processes_one_wins(store_settings: Settings) -> None:
    complaint_id = registered(store_settings)
    context = mp.get_context("spawn")
    barrier = context.Barrier(WRITERS)
    results = context.Queue()
    processes = [
        context.Process(target=_process_writer, args=(store_settings, barrier, complaint_id, w, results))
        for w in range(WRITERS)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    outcomes = sorted(results.get(timeout=5) for _ in processes)
    assert outcomes == ["conflict"] * (WRITERS - 1) + ["won"]
    assert stored_versions(store_settings, complaint_id) == [1, 2]


def test_the_same_command_racing_with_itself_is_written_once(store_settings: Settings) -> None:
    complaint_id = registered(store_settings)
    barrier = threading.Barrier(2)
    answers: list[Any] = []

    def send() -> None:
        desk = RacingDesk(store_settings, barrier)
        try:
            answers.append(desk.execute(complaint_id, AddNote(text="t", command_id="same"), OPERATOR))
        finally:
            desk.close()

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(a.replayed for a in answers) == [False, True]
    assert {a.version for a in answers} == {2}
    assert stored_versions(store_settings, complaint_id) == [1, 2]


def test_a_command_whose_clock_another_process_overtook_happens_after_its_change(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two processes on one store: one reads its clock, the other changes the complaint with a
    clock a moment ahead, then the first loads it. Once a 422 ("before the complaint's last
    change", the automation's faults test caught it); now the command takes the time after that
    change, when it is within the clocks' skew (and stays a 422 beyond it)."""
    from datetime import UTC, datetime, timedelta

    from commands.models import InvalidCommand
    from tests.conftest import FakeClock

    settings = Settings(store="sqlite", sqlite_path=tmp_path / "events.sqlite", aggregate_cache_size=0)
    behind, ahead = FakeClock(datetime(2026, 12, 1, 9, tzinfo=UTC)), FakeClock(datetime(2026, 12, 1, 9, tzinfo=UTC))
    first, second = open_desk(settings, clock=behind), open_desk(settings, clock=ahead)
    try:
        cid = first.register(RegisterComplaint(channel="web", customer={"id": "C-1"},
                                               customer_personal={"name": "Li", "contact": "li@example.com"},
                                               title="t", description="d"), OPERATOR).complaint_id
        ahead.advance(seconds=1)
        second.execute(cid, AddNote(text="from the other process"), OPERATOR)
        done = first.execute(cid, AddNote(text="this one's clock is a second behind"), OPERATOR)
        assert done.version == 3
        assert first.get_complaint(cid).updated_at == ahead.now
        ahead.advance(hours=1)  # far ahead: not a race, a clock to fix
        second.execute(cid, AddNote(text="an hour ahead"), OPERATOR)
        with pytest.raises(InvalidCommand, match="before the complaint's last change"):
            first.execute(cid, AddNote(text="an hour behind"), OPERATOR)
        assert first.get_complaint(cid).version == 4
    finally:
        first.close()
        second.close()
