"""Logging set-up: one JSON object per line, each carrying the request id of its request."""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
from contextvars import ContextVar
from typing import Any

import orjson

request_id: ContextVar[str] = ContextVar("request_id", default="-")

# Set by a caller as ``extra={"fields": {...}}``: merged into the JSON object as they are.
FIELDS = "fields"

# A bearer token wherever it is quoted (an exception's message, a repr with ``\\x0b``...):
# the word, the blanks and backslashes after it, then everything up to the next blank.
_BEARER = re.compile(r"(?i)\b(bearer)\b[\s\\]*\S*")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def scrub(text: str) -> str:
    """Loggable text: valid UTF-8 (a lone surrogate from an undecodable byte is escaped) with
    any bearer token replaced, even a malformed one."""
    return _BEARER.sub(r"\1 ****", text.encode("utf-8", "backslashreplace").decode("utf-8"))


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub(str(k)): _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return scrub(str(value))


class JsonFormatter(logging.Formatter):
    """Machine-readable lines for log shippers; keys stay stable across releases. Never raises
    and never writes a bearer token: every string is scrubbed (see ``scrub``)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
        }
        try:
            line["msg"] = record.getMessage()
        except (TypeError, ValueError):  # arguments that do not fit the message
            line["msg"] = f"{record.msg} (unformattable arguments)"
        line.update(getattr(record, FIELDS, None) or {})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        try:
            return orjson.dumps(_scrubbed(line)).decode()
        except TypeError:  # a value orjson cannot write (an integer past 64 bits...): as text
            return orjson.dumps({scrub(str(k)): scrub(str(v)) for k, v in line.items()}).decode()


class TextFormatter(logging.Formatter):
    """Lines for people (``json=False``), scrubbed as the JSON ones are."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def configure(level: str = "INFO", *, json: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(
        JsonFormatter() if json else TextFormatter(
            "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
