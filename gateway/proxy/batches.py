"""OpenAI's Files and Batch APIs, metered: a batch reserves its file's bound before it starts.

``POST /v1/files`` (purpose ``batch``) reads the JSONL as it arrives, checks and bounds every
line (``batch_file``), uploads the file with the bounds written in, and remembers it as the
tenant's with its bound. ``POST /v1/batches`` reserves that bound at batch prices in every
matching budget, all or none (reject and alert apply; a throttle or clamp budget refuses, as a
batch cannot wait or shrink), writes the batch's record to the store, then creates it upstream.
``batch_settle`` charges it when it ends. Files and batches are their tenant's: any other
tenant gets OpenAI's 404, and a list shows only the tenant's own.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from gateway import log as gateway_log
from gateway.clock import Clock
from gateway.errors import (
    BudgetExceeded,
    GatewayError,
    InvalidRequest,
    ResponseNotFound,
    TooManyConcurrent,
    UpstreamError,
)
from gateway.http_server import body_chunks, read_body
from gateway.ops import access
from gateway.proxy import batch_settle
from gateway.proxy.auth import Principal
from gateway.proxy.batch_file import BATCH_TIER, FileBound, jsonl_lines, plan
from gateway.proxy.bounds import Bounds
from gateway.proxy.budgets import Admission, Admitter, Ask
from gateway.proxy.denials import Denials
from gateway.proxy.endpoints import Endpoint
from gateway.proxy.estimate import Estimate
from gateway.proxy.forward import unshaped_error
from gateway.proxy.gate import Gate, client_gone
from gateway.proxy.handler import budget_headers, unmetered
from gateway.proxy.resolve import parse_body
from gateway.proxy.responses import ResponseOwners, upstream_call
from gateway.runtime import Runtime
from gateway.settings.schema import UpstreamSettings
from gateway.store.base import Store, StoreError
from gateway.store.batches import BatchRecord, HeldLine
from gateway.store.objects import Owned

log = logging.getLogger(__name__)

FILE, BATCH = "file", "batch"
COMPLETION_WINDOW_S = {"24h": 86_400.0}  # the windows OpenAI offers
SETTLE_MARGIN_S = 3600.0  # past the window: time for the upstream to end it and for us to read
_LINE_MAX = 8 * 1024 * 1024  # one line of a batch file
_LIST_PAGES = 10  # upstream pages read for one list answer (then has_more says so)
_LIST_MAX = 100

ROUTES = (  # method, path, the BatchRoutes method that answers
    ("POST", "/v1/files", "upload"),
    ("GET", "/v1/files", "list_files"),
    ("GET", "/v1/files/{id}", "get_file"),
    ("DELETE", "/v1/files/{id}", "delete_file"),
    ("GET", "/v1/files/{id}/content", "file_content"),
    ("POST", "/v1/batches", "create"),
    ("GET", "/v1/batches", "list_batches"),
    ("GET", "/v1/batches/{id}", "get_batch"),
    ("POST", "/v1/batches/{id}/cancel", "cancel"),
)


@dataclass(frozen=True, slots=True)
class _Call:
    """A request to a tenant's object: who asks, with which configuration."""

    principal: Principal
    runtime: Runtime

    @property
    def tenant(self) -> str:
        return self.principal.tenant

    def upstream(self, name: str) -> UpstreamSettings | None:
        return next((u for u in self.runtime.settings.upstreams if u.name == name), None)


