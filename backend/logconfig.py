"""Logging, configured once per process by its entry point (`lfops webui`): plain text or one JSON object a line.

LFOPS_LOG_FORMAT=json writes `{"time", "level", "logger", "message", ...extra fields, "exc"}` per line for a log
shipper; LFOPS_LOG_LEVEL sets the level. Uvicorn's and Gradio's loggers go through the same handler. Callers never
pass secrets to a log call (tokens, passwords, URLs with credentials): nothing here could take them out again.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The attributes every LogRecord has; anything else on a record came from `extra=` and goes into the JSON object.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
# Loggers of the server libraries, made to go through the root handler instead of their own.
_SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "gradio", "httpx")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the record's `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _Handler(logging.StreamHandler):
    """Ours: found again (and replaced) when logging is configured a second time in one process. It writes to the
    standard error of the moment, not the one it was made with (which a test runner or a daemon may have closed)."""

    @property
    def stream(self) -> Any:  # noqa: ANN401 - a text stream
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:  # noqa: ANN401 - StreamHandler.__init__ sets it; sys.stderr is used instead
        pass


def configure(log_format: str = "text", level: str = "INFO") -> None:
    """Send every logger's records to standard error in `log_format`, at `level` and above."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(handler)
    handler = _Handler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    for name in _SERVER_LOGGERS:
        server_logger = logging.getLogger(name)
        server_logger.handlers.clear()
        server_logger.propagate = True
    # chatter at INFO (httpx: every request Gradio makes at start-up; alembic: its plugins): only warnings are news
    for name in ("httpx", "alembic"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
