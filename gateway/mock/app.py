"""The mock upstream's aiohttp app: request checks, faults, answers and streams; and ``run``.

Deterministic: output tokens are the request's max output field (``max_completion_tokens`` /
``max_tokens`` / ``max_output_tokens``) or 16, per choice, times ``n``; input tokens are
whatever the injected counter says (by default the gateway's own estimate, so budget tests are
exact); cached tokens come from ``metadata.mock_cached_tokens``, capped at input tokens.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from gateway.errors import GatewayError
from gateway.mock import faults, shapes
from gateway.mock.faults import Fault
from gateway.mock.shapes import JSON, Frame, MockError, Plan
from gateway.mock.stats import MockStats
from gateway.proxy.endpoints import Endpoint

TokenCounter = Callable[[str, Mapping[str, Any]], int]
STATS = web.AppKey("mock_stats", MockStats)

DEFAULT_OUTPUT_TOKENS = 16
DEFAULT_DIMENSIONS = 8
_MAX_DIMENSIONS = 8192
_MAX_BODY = 64 * 1024 * 1024
_MODELS_CREATED = 1_700_000_000
_MODELS = "/models"
# OpenAI's edge sets a cookie on every answer; a gateway must neither pass it to its tenants
# nor replay it upstream on another tenant's request.
_COOKIE = "__cf_bm=mock-upstream-cookie; path=/; HttpOnly; SameSite=None"
_JSON_HEADERS = {"Content-Type": "application/json", "Set-Cookie": _COOKIE}
_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
                "Set-Cookie": _COOKIE}
_RENDER: dict[Endpoint, tuple[Callable[[Plan], bytes], Callable[[Plan], list[Frame]]]] = {
    Endpoint.CHAT: (shapes.chat_completion, shapes.chat_stream),
    Endpoint.COMPLETIONS: (shapes.text_completion, shapes.text_completion_stream),
    Endpoint.RESPONSES: (shapes.response, shapes.response_stream),
}
_ID_PREFIX = {
    Endpoint.CHAT: "chatcmpl-mock",
    Endpoint.COMPLETIONS: "cmpl-mock",
    Endpoint.RESPONSES: "resp_mock",
}


def make_app(
    *, tokens: TokenCounter | None = None, require_key: str | None = None
) -> web.Application:
    """The mock upstream. ``tokens(path, body)`` counts input tokens (path as in ``Endpoint``);
    ``require_key``: answer 401 unless ``Authorization`` is ``Bearer <require_key>``."""
    app = web.Application(client_max_size=_MAX_BODY)
    stats = MockStats()
    app[STATS] = stats
    upstream = MockUpstream(tokens or _estimate_counter(), stats, require_key)
    app.add_routes(upstream.routes())
    return app


def run(host: str = "127.0.0.1", port: int = 9000) -> None:
    """Serve until SIGINT or SIGTERM; port 0 picks a free port, shown in the printed line."""
    asyncio.run(_serve(host, port))


async def _serve(host: str, port: int) -> None:
    from gateway.cost.tokens import EXPECTED_SHA256, default_tokenizers

    # Every vocabulary, not on the first request's time.
    await asyncio.to_thread(default_tokenizers().preload, tuple(EXPECTED_SHA256))
    runner = web.AppRunner(make_app(), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, backlog=1024).start()
        bound = runner.addresses[0][1]
        shown = f"[{host}]" if ":" in host else host
        print(f"mock upstream listening on http://{shown}:{bound}/v1", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def _estimate_counter() -> TokenCounter:
    # Imported here so the mock only needs the gateway's estimator when none is injected.
    from gateway.proxy.estimate import count_input_tokens

    def count(path: str, body: Mapping[str, Any]) -> int:
        return count_input_tokens(Endpoint(path), body)[0]

    return count


class MockUpstream:
    """The route handlers; collaborators come in through ``__init__``."""

    def __init__(self, tokens: TokenCounter, stats: MockStats, require_key: str | None) -> None:
        self._tokens = tokens
        self._stats = stats
        self._authorization = None if require_key is None else f"Bearer {require_key}"
        self._ids = itertools.count(1)
        self._models = shapes.models_list(_MODELS_CREATED)

    def routes(self) -> list[web.RouteDef]:
        routes = [
            web.post("/v1/chat/completions", self.chat),
            web.post("/v1/completions", self.completions),
            web.post("/v1/responses", self.responses),
            web.post("/v1/embeddings", self.embeddings),
            web.get("/v1/models", self.models, allow_head=False),
        ]
        for prefix in ("/v1/mock", "/mock"):
            routes.append(web.get(f"{prefix}/stats", self.stats, allow_head=False))
            routes.append(web.post(f"{prefix}/reset", self.reset))
        return routes

    # -- routes ----------------------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, Endpoint.CHAT)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, Endpoint.COMPLETIONS)

    async def responses(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, Endpoint.RESPONSES)

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        endpoint = Endpoint.EMBEDDINGS
        try:
            body, fault = await self._accept(request)
            count = _input_count(body)
            dims = _int_field(body, "dimensions", DEFAULT_DIMENSIONS, low=1, high=_MAX_DIMENSIONS)
            b64 = _base64_wanted(body)
            input_tokens = self._count(endpoint, body)
        except MockError as exc:
            return self._refuse(endpoint.value, exc)
        if (early := await self._inject(request, endpoint, fault, stream=False)) is not None:
            return early
        reported = fault is None or not fault.no_usage
        shown = input_tokens if reported else None
        answer = shapes.embeddings(body["model"], count, dims, b64=b64, input_tokens=shown)
        response, delivered = await _deliver(request, answer, fault)
        if delivered and reported:
            self._stats.reported(input_tokens, 0, 0)
        return response

    async def models(self, request: web.Request) -> web.StreamResponse:
        self._record(request, None)
        try:
            self._check_key(request)
        except MockError as exc:
            return self._refuse(_MODELS, exc)
        self._stats.requests[_MODELS] += 1
        return _json(self._models)

    async def stats(self, request: web.Request) -> web.StreamResponse:
        return _json(orjson.dumps(self._stats.as_json()))

    async def reset(self, request: web.Request) -> web.StreamResponse:
        self._stats.reset()
        return _json(b'{"reset":true}')

    # -- the request path ------------------------------------------------------------------

    async def _generate(self, request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
        try:
            body, fault = await self._accept(request)
            plan = self._plan(endpoint, body, fault)
        except MockError as exc:
            return self._refuse(endpoint.value, exc)
        stream = body.get("stream") is True
        if (early := await self._inject(request, endpoint, fault, stream=stream)) is not None:
            return early
        full, streamed = _RENDER[endpoint]
        if stream:
            return await self._stream(request, streamed(plan), plan, fault)
        response, delivered = await _deliver(request, full(plan), fault)
        if delivered:
            self._stats.produced_output_tokens += plan.output_tokens
            self._answered(plan, with_usage=plan.usage)
        return response

    async def _accept(self, request: web.Request) -> tuple[JSON, Fault | None]:
        """Record the request, check the key, parse the body; return it and its fault."""
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        self._record(request, body)
        self._check_key(request)
        if not isinstance(body, dict):
            raise MockError(
                400,
                "We could not parse the JSON body of your request. The body must be a JSON object.",
            )
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise MockError(400, "you must provide a model parameter", param="model")
        return body, faults.requested(request.headers, body)

    def _plan(self, endpoint: Endpoint, body: JSON, fault: Fault | None) -> Plan:
        cap = _max_output(endpoint, body)
        choices = 1 if endpoint is Endpoint.RESPONSES else _int_field(body, "n", 1, low=1)
        input_tokens = self._count(endpoint, body)
        wanted = body.get("stream") is not True or endpoint is Endpoint.RESPONSES
        wanted = wanted or _include_usage(body)
        return Plan(
            id=f"{_ID_PREFIX[endpoint]}{next(self._ids):08d}",
            model=body["model"],
            created=int(time.time()),
            input_tokens=input_tokens,
            cached_tokens=min(_cached_tokens(body), input_tokens),
            per_choice=DEFAULT_OUTPUT_TOKENS if cap is None else cap,
            choices=choices,
            capped=cap is not None,
            usage=wanted and not (fault is not None and fault.no_usage),
        )

    def _count(self, endpoint: Endpoint, body: JSON) -> int:
        try:
            return self._tokens(endpoint, body)
        except GatewayError as exc:  # the estimator refusing the body, e.g. a wrong type
            raise MockError(
                exc.status, exc.message, type=exc.type, param=exc.param, code=exc.code
            ) from exc

    async def _inject(
        self, request: web.Request, endpoint: Endpoint, fault: Fault | None, *, stream: bool
    ) -> web.StreamResponse | None:
        """Count the request; apply the parts of its fault that come before any answer."""
        if fault is None:
            self._stats.requests[endpoint.value] += 1
            return None
        self._stats.faulted[endpoint.value] += 1
        if fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        if fault.status is not None:
            return _fault_error(fault)
        if fault.reset_after is not None and not stream:
            _hang_up(request)
            return web.Response()
        return None

    async def _stream(
        self, request: web.Request, frames: list[Frame], plan: Plan, fault: Fault | None
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers=_SSE_HEADERS)
        await response.prepare(request)
        reset_after = None if fault is None else fault.reset_after
        cut = len(frames) if reset_after is None else _cut(frames, reset_after)
        try:
            await self._send(response, _faulty_frames(frames[:cut], fault), fault)
        except ConnectionError:  # the client went away: nothing more to send or report
            return response
        if cut < len(frames):
            _hang_up(request)
        self._answered(plan, with_usage=plan.usage and cut == len(frames))
        return response

    def _answered(self, plan: Plan, *, with_usage: bool) -> None:
        if with_usage:
            self._stats.reported(plan.input_tokens, plan.output_tokens, plan.cached_tokens)
        else:
            self._stats.unreported_input_tokens += plan.input_tokens

    async def _send(
        self, response: web.StreamResponse, frames: list[Frame], fault: Fault | None
    ) -> None:
        delay = 0.0 if fault is None else fault.chunk_delay_s
        drip = None if fault is None else fault.drip_s
        if fault is not None and fault.body_delay_s:
            await asyncio.sleep(fault.body_delay_s)
        if not delay and drip is None:  # one write: cheap, the client still sees every event
            await response.write(b"".join(frame.data for frame in frames))
            self._stats.produced_output_tokens += sum(frame.tokens for frame in frames)
            return
        for i, frame in enumerate(frames):
            if i and delay:
                await asyncio.sleep(delay)
            await _write(response, frame.data, drip)
            self._stats.produced_output_tokens += frame.tokens

    # -- small parts -----------------------------------------------------------------------

    def _record(self, request: web.Request, body: Any) -> None:
        headers = {name.lower(): value for name, value in request.headers.items()}
        self._stats.last_request = {
            "method": request.method,
            "path": request.path,
            "headers": headers,
            "body": body,
        }

    def _check_key(self, request: web.Request) -> None:
        if self._authorization is None:
            return
        if request.headers.get("Authorization") != self._authorization:
            raise MockError(401, "Incorrect API key provided.", code="invalid_api_key")

    def _refuse(self, route: str, exc: MockError) -> web.Response:
        self._stats.errors[route] += 1
        return _error(exc)


def _json(body: bytes) -> web.Response:
    return web.Response(body=body, headers=_JSON_HEADERS)


async def _deliver(
    request: web.Request, body: bytes, fault: Fault | None
) -> tuple[web.StreamResponse, bool]:
    """Send a JSON answer now, so the caller knows whether it went out (the client may have
    left during a ``timeout`` fault) before counting its usage as reported."""
    response = web.StreamResponse(headers=_JSON_HEADERS)
    response.content_length = len(body)
    try:
        await response.prepare(request)
        if fault is not None and fault.body_delay_s:
            await asyncio.sleep(fault.body_delay_s)
        if fault is not None and fault.short_body:
            await response.write(body[: len(body) // 2])
            _hang_up(request)
            return response, False
        await _write(response, body, None if fault is None else fault.drip_s)
        await response.write_eof()
    except ConnectionError:
        return response, False
    return response, True


async def _write(response: web.StreamResponse, data: bytes, drip_s: float | None) -> None:
    """All at once, or (``drip``) one byte per write."""
    if drip_s is None:
        await response.write(data)
        return
    for i in range(len(data)):
        await response.write(data[i : i + 1])
        await asyncio.sleep(drip_s)


def _error(exc: MockError) -> web.Response:
    return web.Response(status=exc.status, body=exc.body(), headers=_JSON_HEADERS)


def _fault_error(fault: Fault) -> web.Response:
    """An injected error status: OpenAI-shaped JSON, or (``plain``) text; ``Retry-After``."""
    exc = fault.error()
    headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
    if fault.plain:
        return web.Response(status=exc.status, text=f"{exc.message}\n", headers=headers)
    return web.Response(status=exc.status, body=exc.body(), headers={**_JSON_HEADERS, **headers})


_JUNK_FRAMES = (
    b": a comment line\n\n",
    b"a line with no field\n\n",
    b"data: {not json\n\n",
    b"event: ping\ndata: {}\n\n",
    b"data:[1,2,3]\n\n",
    b"\n\n",
)


def _faulty_frames(frames: list[Frame], fault: Fault | None) -> list[Frame]:
    """``double_usage`` and ``bad_sse`` applied to a stream's frames."""
    if fault is None:
        return frames
    if fault.double_usage:
        frames = [f for frame in frames
                  for f in ((frame, frame) if b'"usage":{' in frame.data else (frame,))]
    if fault.bad_sse and frames:
        last = frames[-1]
        frames = [*(Frame(junk, 0) for junk in _JUNK_FRAMES), *frames[:-1],
                  Frame(last.data.rstrip(b"\n"), last.tokens)]
    return frames


