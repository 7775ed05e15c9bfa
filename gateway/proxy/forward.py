"""Stage 5: send the request upstream on the app's one pooled session and pass the answer
back, streams event by event (never buffered whole), reading usage on the way."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from gateway.errors import GatewayError, UpstreamError, UpstreamTimeout
from gateway.proxy.bounds import Bounds
from gateway.proxy.budgets import Admission
from gateway.proxy.endpoints import Endpoint
from gateway.proxy.resolve import Target, body_bytes
from gateway.proxy.usage import Reported, SSESplitter, StreamMeter, from_body, text_of_body

log = logging.getLogger(__name__)

_FORWARDED_REQUEST_HEADERS = ("Accept", "OpenAI-Beta", "Idempotency-Key", "User-Agent")
_DROPPED_RESPONSE_HEADERS = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE",
        "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length", "Content-Encoding",
        "Set-Cookie", "OpenAI-Organization", "OpenAI-Project", "Date", "Server",
    )
)
_SECRET_REPLACEMENT = b"[redacted]"


@dataclass(slots=True)
class Exchange:
    """One upstream exchange, filled in as it happens, so that whatever ends it (an answer,
    an error, a cancelled handler) the record stage can settle it exactly."""

    response: web.StreamResponse | None = None
    ok: bool = False  # the upstream answered with success
    lost: bool = False  # the request reached the upstream but its answer did not come back
    reported: Reported | None = None
    produced_text: str = ""  # what the client received, counted when usage is missing
    response_id: str | None = None  # a Responses API answer's id (the tenant will own it)
    status: str | None = None  # its status, when the answer said (background: "queued")
    upstream_s: float = 0.0  # from sending the request to the end of the answer
    sent_at: float = 0.0  # when the request was sent (perf_counter)
    # settles the exchange; a stream's last event ([DONE], response.completed) and its end are
    # sent only after it, so that a client that has the whole answer has been charged for it
    finish: Callable[[], Awaitable[None]] | None = None


def upstream_body(target: Target, admission: Admission) -> tuple[bytes, bool]:
    """The bytes to send, re-serialised only when they must change; and whether to hide the
    usage chunk the gateway asked for. What changes: the bounds the reservation assumed and
    the request left out (output cap, tool-call cap, service tier), a clamped output cap, and
    the request for streamed usage."""
    changes: dict[str, Any] = {}
    hide_usage = False
    if target.stream and target.endpoint in (Endpoint.CHAT, Endpoint.COMPLETIONS):
        options = target.body.get("stream_options") or {}
        if options.get("include_usage") is not True:
            changes["stream_options"] = {**options, "include_usage": True}
            hide_usage = True
    changes.update(bound_changes(target.endpoint, target.body, admission.estimate.bounds,
                                 admission.clamped_output is not None))
    if not changes:
        return target.raw, hide_usage
    return body_bytes({**target.body, **changes}), hide_usage


def bound_changes(endpoint: Endpoint, body: Mapping[str, Any], bounds: Bounds,
                  clamped: bool = False) -> dict[str, Any]:
    """The fields to set in ``body`` so that the upstream keeps to ``bounds``: those the
    request left out (output cap, tool-call cap, service tier), or a clamped output cap."""
    changes: dict[str, Any] = {}
    fields = endpoint.output_fields
    if clamped or bounds.set_cap:
        name = next((f for f in fields if body.get(f) is not None), fields[0])
        changes[name] = bounds.cap
    if bounds.set_calls:
        changes["max_tool_calls"] = bounds.calls
    if bounds.set_tier is not None:
        changes["service_tier"] = bounds.set_tier
    return changes


class Forwarder:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def forward(
        self,
        request: web.Request,
        target: Target,
        admission: Admission,
        headers: Mapping[str, str],
        exchange: Exchange,
    ) -> web.StreamResponse:
        data, hide_usage = upstream_body(target, admission)
        upstream = target.upstream
        timeout = _timeout(upstream.timeout_s, target.stream)
        started = exchange.sent_at = time.perf_counter()
        try:
            async with self._session.post(
                upstream.base_url + target.endpoint.value,
                data=data,
                headers=self._request_headers(request, target, headers),
                timeout=timeout,
            ) as resp:
                del data  # sent: else a stream would hold a copy of its body to its end
                if target.stream and resp.status == 200 and _is_sse(resp):
                    await self._stream(request, target, resp, headers, hide_usage, exchange)
                else:
                    await self._whole(target, resp, headers, exchange)
                assert exchange.response is not None
                return exchange.response
        except TimeoutError:
            exchange.lost = True
            raise UpstreamTimeout(
                f"The upstream '{upstream.name}' did not answer within {upstream.timeout_s:g} s."
            ) from None
        except asyncio.CancelledError:  # shutdown, or a server that cancels when clients leave:
            exchange.lost = True  # the upstream bills work whose end the gateway never saw
            raise
        except aiohttp.ClientError as exc:
            exchange.lost = not isinstance(exc, aiohttp.ClientConnectorError)
            raise UpstreamError(
                f"The upstream '{upstream.name}' could not be reached: {type(exc).__name__}."
            ) from None
        finally:
            exchange.upstream_s = time.perf_counter() - started

    def _request_headers(
        self, request: web.Request, target: Target, headers: Mapping[str, str]
    ) -> dict[str, str]:
        out = {"Content-Type": "application/json"}
        for name in _FORWARDED_REQUEST_HEADERS:
            value = request.headers.get(name)
            if value is not None:
                out[name] = value
        if target.upstream.api_key:
            out["Authorization"] = f"Bearer {target.upstream.api_key}"
        if "x-request-id" in headers:
            out["X-Request-Id"] = headers["x-request-id"]
        return out

    async def _whole(
        self,
        target: Target,
        resp: aiohttp.ClientResponse,
        headers: Mapping[str, str],
        exchange: Exchange,
    ) -> None:
        body = await resp.read()
        if resp.status >= 400:
            exchange.response = self._error_response(target, resp, body, headers)
            return
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            if target.endpoint is Endpoint.RESPONSES:
                _note_response(parsed, exchange)
            exchange.reported = from_body(parsed)
            if exchange.reported is None:
                exchange.produced_text = text_of_body(target.endpoint, parsed)
        exchange.ok = True
        exchange.response = web.Response(
            body=body, status=resp.status, headers=_response_headers(resp, headers)
        )

    def _error_response(
        self, target: Target, resp: aiohttp.ClientResponse, body: bytes, headers: Mapping[str, str]
    ) -> web.StreamResponse:
        """The upstream's own error, except where it is about the gateway's credentials."""
        if resp.status in (401, 403):
            error = UpstreamError(
                f"The upstream '{target.upstream.name}' refused the gateway's credentials "
                f"(HTTP {resp.status}); ask the gateway's operators to check its api_key.",
                code="upstream_auth_failed",
            )
            return _error(error, headers)
        out = _response_headers(resp, headers)
        if not _is_openai_error(body):  # a proxy's HTML page, a plain-text 503...
            body = orjson.dumps(unshaped_error(target.upstream.name, resp.status).body())
            out["Content-Type"] = "application/json"
        key = target.upstream.api_key.encode()
        if key and key in body:
            body = body.replace(key, _SECRET_REPLACEMENT)
        return web.Response(body=body, status=resp.status, headers=out)

    async def _stream(
        self,
        request: web.Request,
        target: Target,
        resp: aiohttp.ClientResponse,
        headers: Mapping[str, str],
        hide_usage: bool,
        exchange: Exchange,
    ) -> None:
        response = web.StreamResponse(status=200, headers=_response_headers(resp, headers))
        response.headers["Cache-Control"] = "no-cache"
        meter = StreamMeter(target.endpoint, hide_usage)
        exchange.response, exchange.ok = response, True
        client = _Client(response)
        held: list[bytes] = []  # from the event that ends the answer on: sent once settled
        try:
            await client.prepare(request)  # the client may have left while we waited
            await _relay(resp, meter, client, held)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("upstream stream broke off: %s", type(exc).__name__)
            exchange.lost = True
            await _write_quietly(response, _stream_error(target))
        finally:
            exchange.reported = meter.reported
            exchange.produced_text = meter.produced_text()
            if meter.response is not None:
                _note_response(meter.response, exchange)
        if exchange.finish is not None:
            exchange.upstream_s = time.perf_counter() - exchange.sent_at  # the answer is in
            await exchange.finish()
        if held:
            await client.write(b"".join(held))
        if response.prepared:
            await _write_eof_quietly(response)


async def _relay(resp: aiohttp.ClientResponse, meter: StreamMeter, client: _Client,
                 held: list[bytes]) -> None:
    """The upstream's events to the client as they come, metered; from the one that ends the
    answer on, into ``held``."""
    splitter = SSESplitter()
    async for chunk in resp.content.iter_any():
        out: list[bytes] = []
        for event in splitter.feed(chunk):
            if (sent := meter.feed(event)) is not None:
                (held if meter.ended else out).append(sent)
        if out:
            await client.write(b"".join(out))
    tail = splitter.rest()  # a last event the upstream did not end with a blank line
    if tail.strip() and (out_tail := meter.feed(tail)) is not None:
        held.append(out_tail)


class _Client:
    """The client's side of a stream. A client that leaves does not end the exchange: the
    upstream's stream is read on to its usage (within the timeout), so what the upstream
    bills, reasoning included, is what is charged, not only the text the client saw."""

    def __init__(self, response: web.StreamResponse) -> None:
        self._response = response
        self.gone = False

    async def prepare(self, request: web.Request) -> None:
        try:
            await self._response.prepare(request)
        except ConnectionResetError:
            self._left()

    async def write(self, data: bytes) -> None:
        if self.gone:
            return
        try:
            await self._response.write(data)
        except ConnectionResetError:
            self._left()

    def _left(self) -> None:
        self.gone = True
        log.debug("client went away; reading the upstream's stream on for its usage")


def _note_response(response: Mapping[str, Any], exchange: Exchange) -> None:
    oid, status = response.get("id"), response.get("status")
    if isinstance(oid, str) and oid:
        exchange.response_id = oid[:256]
    if isinstance(status, str):
        exchange.status = status


@functools.lru_cache(maxsize=64)
def _timeout(seconds: float, stream: bool) -> aiohttp.ClientTimeout:
    """A stream too ends within the timeout: its reservation lives that long (plus a margin),
    and one still running after would be charged after its room was given to others."""
    if stream:
        return aiohttp.ClientTimeout(total=seconds, sock_connect=30, sock_read=seconds)
    return aiohttp.ClientTimeout(total=seconds)


def _is_sse(resp: aiohttp.ClientResponse) -> bool:
    return resp.content_type == "text/event-stream"


def _response_headers(resp: aiohttp.ClientResponse, extra: Mapping[str, str]) -> dict[str, str]:
    headers = {k: v for k, v in resp.headers.items() if k.lower() not in _DROPPED_RESPONSE_HEADERS}
    headers.update(extra)
    return headers


def _is_openai_error(body: bytes) -> bool:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(parsed, dict) and isinstance(parsed.get("error"), dict)


def unshaped_error(upstream: str, status: int) -> UpstreamError:
    """An upstream error whose body is not OpenAI's shape, said in that shape: clients (the
    openai SDK) read ``error.message``; the status (and any Retry-After) stays the upstream's."""
    error = UpstreamError(
        f"The upstream '{upstream}' answered HTTP {status} without an error body.",
        code="rate_limit_exceeded" if status == 429 else "upstream_error",
    )
    error.status = status
    return error


def _error(error: GatewayError, headers: Mapping[str, str]) -> web.Response:
    return web.Response(body=orjson.dumps(error.body()), status=error.status,
                        content_type="application/json", headers=headers)


def _stream_error(target: Target) -> bytes:
    error = UpstreamError(f"The upstream '{target.upstream.name}' broke off the stream.")
    return b"data: " + orjson.dumps(error.body()) + b"\n\n"


async def _write_quietly(response: web.StreamResponse, data: bytes) -> None:
    try:
        await response.write(data)
    except ConnectionResetError:
        log.debug("client went away before the stream error was sent")


async def _write_eof_quietly(response: web.StreamResponse) -> None:
    try:
        await response.write_eof()
    except ConnectionResetError:
        log.debug("client went away before the end of the stream")
