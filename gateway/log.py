"""Logging set-up: one JSON object per line, each carrying the request id of its request."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import math
import re
import sys
import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, TextIO

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
        try:
            msg = record.getMessage()
        except (TypeError, ValueError):  # arguments that do not fit the message
            msg = f"{record.msg} (unformattable arguments)"
        exc = self.formatException(record.exc_info) if record.exc_info else None
        return json_line(record.created, record.levelname, record.name,
                         getattr(record, "request_id", "-"), msg,
                         getattr(record, FIELDS, None), exc)


@functools.lru_cache(maxsize=2)
def _second(whole: int) -> str:
    return dt.datetime.fromtimestamp(whole, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def iso_ms(created: float) -> str:
    """``created`` as ``isoformat(timespec="milliseconds")`` in UTC writes it (one line per
    request: the second's text is made once per second)."""
    frac, whole = math.modf(created)
    us = round(frac * 1e6)  # as datetime.fromtimestamp rounds
    if us >= 1_000_000:
        whole, us = whole + 1, us - 1_000_000
    elif us < 0:
        whole, us = whole - 1, us + 1_000_000
    return f"{_second(int(whole))}.{us // 1000:03d}+00:00"


def json_line(created: float, level: str, logger: str, rid: str, msg: str,
              fields: Mapping[str, Any] | None, exc: str | None = None) -> str:
    """One line as ``JsonFormatter`` writes it, scrubbed."""
    line: dict[str, Any] = {
        "ts": iso_ms(created),
        "level": level.lower(),
        "logger": logger,
        "request_id": rid,
        "msg": msg,
    }
    line.update(fields or {})
    if exc is not None:
        line["exc"] = exc
    return _dumps(line)


_PLAIN = frozenset({str, int, float, bool, type(None)})


def _dumps(line: dict[str, Any]) -> str:
    """The line as JSON, every string scrubbed. Most lines need no scrubbing: plain values
    that orjson writes (so valid UTF-8) and that never say "bearer" are written as they are,
    which is what scrubbing them would have written."""
    if _PLAIN.issuperset(map(type, line.values())):
        try:
            text = orjson.dumps(line)
        except TypeError:  # a lone surrogate, an integer past 64 bits: scrubbed below
            pass
        else:
            if b"bearer" not in text.lower():  # what _BEARER matches, in any case
                return text.decode()
    try:
        return orjson.dumps(_scrubbed(line)).decode()
    except TypeError:  # a value orjson cannot write (an integer past 64 bits...): as text
        return orjson.dumps({scrub(str(k)): scrub(str(v)) for k, v in line.items()}).decode()


class TextFormatter(logging.Formatter):
    """Lines for people (``json=False``), scrubbed as the JSON ones are."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class JsonHandler(logging.StreamHandler[TextIO]):
    """``configure``'s handler of JSON lines, which can also take a line built elsewhere.

    The lines written on an event loop go out together at the end of the loop's turn, in one
    write: at 16 clients a turn ends several requests, and each line was a system call of its
    own (~4% of the gateway's CPU). Lines from other threads, or with no loop running, are
    written at once; ``flush`` (and so ``logging.shutdown``) writes what a turn still holds."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.addFilter(_RequestIdFilter())
        self.setFormatter(JsonFormatter())
        self._turn: list[str] = []  # lines of the current turn of ``_turn_loop``, not written
        self._turn_loop: asyncio.AbstractEventLoop | None = None

    def as_configured(self, level: int) -> bool:
        """Writes a record of ``level`` exactly as ``configure`` set it up to."""
        return (level >= self.level and type(self.formatter) is JsonFormatter
                and len(self.filters) == 1 and type(self.filters[0]) is _RequestIdFilter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except RecursionError:
            raise
        except Exception:  # as StreamHandler.emit does
            self.handleError(record)
            return
        self.write_line(text)

    def write_line(self, text: str) -> None:
        """``text`` as one line of the stream, as ``emit`` writes a formatted record."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        self.acquire()  # as Handler.handle does around emit: other threads log too
        try:
            if loop is not None and loop is self._turn_loop:
                self._turn.append(text)
                return
            self._write_turn()  # a turn of another loop (one that stopped) goes first
            if loop is None:
                self._write([text])
            else:
                self._turn, self._turn_loop = [text], loop
                loop.call_soon(self.flush)  # at the turn's end
        finally:
            self.release()

    def flush(self) -> None:
        self.acquire()
        try:
            self._write_turn()
            super().flush()
        finally:
            self.release()

    def _write_turn(self) -> None:
        lines, self._turn, self._turn_loop = self._turn, [], None
        if lines:
            self._write(lines)

    def _write(self, lines: list[str]) -> None:
        """Under the handler's lock."""
        try:
            self.stream.write(self.terminator.join(lines) + self.terminator)
            self.stream.flush()
        except RecursionError:
            raise
        except Exception:  # as emit does: reported on stderr, the caller carries on
            self.handleError(logging.makeLogRecord({"msg": lines[0]}))


def info_line(logger: logging.Logger, fields: Mapping[str, Any], msg: str, *args: object
              ) -> None:
    """An INFO record with ``fields`` (``extra={FIELDS: fields}``). When ``configure``'s JSON
    handler is the only place the logger's records go, the line is serialised once and written
    to it directly, as that handler would have written the record; otherwise (another handler,
    such as a test's capture, or text lines) it goes through the logging module as any record.
    """
    handler = _sole_json_handler(logger, logging.INFO)
    if handler is None:
        logger.info(msg, *args, extra={FIELDS: fields})
        return
    handler.write_line(json_line(time.time(), "INFO", logger.name, request_id.get(),
                                 msg % args if args else msg, fields))


def _sole_json_handler(logger: logging.Logger, level: int) -> JsonHandler | None:
    """The handler every record of ``level`` from ``logger`` would go to, if it is the only
    one and a ``JsonHandler`` as configured, and the logger filters nothing."""
    if logger.filters or not logger.isEnabledFor(level):
        return None
    found: JsonHandler | None = None
    node: logging.Logger | None = logger
    while node is not None:
        for handler in node.handlers:
            if (found is not None or not isinstance(handler, JsonHandler)
                    or not handler.as_configured(level)):
                return None
            found = handler
        node = node.parent if node.propagate else None
    return found


def configure(level: str = "INFO", *, json: bool = True) -> None:
    handler: logging.Handler
    if json:
        handler = JsonHandler(sys.stderr)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.addFilter(_RequestIdFilter())
        handler.setFormatter(TextFormatter(
            "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
