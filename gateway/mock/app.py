"""The mock upstream's aiohttp app: request checks, faults, answers and streams; and ``run``.

Polite by default, and deterministic: output tokens are the request's max output field
(``max_completion_tokens`` / ``max_tokens`` / ``max_output_tokens``) or 16, per choice, times
``n`` (fewer with ``metadata.mock_output_tokens``: the model stopping early, as a real one
mostly does), answered ``metadata.mock_delay_s`` late; input tokens are whatever the
injected counter says (by default the gateway's own estimate, so budget tests are exact);
cached tokens come from ``metadata.mock_cached_tokens``, capped at input tokens.

Worst mode (``make_app(worst=True)``, ``gateway mock-upstream --worst``) bills what the real
API may bill at most (``gateway.mock.worst``), keeps Responses and runs background ones
(``gateway.mock.stored``), and keeps a ledger of what
each request carried and billed (``gateway.mock.billing``, in the stats' ``ledger``).

Both modes serve the Files and Batch APIs (``gateway.mock.files``, ``gateway.mock.batches``):
a batch answers late (``batch_duration_s``, or the batch's ``metadata.mock_batch_duration_s``),
its lines completing one at a time, each answered and billed by the very path that answers
the request on its own (``answer_line``), marked ``tier: "batch"`` in the ledger; it can be
cancelled mid-way (the lines done are billed and in its output file), made to expire
(``mock_expire_after_lines``) or fail (``mock_fail``), and its retrievals to fail
(``mock_flaky_gets``). Uploads are kept in memory, ``files_max_bytes`` in all (then a 413).
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from gateway.errors import GatewayError
from gateway.mock import batch_input, batches, billing, faults, fields, send, shapes
from gateway.mock.batches import Batches, BatchRoutes, Reply
from gateway.mock.billing import Billing
from gateway.mock.faults import Fault
from gateway.mock.fields import TokenCounter
from gateway.mock.files import FILES_MAX_BYTES, FileRoutes, FileStore
from gateway.mock.shapes import JSON, Frame, MockError, Plan, Usage
from gateway.mock.stats import Ledger, LedgerEntry, MockStats
from gateway.mock.stored import ResponseStore, Stored, StoredRoutes
from gateway.mock.worst import WorstPlanner
from gateway.proxy.endpoints import Endpoint

STATS = web.AppKey("mock_stats", MockStats)

DEFAULT_OUTPUT_TOKENS = 16
DEFAULT_DIMENSIONS = 8
_MAX_DIMENSIONS = 8192
_MAX_BODY = 64 * 1024 * 1024
_MODELS_CREATED = 1_700_000_000
_MODELS = "/models"
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
    *, tokens: TokenCounter | None = None, require_key: str | None = None, worst: bool = False,
    batch_duration_s: float = batches.BATCH_S, files_max_bytes: int = FILES_MAX_BYTES,
) -> web.Application:
    """The mock upstream. ``tokens(path, body)`` counts input tokens (path as in ``Endpoint``);
    ``require_key``: answer 401 unless ``Authorization`` is ``Bearer <require_key>``;
    ``worst``: bill as the real API may at its worst (see ``gateway.mock.worst``);
    ``batch_duration_s``: how long a batch takes (see ``gateway.mock.batches``);
    ``files_max_bytes``: the bytes all files kept may hold (see ``gateway.mock.files``)."""
    app = web.Application(client_max_size=_MAX_BODY)
    counter = tokens or _estimate_counter()
    stats = MockStats(ledger=Ledger() if worst else None)
    app[STATS] = stats
    store = None
    if stats.ledger is None:
        upstream = MockUpstream(counter, stats, require_key)
        routes = upstream.routes()
    else:
        store = ResponseStore(stats.ledger)
        planner = WorstPlanner(counter, store.previous_tokens)
        upstream = MockUpstream(counter, stats, require_key, Billing(planner, store, stats.ledger))
        routes = [*upstream.routes(), *StoredRoutes(store, upstream.check_key).routes()]
    files = FileStore(files_max_bytes)
    batched = Batches(files, upstream.answer_line, batch_duration_s)
    app.add_routes([*routes, *FileRoutes(files, upstream.check_key, stats).routes(),
                    *BatchRoutes(batched, upstream.check_key, stats).routes()])
    app.cleanup_ctx.append(_stopping(store, batched))
    return app


def _stopping(
    store: ResponseStore | None, batched: Batches
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def stop_timers(app: web.Application) -> AsyncIterator[None]:
        yield
        if store is not None:
            store.close()
        await batched.close()

    return stop_timers


def run(
    host: str = "127.0.0.1", port: int = 9000, *, worst: bool = False,
    batch_duration_s: float = batches.BATCH_S,
) -> None:
    """Serve until SIGINT or SIGTERM; port 0 picks a free port, shown in the printed line."""
    asyncio.run(_serve(host, port, worst, batch_duration_s))


async def _serve(host: str, port: int, worst: bool, batch_duration_s: float) -> None:
    from gateway.cost.tokens import EXPECTED_SHA256, default_tokenizers

    # Every vocabulary, not on the first request's time.
    await asyncio.to_thread(default_tokenizers().preload, tuple(EXPECTED_SHA256))
    app = make_app(worst=worst, batch_duration_s=batch_duration_s)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, backlog=1024).start()
        bound = runner.addresses[0][1]
        shown = f"[{host}]" if ":" in host else host
        print(f"mock upstream listening on http://{shown}:{bound}/v1", flush=True)
        if worst:
            print("mock upstream: worst mode (bills as the real API may at its worst)", flush=True)
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
    """The route handlers; collaborators come in through ``__init__`` (``worst``: worst
    mode's, None when polite)."""

    def __init__(
        self, tokens: TokenCounter, stats: MockStats, require_key: str | None,
        worst: Billing | None = None,
    ) -> None:
        self._tokens = tokens
        self._stats = stats
        self._authorization = None if require_key is None else f"Bearer {require_key}"
        self._worst = worst
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

    def check_key(self, request: web.Request) -> None:
        if self._authorization is None:
            return
        if request.headers.get("Authorization") != self._authorization:
            raise MockError(401, "Incorrect API key provided.", code="invalid_api_key")

    # -- routes ----------------------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, Endpoint.CHAT)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, Endpoint.COMPLETIONS)

    async def responses(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, Endpoint.RESPONSES)

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        endpoint = Endpoint.EMBEDDINGS
        entry = None
        try:
            body, fault = await self._accept(request)
            entry = self._open(endpoint, body)
            answer, input_tokens, fault = self._embedding(body, fault, entry)
        except MockError as exc:
            return self._refuse(endpoint.value, exc, entry)
        if (early := await self._inject(request, endpoint, fault, stream=False)) is not None:
            return early
        response, delivered = await send.deliver(request, answer, fault)
        billing.delivered(entry, delivered)
        if delivered:
            self._embedded(input_tokens, fault)
        return response

    async def models(self, request: web.Request) -> web.StreamResponse:
        self._record(request, None)
        try:
            self.check_key(request)
        except MockError as exc:
            return self._refuse(_MODELS, exc)
        self._stats.requests[_MODELS] += 1
        return send.json_response(self._models)

    async def stats(self, request: web.Request) -> web.StreamResponse:
        return send.json_response(orjson.dumps(self._stats.as_json()))

    async def reset(self, request: web.Request) -> web.StreamResponse:
        self._stats.reset()
        return send.json_response(b'{"reset":true}')

    # -- a batch's line ----------------------------------------------------------------------

    def answer_line(self, endpoint: Endpoint, line: Any, batch_id: str) -> Reply:
        """One line of a batch, answered and billed (at the batch tier) as the same request
        sent on its own: never streamed; of its fault, only an error status and ``no_usage``
        apply (the others act on the wire)."""
        entry = None
        try:
            body = _request_body(line)
            fault = faults.requested({}, body)
            batch_input.refuse_unbatchable(body)
            entry = self._open(endpoint, body, batch_id)
            if endpoint is Endpoint.EMBEDDINGS:
                answer, input_tokens, fault = self._embedding(body, fault, entry)
                billed = Usage(input_tokens=input_tokens, output_tokens=0)
            else:
                plan, fault, _ = self._generation(endpoint, body, fault, entry)
                answer, billed = _RENDER[endpoint][0](plan), plan.billed
        except MockError as exc:
            self._refuse(endpoint.value, exc, entry)
            return Reply(exc.status, exc.body())
        if fault is not None and fault.status is not None:
            self._stats.faulted[endpoint.value] += 1
            return Reply(fault.status, fault.error().body())
        self._stats.requests[endpoint.value] += 1
        if endpoint is Endpoint.EMBEDDINGS:
            self._embedded(billed.input_tokens, fault)
        else:
            self._generated(plan)
        return Reply(200, answer, billed, entry)

    # -- the request path ------------------------------------------------------------------

    async def _generate(self, request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
        entry = None
        try:
            body, fault = await self._accept(request)
            entry = self._open(endpoint, body)
            plan, fault, kept = self._generation(endpoint, body, fault, entry)
        except MockError as exc:
            return self._refuse(endpoint.value, exc, entry)
        stream = body.get("stream") is True
        if (early := await self._inject(request, endpoint, fault, stream=stream)) is not None:
            return early
        full, streamed = _RENDER[endpoint]
        if stream:
            return await self._stream(request, streamed(plan), plan, fault, entry)
        if kept is not None and kept.background:  # queued; the ledger bills it when it ends
            queued = orjson.dumps(kept.body(asyncio.get_running_loop().time()))
            response, delivered = await send.deliver(request, queued, fault)
            billing.delivered(entry, delivered)
            return response
        response, delivered = await send.deliver(request, full(plan), fault)
        billing.delivered(entry, delivered)
        if delivered:
            self._generated(plan)
        return response

    async def _accept(self, request: web.Request) -> tuple[JSON, Fault | None]:
        """Record the request, check the key, parse the body; return it and its fault."""
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        self._record(request, body)
        self.check_key(request)
        body = _request_body(body)
        return body, faults.requested(request.headers, body)

    def _generation(
        self, endpoint: Endpoint, body: JSON, fault: Fault | None, entry: LedgerEntry | None
    ) -> tuple[Plan, Fault | None, Stored | None]:
        """Plan the answer (a MockError refuses it before anything bills), then bill it."""
        plan = self._plan(endpoint, body, fault)
        fault = self._fault(body, fault)
        return plan, fault, self._admit(endpoint, body, plan, fault, entry)

    def _embedding(
        self, body: JSON, fault: Fault | None, entry: LedgerEntry | None
    ) -> tuple[bytes, int, Fault | None]:
        """The whole answer and its input tokens (a MockError refuses it before anything
        bills), billed."""
        count = fields.input_count(body)
        dims = fields.int_field(body, "dimensions", DEFAULT_DIMENSIONS, low=1, high=_MAX_DIMENSIONS)
        b64 = fields.base64_wanted(body)
        input_tokens = self._count(Endpoint.EMBEDDINGS, body)
        fault = self._fault(body, fault)
        if self._worst is not None and entry is not None:
            self._worst.bill_embeddings(entry, fault, input_tokens)
        shown = None if fault is not None and fault.no_usage else input_tokens
        answer = shapes.embeddings(body["model"], count, dims, b64=b64, input_tokens=shown)
        return answer, input_tokens, fault

    def _open(
        self, endpoint: Endpoint, body: JSON, batch_id: str | None = None
    ) -> LedgerEntry | None:
        return None if self._worst is None else self._worst.open(endpoint, body, batch_id)

    def _fault(self, body: JSON, fault: Fault | None) -> Fault | None:
        return billing.late(body, fault)

    def _admit(
        self, endpoint: Endpoint, body: JSON, plan: Plan, fault: Fault | None,
        entry: LedgerEntry | None,
    ) -> Stored | None:
        if self._worst is None or entry is None:
            return None
        return self._worst.admit(endpoint, body, plan, fault, entry)

    def _plan(self, endpoint: Endpoint, body: JSON, fault: Fault | None) -> Plan:
        cap = fields.max_output(endpoint, body)
        choices = 1 if endpoint is Endpoint.RESPONSES else fields.int_field(body, "n", 1, low=1)
        input_tokens = self._count(endpoint, body)
        wanted = body.get("stream") is not True or endpoint is Endpoint.RESPONSES
        wanted = wanted or fields.include_usage(body)
        per_choice = DEFAULT_OUTPUT_TOKENS if cap is None else cap
        shorter = fields.metadata_count(body, "mock_output_tokens")  # the model stopped early
        if shorter:
            per_choice = min(per_choice, shorter)
        cached = min(fields.metadata_count(body, "mock_cached_tokens"), input_tokens)
        plan = Plan(
            id=f"{_ID_PREFIX[endpoint]}{next(self._ids):08d}",
            model=body["model"],
            created=int(time.time()),
            billed=Usage(input_tokens, per_choice * choices, cached_tokens=cached),
            per_choice=per_choice,
            choices=choices,
            capped=cap is not None and per_choice == cap,
            usage=wanted and not (fault is not None and fault.no_usage),
        )
        return plan if self._worst is None else self._worst.plan(endpoint, body, plan)

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
            return send.fault_response(fault)
        if fault.reset_after is not None and not stream:
            send.hang_up(request)
            return web.Response()
        return None

    async def _stream(
        self, request: web.Request, frames: list[Frame], plan: Plan, fault: Fault | None,
        entry: LedgerEntry | None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers=send.SSE_HEADERS)
        await response.prepare(request)
        reset_after = None if fault is None else fault.reset_after
        cut = len(frames) if reset_after is None else send.cut(frames, reset_after)
        try:
            await self._send(response, send.faulty_frames(frames[:cut], fault), fault)
        except ConnectionError:  # the client went away: nothing more to send or report
            billing.delivered(entry, False)
            return response
        if cut < len(frames):
            send.hang_up(request)
        billing.delivered(entry, cut == len(frames))
        self._answered(plan, with_usage=plan.usage and cut == len(frames))
        return response

    def _generated(self, plan: Plan) -> None:
        self._stats.produced_output_tokens += plan.text_tokens
        self._answered(plan, with_usage=plan.usage)

    def _embedded(self, input_tokens: int, fault: Fault | None) -> None:
        if fault is None or not fault.no_usage:
            self._stats.reported(input_tokens, 0, 0)

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
            await send.write(response, frame.data, drip)
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

    def _refuse(
        self, route: str, exc: MockError, entry: LedgerEntry | None = None
    ) -> web.Response:
        self._stats.errors[route] += 1
        if entry is not None:
            entry.state = "refused"
        return send.error_response(exc)


def _request_body(body: Any) -> JSON:
    """A request's body, checked to be a JSON object with a model."""
    if not isinstance(body, dict):
        raise MockError(
            400, "We could not parse the JSON body of your request. The body must be a JSON object."
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise MockError(400, "you must provide a model parameter", param="model")
    return body
