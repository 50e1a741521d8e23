"""Log lines for operators: text for a terminal, or one JSON object per line for a
collector (COMPLAINTS_LOG_FORMAT=json), each with the correlation id of the command
being handled when there is one."""

from __future__ import annotations

import logging

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


def configure_logging(log_format: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(CorrelationFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(correlation_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            reserved_attrs=[*_RESERVED, "correlation"],
        ))
    else:
        handler.setFormatter(logging.Formatter(TEXT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # One line per command is for debugging; the desk's summary lines are enough at INFO.
    logging.getLogger("commands.desk").setLevel(max(root.level, logging.WARNING))
    for noisy in ("kafka", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))


_RESERVED = list(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) + ["message", "asctime", "taskName"]