class BatchRoutes:
    def __init__(self, config: Callable[[], Runtime], store: Store, admitter: Admitter,
                 owners: ResponseOwners, gate: Gate, session: aiohttp.ClientSession,
                 clock: Clock, denials: Denials, ended: Callable[[], None] = lambda: None
                 ) -> None:
        self._config = config
        self._store = store
        self._admitter = admitter
        self._denials = denials
        self._owners = owners
        self._gate = gate
        self._session = session
        self._clock = clock
        self._ended = ended  # a client saw a batch end: settle it now, not at the next poll

    async def handle(self, name: str, request: web.Request) -> web.StreamResponse:
        """Authenticated and counted in flight like any request (a file's body is held)."""
        runtime = self._config()
        principal = runtime.keyring.authenticate(request.headers.get("Authorization"))
        rec = access.record()
        if rec is not None:
            rec.tenant, rec.key_name = principal.tenant, principal.key_name
        handler: Callable[[web.Request, _Call], Awaitable[web.StreamResponse]] = getattr(
            self, name)
        with self._gate.enter(principal.tenant, runtime.settings.limits):
            return await handler(request, _Call(principal, runtime))

    # -- files ---------------------------------------------------------------------------

    async def upload(self, request: web.Request, call: _Call) -> web.StreamResponse:
        limit = call.runtime.settings.max_body_bytes
        if not request.content_type.startswith("multipart/"):
            raise InvalidRequest("Upload a file as multipart/form-data with the fields "
                                 "'purpose' and 'file'.", param="file")
        reader = await request.multipart()
        purpose, filename, planned = None, "batch.jsonl", None
        async for part in _parts(reader):
            if part.name == "purpose":
                purpose = (await part.read_chunk(64)).decode(errors="replace")
                _check_purpose(purpose)
            elif part.name == "file":
                _check_purpose(purpose or "batch")
                filename = part.filename or filename
                chunks = body_chunks(request, limit, _chunks(part))
                prior = functools.partial(self._prior, call)
                offload = functools.partial(self._gate.offload, call.tenant)
                lines = jsonl_lines(chunks, _LINE_MAX, _line_too_long)
                planned = await plan(lines, call.principal, call.runtime, prior, offload)
        if purpose is None:
            raise InvalidRequest("Missing required parameter: 'purpose'.", param="purpose")
        if planned is None or planned.upstream is None:
            raise InvalidRequest("Missing required parameter: 'file'.", param="file")
        bound, upstream = planned.bound(), planned.upstream
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", b"".join(planned.out), filename=filename,
                       content_type="application/jsonl")
        status, body = await upstream_call(self._session, upstream, "POST", "/files",
                                           data=form)
        answer = _answer(upstream, status, body)
        if status < 300 and isinstance(answer.get("id"), str):
            await self._remember(call, FILE, answer["id"], Owned(upstream.name, None,
                                                                   bound.dumps()))
            log.info("batch file uploaded id=%s tenant=%s lines=%d tokens=%d cost_nano=%d",
                     answer["id"], call.tenant, bound.lines,
                     bound.input_tokens + bound.output_tokens, bound.cost_nano)
        return _json(status, answer)

    async def get_file(self, request: web.Request, call: _Call) -> web.StreamResponse:
        return await self._owned_call(call, FILE, request.match_info["id"], "GET", "")

    async def delete_file(self, request: web.Request, call: _Call) -> web.StreamResponse:
        oid = request.match_info["id"]
        response = await self._owned_call(call, FILE, oid, "DELETE", "")
        if response.status < 300:
            await self._store.objects.delete(call.tenant, FILE, oid)
        return response

    async def file_content(self, request: web.Request, call: _Call) -> web.StreamResponse:
        """Streamed through: an output file may be far larger than any answer held."""
        oid = request.match_info["id"]
        upstream = await self._owner(call, FILE, oid)
        url = f"{upstream.base_url}/files/{oid}/content"
        headers = _auth(upstream)
        try:
            async with self._session.get(url, headers=headers) as resp:
                if resp.status >= 300:
                    return _json(resp.status, _answer(upstream, resp.status,
                                                      await resp.content.read(1 << 20)))
                out = web.StreamResponse(status=resp.status, headers={
                    "Content-Type": resp.headers.get("Content-Type",
                                                     "application/octet-stream")})
                await out.prepare(request)
                async for chunk in resp.content.iter_chunked(1 << 16):
                    await out.write(chunk)
                await out.write_eof()
                return out
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(f"The upstream '{upstream.name}' could not be reached: "
                                f"{type(exc).__name__}.") from None

    async def list_files(self, request: web.Request, call: _Call) -> web.StreamResponse:
        return await self._owned_list(request, call, FILE, "/files")

    # -- batches -------------------------------------------------------------------------

    async def create(self, request: web.Request, call: _Call) -> web.StreamResponse:
        body = parse_body(await read_body(request, call.runtime.settings.max_body_bytes))
        file_id, endpoint, window = (body.get(k) for k in
                                     ("input_file_id", "endpoint", "completion_window"))
        if not isinstance(file_id, str) or not file_id:
            raise InvalidRequest("Missing required parameter: 'input_file_id'.",
                                 param="input_file_id")
        if window not in COMPLETION_WINDOW_S:
            raise InvalidRequest(f"'completion_window' must be one of "
                                 f"{', '.join(COMPLETION_WINDOW_S)}.", param="completion_window")
        owned = await self._store.objects.get(call.tenant, FILE, file_id, self._clock.now())
        if owned is None:
            raise _not_found(FILE, file_id)
        if owned.detail is None:
            raise InvalidRequest(f"File '{file_id}' is not a batch input file uploaded through "
                                 "this gateway (an output file cannot start a batch).",
                                 param="input_file_id")
        bound = FileBound.loads(owned.detail)
        if endpoint != f"/v1{bound.endpoint}":
            raise InvalidRequest(f"The file's requests go to /v1{bound.endpoint}, so the "
                                 f"batch's 'endpoint' must be that.", param="endpoint")
        await self._check_room(call)
        _, price = call.runtime.router.route(call.principal, bound.model)  # still allowed
        upstream = call.upstream(owned.upstream)  # where the file is
        if upstream is None:
            raise _not_found(FILE, file_id)
        estimate = Estimate(bound.input_tokens, Bounds(cap=bound.output_tokens,
                                                       tiers=(BATCH_TIER,)))
        now = self._clock.now()
        deadline = now + COMPLETION_WINDOW_S[str(window)] + SETTLE_MARGIN_S
        ask = Ask(call.principal, bound.model, Endpoint(bound.endpoint).domain, estimate, price,
                  ttl_s=deadline - now + SETTLE_MARGIN_S, cost_nano=bound.cost_nano,
                  waits=False)
        admission = await self._admit(ask, call, request)
        record = _record(admission, call.tenant, upstream.name, bound, now, deadline)
        await self._store.batches.open(record)  # before upstream: a crash loses nothing
        status, answer = await self._create_upstream(upstream, body, record)
        if status < 300 and isinstance(answer.get("id"), str):
            await self._remember(call, BATCH, answer["id"], Owned(upstream.name))
            await self._store.batches.open(_started(record, answer["id"]))
        else:  # not created: nothing will bill
            await self._release(record)
        return _json(status, answer, budget_headers(admission))

    async def get_batch(self, request: web.Request, call: _Call) -> web.StreamResponse:
        return await self._owned_call(call, BATCH, request.match_info["id"], "GET", "")

    async def cancel(self, request: web.Request, call: _Call) -> web.StreamResponse:
        return await self._owned_call(call, BATCH, request.match_info["id"], "POST", "/cancel")

    async def list_batches(self, request: web.Request, call: _Call) -> web.StreamResponse:
        return await self._owned_list(request, call, BATCH, "/batches")

    async def _admit(self, ask: Ask, call: _Call, request: web.Request) -> Admission:
        gone = functools.partial(client_gone, request)
        try:
            with self._gate.hold(call.tenant, call.runtime.settings.limits, gone) as hold:
                return await self._admitter.admit(ask, self._config, hold)
        except BudgetExceeded as denied:
            self._denials.note(call.tenant, denied, ask.model, gateway_log.request_id.get())
            raise
        except StoreError as exc:
            slots = self._admitter.known_slots(ask, call.runtime.budgets)
            return unmetered(call.runtime.settings.on_store_error, slots, ask.estimate, exc)

    async def _check_room(self, call: _Call) -> None:
        """``limits.batches_per_tenant`` running batches at most: each holds a reservation
        and is polled until it ends."""
        most = call.runtime.settings.limits.batches_per_tenant
        running = sum(r.tenant == call.tenant for r in await self._store.batches.pending())
        if running >= most:
            raise TooManyConcurrent(
                f"Tenant '{call.tenant}' already has {most} batches running, the most this "
                "gateway allows one tenant (limits.batches_per_tenant); retry when one has "
                "ended.", headers={"Retry-After": "60"})

    async def _create_upstream(self, upstream: UpstreamSettings, body: Mapping[str, Any],
                               record: BatchRecord) -> tuple[int, dict[str, Any]]:
        """The upstream's answer; a lost one leaves the record, charged when its deadline
        passes (the batch may run unseen), as any answer lost after it was sent."""
        try:
            status, raw = await upstream_call(self._session, upstream, "POST", "/batches",
                                              data=orjson.dumps(body))
        except UpstreamError:
            log.error("batch creation's answer lost: reservation %s kept, charged after %s s",
                      record.rid, batch_settle.CREATE_WAIT_S)
            raise
        return status, _answer(upstream, status, raw)

    async def _release(self, record: BatchRecord) -> None:
        await self._store.settle(record.tenant, record.rid, record.held(0, 0), None,
                                 self._clock.now())
        await self._store.batches.close(record.rid)

    # -- owned objects -------------------------------------------------------------------

    async def _owner(self, call: _Call, kind: str, oid: str) -> UpstreamSettings:
        owned = await self._store.objects.get(call.tenant, kind, oid, self._clock.now())
        upstream = call.upstream(owned.upstream) if owned is not None else None
        if upstream is None:
            raise _not_found(kind, oid)
        return upstream

    async def _owned_call(self, call: _Call, kind: str, oid: str, method: str, suffix: str
                          ) -> web.Response:
        upstream = await self._owner(call, kind, oid)
        path = f"/{kind}s/{oid}{suffix}" if kind == FILE else f"/batches/{oid}{suffix}"
        status, raw = await upstream_call(self._session, upstream, method, path)
        answer = _answer(upstream, status, raw)
        if kind == BATCH and status < 300:
            await self._adopt_files(call, upstream, answer)
            if answer.get("status") in batch_settle.ENDED:
                self._ended()
        return _json(status, answer)

    async def _owned_list(self, request: web.Request, call: _Call, kind: str, path: str
                          ) -> web.Response:
        """The upstream's list, the tenant's own only: pages are read until ``limit`` are
        found or ``_LIST_PAGES`` pages were read (then ``has_more`` and ``last_id`` let the
        client go on from there)."""
        limit = _limit(request.query.get("limit"))
        after = request.query.get("after")
        found: list[dict[str, Any]] = []
        has_more = False
        upstream = call.runtime.settings.upstreams[0]  # lists read the first upstream
        for _ in range(_LIST_PAGES):
            query = {"limit": str(_LIST_MAX), **({"after": after} if after else {})}
            status, raw = await upstream_call(self._session, upstream, "GET", path, query)
            page = _answer(upstream, status, raw)
            if status >= 300:
                return _json(status, page)
            items = [i for i in page.get("data") or () if isinstance(i, dict)]
            read = 0
            for item in items:
                read += 1
                after = item.get("id") if isinstance(item.get("id"), str) else after
                if await self._mine(call, kind, item):
                    found.append(item)
                    if kind == BATCH:
                        await self._adopt_files(call, upstream, item)
                if len(found) == limit:
                    break
            has_more = read < len(items) or bool(page.get("has_more"))
            if len(found) == limit or not page.get("has_more"):
                break
        return _json(200, {"object": "list", "data": found,
                           "first_id": found[0]["id"] if found else None,
                           "last_id": after if has_more else (found[-1]["id"] if found
                                                              else None),
                           "has_more": has_more})

    async def _mine(self, call: _Call, kind: str, item: Mapping[str, Any]) -> bool:
        oid = item.get("id")
        return isinstance(oid, str) and await self._store.objects.get(
            call.tenant, kind, oid, self._clock.now()) is not None

    async def _adopt_files(self, call: _Call, upstream: UpstreamSettings,
                           batch: Mapping[str, Any]) -> None:
        """A batch's output and error files are its tenant's too."""
        for name in ("output_file_id", "error_file_id"):
            oid = batch.get(name)
            if isinstance(oid, str) and oid:
                await self._remember(call, FILE, oid, Owned(upstream.name))

    async def _remember(self, call: _Call, kind: str, oid: str, owned: Owned) -> None:
        await self._store.objects.put(call.tenant, kind, oid, owned, self._clock.now(),
                                      call.runtime.settings.limits.objects_per_tenant)

    async def _prior(self, call: _Call, _: Principal, body: Mapping[str, Any]) -> int | None:
        return await self._owners.prior_context(call.principal, body,
                                                call.runtime.settings.on_store_error)


