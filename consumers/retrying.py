"""Waiting, the one way this package waits: for a server to come up (tenacity), and
between the retries of the loops that run until asked to stop (relay, read node).

Every wait notices a stop request (SIGTERM) within 0.1 s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, retry_if_exception_type, wait_exponential

T = TypeVar("T")
FIRST, MOST = 0.5, 10.0  # seconds: the first wait after a failure, and the longest


def pause(seconds: float, stop: Callable[[], bool]) -> None:
    """Sleep `seconds`, or less if `stop()` turns true."""
    deadline = time.monotonic() + seconds
    while not stop() and (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.1))


class Backoff:
    """Waits doubling from FIRST to MOST seconds while failures go on; `reset` after a success."""

    def __init__(self, stop: Callable[[], bool]) -> None:
        self.stop = stop
        self.seconds = FIRST

    def wait(self) -> None:
        pause(self.seconds, self.stop)
        self.seconds = min(self.seconds * 2, MOST)

    def reset(self) -> None:
        self.seconds = FIRST


Failures = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]


def when_up(call: Callable[[], T], *, failures: Failures, stop: Callable[[], bool], what: str,
            log: logging.Logger) -> T:
    """`call()`, retried with back-off while it fails with `failures` (exception types, or a
    test of the exception: a server not up yet), until it succeeds or `stop()`: then the
    last failure is raised."""

    def waiting(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning("%s: %s: %s; retrying in %.1fs", what, type(error).__name__, error,
                    state.next_action.sleep if state.next_action else 0)

    retry = (retry_if_exception_type(failures) if isinstance(failures, (type, tuple))
             else retry_if_exception(failures))
    retrying = Retrying(retry=retry, wait=wait_exponential(multiplier=FIRST, max=MOST),
                        stop=lambda _state: stop(), sleep=lambda seconds: pause(seconds, stop),
                        before_sleep=waiting, reraise=True)
    return retrying(call)