def _hang_up(request: web.Request) -> None:
    """Close the connection under the response; aiohttp then finds it closed and gives up."""
    if request.transport is not None:
        request.transport.close()


def _cut(frames: list[Frame], k: int) -> int:
    """How many frames to send so that exactly ``min(k, all)`` content frames go out and
    nothing after the last of them (no finish, usage or [DONE] frame)."""
    sent = 0
    end = 0
    for i, frame in enumerate(frames):
        if frame.tokens:
            if sent == k:
                return i
            sent += 1
            end = i + 1
    return end


def _max_output(endpoint: Endpoint, body: JSON) -> int | None:
    for name in endpoint.output_fields:
        if body.get(name) is not None:
            return _int_field(body, name, 0, low=1)
    return None


def _int_field(body: JSON, name: str, default: int, *, low: int, high: int | None = None) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise MockError(400, f"Invalid '{name}': expected an integer >= {low}.", param=name)
    if high is not None and value > high:
        raise MockError(400, f"Invalid '{name}': expected an integer <= {high}.", param=name)
    return value


def _include_usage(body: JSON) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _cached_tokens(body: JSON) -> int:
    metadata = body.get("metadata")
    value = metadata.get("mock_cached_tokens") if isinstance(metadata, dict) else None
    if value is None:
        return 0
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise MockError(
        400,
        "metadata.mock_cached_tokens must be a non-negative integer",
        param="metadata.mock_cached_tokens",
    )


def _input_count(body: JSON) -> int:
    """How many vectors an embeddings ``input`` asks for."""
    value = body.get("input")
    if isinstance(value, str):
        return 1
    if isinstance(value, list) and value:
        return 1 if all(isinstance(item, int) for item in value) else len(value)
    raise MockError(400, "'input' must be a non-empty string or array", param="input")


def _base64_wanted(body: JSON) -> bool:
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise MockError(400, "encoding_format must be 'float' or 'base64'", param="encoding_format")
    return encoding == "base64"