def _record(admission: Admission, tenant: str, upstream: str, bound: FileBound, now: float,
            deadline: float) -> BatchRecord:
    """Its usage is recorded when it ends, with or without a budget to charge it to."""
    lines = tuple(HeldLine(s.key, s.window.name, s.max, s.enforce, s.is_cost)
                  for s in admission.slots)
    return BatchRecord(admission.rid or uuid.uuid4().hex, tenant, upstream, bound.model,
                       bound.endpoint, lines, bound.input_tokens, bound.output_tokens,
                       bound.cost_nano, now, deadline)


def _started(record: BatchRecord, batch_id: str) -> BatchRecord:
    return dataclasses.replace(record, batch_id=batch_id)


async def _parts(reader: Any) -> AsyncIterator[Any]:
    while True:
        part = await reader.next()
        if part is None:
            return
        yield part


async def _chunks(part: Any) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(1 << 16):
        yield chunk


def _line_too_long() -> InvalidRequest:
    return InvalidRequest(f"A line of the file is longer than {_LINE_MAX} bytes.",
                          param="file")


def _check_purpose(purpose: str) -> None:
    if purpose != "batch":
        raise InvalidRequest(
            "This gateway accepts files with purpose 'batch' only: it meters what a file is "
            "used for, and only a batch's requests are known from the file itself.",
            param="purpose")


