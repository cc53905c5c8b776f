"""Log output: one line per event, as text or as JSON lines (``HUB_LOG_FORMAT=json``).

Lines about a socket carry its connection id (``c42``): in the text of the message, and as
the ``conn`` field of a JSON line. Every line goes through :class:`~hub.auth.RedactTokens`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["JsonFormatter", "log_config"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", "conn"?, "exc"?}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        conn = getattr(record, "conn", None)
        if conn is not None:
            line["conn"] = conn
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


def log_config(level: str, fmt: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the hub's and uvicorn's loggers."""
    formatter: dict[str, Any] = (
        {"()": "hub.logs.JsonFormatter"} if fmt == "json" else {"format": TEXT_FORMAT}
    )
    logger = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": "hub.auth.RedactTokens"}},
        "formatters": {"line": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "line",
                "filters": ["redact"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {name: dict(logger) for name in ("uvicorn", "uvicorn.access", "hub")},
    }
