"""Everything the test suite's gateways said, kept so one last test can look for secrets.

In-process: every log record (formatted as the gateway formats it) and every response body
the harness's client received. Real processes: their log files.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import aiohttp

from gateway.log import JsonFormatter

SECRETS: set[str] = set()  # every tenant key and upstream key the tests configure
TEXTS: list[str] = []
LOG_FILES: list[Path] = []


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        TEXTS.append(self.format(record))


def capture_logs() -> logging.Handler:
    handler = _Capture()
    logging.getLogger().addHandler(handler)
    return handler


async def _chunk(session: aiohttp.ClientSession, ctx: SimpleNamespace,
                 params: aiohttp.TraceResponseChunkReceivedParams) -> None:
    TEXTS.append(params.chunk.decode("utf-8", "replace"))


async def _headers(session: aiohttp.ClientSession, ctx: SimpleNamespace,
                   params: aiohttp.TraceRequestEndParams) -> None:
    TEXTS.append(str(dict(params.response.headers)))


def trace_config() -> aiohttp.TraceConfig:
    """Give to a client session: it keeps every response's headers and body."""
    config = aiohttp.TraceConfig()
    config.on_response_chunk_received.append(_chunk)
    config.on_request_end.append(_headers)
    return config


def leaks() -> list[str]:
    texts = TEXTS + [p.read_text(errors="replace") for p in LOG_FILES if p.exists()]
    return sorted({f"{secret[:6]}... in: {text[:200]!r}" for text in texts
                   for secret in SECRETS if secret in text})