def _limit(value: str | None) -> int:
    if value is None:
        return 20
    if not value.isdigit() or not 1 <= int(value) <= _LIST_MAX:
        raise InvalidRequest(f"'limit' must be an integer from 1 to {_LIST_MAX}.",
                             param="limit")
    return int(value)


def _auth(upstream: UpstreamSettings) -> dict[str, str]:
    return {"Authorization": f"Bearer {upstream.api_key}"} if upstream.api_key else {}


def _answer(upstream: UpstreamSettings, status: int, raw: bytes) -> dict[str, Any]:
    """The upstream's JSON object, its key redacted; an answer that is not one, in OpenAI's
    error shape."""
    if upstream.api_key and upstream.api_key.encode() in raw:
        raw = raw.replace(upstream.api_key.encode(), b"[redacted]")
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        return parsed
    error: GatewayError = unshaped_error(upstream.name, status) if status >= 400 else \
        UpstreamError(f"The upstream '{upstream.name}' answered HTTP {status} without a JSON "
                      "body.")
    return error.body()


def _json(status: int, answer: Mapping[str, Any], headers: Mapping[str, str] | None = None
          ) -> web.Response:
    return web.Response(body=orjson.dumps(answer), status=status, headers=headers,
                        content_type="application/json")


def _not_found(kind: str, oid: str) -> ResponseNotFound:
    return ResponseNotFound(f"No such {kind.capitalize()} object: {oid}", param="id")
