"""Fault injection: what a request asks the mock to get wrong.

Selected by the body field ``metadata.mock_fault`` (which a gateway forwards unchanged) or,
when the body has none, the request header ``x-mock-fault``. The value is one or more
comma-separated items:

=====================  =============================================================
``500`` (any 400-599)  answer with that HTTP status, OpenAI-shaped error, no usage
``plain``              with a status: the error body is plain text, not JSON
``retry_after:<s>``    with a status: the error carries ``Retry-After: <s>``
``timeout:<seconds>``  wait that long before answering (before the status line and
                       headers; combines with the others)
``stall_body:<s>``     send the status line and headers, then wait that long before
                       the body (streaming: before the first frame)
``short_body``         not streaming: announce the whole body in Content-Length, send
                       half of it, then close the connection
``reset_after:<k>``    stream: send k content chunks, then close the connection
                       mid-body (before any finish, usage or [DONE] frame);
                       not streaming: close the connection without an answer
``no_usage``           answer normally, but without any usage object
``double_usage``       stream: send every frame that carries usage twice (the mock
                       counts the usage once)
``bad_sse``            stream: garbage first (a comment, a line with no field, a data
                       line that is not JSON, an unknown event, a data line with no
                       space), and the last frame without its blank line
``slow_stream:<s>``    stream: wait that long between SSE frames
``drip:<s>``           send the answer one byte per write, that long between bytes
                       (streaming and not)
=====================  =============================================================

An unknown item is a 400, so a typo in a test does not pass as "no fault".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from gateway.mock.shapes import MockError

HEADER = "x-mock-fault"
_N = TypeVar("_N", int, float)
_FLAGS = ("no_usage", "plain", "short_body", "double_usage", "bad_sse")
_SECONDS = {"timeout": "delay_s", "slow_stream": "chunk_delay_s", "stall_body": "body_delay_s",
            "drip": "drip_s"}
_COUNTS = {"reset_after": "reset_after", "retry_after": "retry_after"}


@dataclass(frozen=True, slots=True)
class Fault:
    status: int | None = None
    delay_s: float = 0.0
    reset_after: int | None = None
    no_usage: bool = False
    chunk_delay_s: float = 0.0
    plain: bool = False
    retry_after: int | None = None
    body_delay_s: float = 0.0
    short_body: bool = False
    double_usage: bool = False
    bad_sse: bool = False
    drip_s: float | None = None

    def error(self) -> MockError:
        """The error this fault answers with; only meaningful when ``status`` is set."""
        status = self.status or 500
        if status == 429:
            return MockError(
                429,
                "mock upstream: rate limit reached",
                type="requests",
                code="rate_limit_exceeded",
            )
        kind = "server_error" if status >= 500 else "invalid_request_error"
        return MockError(status, f"mock upstream: injected HTTP {status}", type=kind)


def requested(headers: Mapping[str, str], body: Mapping[str, Any]) -> Fault | None:
    """The fault this request asks for, or None."""
    metadata = body.get("metadata")
    spec = metadata.get("mock_fault") if isinstance(metadata, Mapping) else None
    if spec is None:
        spec = headers.get(HEADER)
    if spec is None:
        return None
    if not isinstance(spec, str):
        raise _bad(spec)
    return parse(spec)


def parse(spec: str) -> Fault:
    fault = Fault()
    for item in spec.split(","):
        fault = _apply(fault, item.strip(), spec)
    return fault


def _apply(fault: Fault, item: str, spec: str) -> Fault:
    name, _, arg = item.partition(":")
    try:
        if item.isdigit() and 400 <= int(item) <= 599:
            return replace(fault, status=int(item))
        change: dict[str, Any] = {}
        if item in _FLAGS:
            change[item] = True
        elif name in _SECONDS:
            change[_SECONDS[name]] = _non_negative(float(arg))
        elif name in _COUNTS:
            change[_COUNTS[name]] = _non_negative(int(arg))
        if change:
            return replace(fault, **change)
    except ValueError:
        pass
    raise _bad(spec)


def _non_negative(value: _N) -> _N:
    if not 0 <= value < math.inf:
        raise ValueError(value)
    return value


def _bad(spec: object) -> MockError:
    return MockError(
        400,
        f"mock upstream: unknown fault {spec!r}; use 500 (any 400-599), plain, "
        "retry_after:<s>, timeout:<s>, stall_body:<s>, short_body, reset_after:<k>, no_usage, "
        "double_usage, bad_sse, slow_stream:<s> or drip:<s>, comma-separated",
        param="metadata.mock_fault",
        code="unknown_mock_fault",
    )
