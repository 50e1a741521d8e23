"""KafkaSource's prefetch queue: chunks polled ahead are merged into one batch, in order."""

from __future__ import annotations

from consumers.sources import KafkaSource, Message, Polled


def chunk(partition: int, first: int, count: int) -> Polled:
    return Polled.of([Message(partition, first + i, b"k", f"{partition}:{first + i}".encode())
                      for i in range(count)], {partition: first + count})


def test_a_poll_takes_what_has_queued_up_to_the_batch_size_in_order() -> None:
    source = KafkaSource("unused:9092", "topic")  # no thread, no broker: chunks are put by hand
    for polled in (chunk(0, 0, 3), chunk(1, 10, 2), chunk(0, 3, 4), chunk(1, 12, 5)):
        source._queue.put(polled)
    first = source.poll(max_records=10, timeout=0.1)
    assert first.values == [b"0:0", b"0:1", b"0:2", b"1:10", b"1:11", b"0:3", b"0:4", b"0:5", b"0:6"]
    assert first.next_positions == {0: 7, 1: 12}  # the 5 after would pass 10: left for the next poll
    second = source.poll(max_records=10, timeout=0.1)
    assert second.offsets == [12, 13, 14, 15, 16] and second.next_positions == {1: 17}
    assert len(source.poll(max_records=10, timeout=0.01)) == 0


def test_an_error_queued_behind_a_chunk_is_raised_by_the_next_poll() -> None:
    source = KafkaSource("unused:9092", "topic")
    source._queue.put(chunk(0, 0, 2))
    source._queue.put(RuntimeError("broker away"))
    assert len(source.poll(max_records=10, timeout=0.1)) == 2
    try:
        source.poll(max_records=10, timeout=0.1)
    except RuntimeError as error:
        assert "broker away" in str(error)
    else:
        raise AssertionError("the error was not raised")


def test_extend_keeps_errors_at_their_messages() -> None:
    bad = Polled.of([Message(0, 5, None, b"", error="no bytes")], {0: 6})
    merged = chunk(0, 0, 5).extend(bad)
    assert merged.errors == {5: "no bytes"} and merged.message(5).offset == 5
