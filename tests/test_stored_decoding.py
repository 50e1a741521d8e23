"""The orjson and msgspec writers of bench/stored_decoding.py give the splice's envelopes.

The benchmark compares them with `wire_writer` on every row of its store; here the
states are the awkward ones (texts that look like JSON, the store's own keys and
transcodings inside strings, transcoded values nested in the payload, shapes the splice
hands to the decoding path), so a figure in docs/benchmarks.md is never one of a writer
that cuts corners.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from aggregates.envelope import EventEnvelope
from bench.stored_decoding import EXACT, writers
from complaints.settings import Settings
from complaints.store import open_desk
from consumers.stored_events import _decoding_writer, wire_writer
from tests.conftest import send_commands
from tests.test_relay import tricky_states


@pytest.mark.parametrize("name", EXACT)
def test_each_exact_writer_gives_the_splices_envelope(sqlite_settings: Settings, name: str) -> None:
    app = open_desk(sqlite_settings)
    try:
        send_commands(app, 25, seed=3)
        write, splice, decoded = writers(app.mapper)[name], wire_writer(app.mapper), _decoding_writer(app.mapper)
        states = tricky_states(app)
        for n, state in states:
            key = str(n.originator_id).encode()
            want = splice(n.topic, key, n.originator_version, n.id, state)
            got = write(n.topic, key, n.originator_version, n.id, state)
            assert json.loads(got) == json.loads(want) == json.loads(decoded(n.topic, key, n.originator_version,
                                                                             n.id, state)), state
            # The envelope model (its payload is not one a command could make: not validated).
            assert EventEnvelope.model_validate_json(got) == EventEnvelope.model_validate_json(want)
        assert len(states) > 500
    finally:
        app.close()


def test_an_unknown_transcoding_is_refused_by_every_writer(sqlite_settings: Settings) -> None:
    """A stored `{"_type_": <unknown>, "_data_": ...}` is the mapper's error, whoever writes."""
    app = open_desk(sqlite_settings)
    try:
        send_commands(app, 1, seed=3)
        n = app.recorder.select_notifications(1, 1)[0]
        state = n.state[:-1] + b',"odd":{"_type_":"frozenset_list","_data_":"[]"}}'
        key = str(n.originator_id).encode()
        for name, write in writers(app.mapper).items():
            if name in EXACT:
                with pytest.raises(Exception, match="frozenset_list"):
                    write(n.topic, key, n.originator_version, n.id, state)
    finally:
        app.close()
