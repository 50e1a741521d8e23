"""Log lines for operators: text for a terminal, or one JSON object per line for a
collector (COMPLAINTS_LOG_FORMAT=json), each with the correlation id of the command
being handled when there is one."""

from __future__ import annotations

import logging
import sys
import threading
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from commands.correlation import current_correlation_id

TEXT = "%(asctime)s %(levelname)s %(name)s%(correlation)s: %(message)s"


class CorrelationFilter(logging.Filter):
    """Adds `correlation_id` (the command's, or None) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "correlation_id"):
            record.correlation_id = current_correlation_id()
        record.correlation = f" [{record.correlation_id}]" if record.correlation_id else ""
        return True


class _Json(JsonFormatter):
    """JSON lines whose time is ISO 8601 in UTC, to the millisecond."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a line is logged, not when it was made
    (a test runner swaps and closes it around each command it invokes)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(log_format: str = "text", level: str = "INFO") -> None:
    """Every log line of the process to stderr, through one handler (uvicorn's and
    kafka-python's loggers included: they propagate to the root)."""
    handler = _Stderr()
    handler.addFilter(CorrelationFilter())
    if log_format == "json":
        handler.setFormatter(_Json(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(correlation_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            reserved_attrs=[*_RESERVED, "correlation"],
        ))
        # Warnings and uncaught exceptions would write plain text to stderr: log them.
        logging.captureWarnings(True)
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_uncaught_in_thread
    else:
        handler.setFormatter(logging.Formatter(TEXT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The desk's own lines are for debugging (the demo loader and imports send thousands of
    # commands through it); the command API logs each command (DEBUG) and refusal (INFO).
    logging.getLogger("commands.desk").setLevel(max(root.level, logging.WARNING))
    for noisy in ("kafka", "uvicorn.access", "httpx", "httpcore", "mail.log"):  # a line per request or delivery
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if not issubclass(args.exc_type, SystemExit):  # as the default hook: a thread's exit is silent
        _log_uncaught(args.exc_type, args.exc_value, args.exc_traceback, args.thread.name if args.thread else None)


def _log_uncaught(kind: type[BaseException], error: BaseException | None, traceback: TracebackType | None,
                  thread: str | None = None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error or kind(), traceback)
        return
    where = f" in thread {thread}" if thread else ""
    logging.getLogger("complaints").critical("uncaught %s%s: %s", kind.__name__, where, error,
                                             exc_info=(kind, error or kind(), traceback))


_RESERVED = list(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) + ["message", "asctime", "taskName"]
