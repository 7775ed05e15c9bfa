"""Stored Responses: who owns which response, the routes that read them, and background
responses settled when they end.

A response created through the gateway is its tenant's: ``GET``, ``DELETE``, ``cancel`` and
``input_items`` are forwarded for that tenant only, and ``previous_response_id`` may name only
the tenant's own responses; any other tenant gets OpenAI's 404, as for an id that never existed.

``background: true`` answers at once with a queued response and bills later. The gateway keeps
the reservation, polls the response until it ends (for at most the upstream's ``timeout_s``,
then cancels it), and settles it from its final usage: never before, never on a guess smaller
than the reservation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from gateway.clock import Clock
from gateway.errors import (
    GatewayError,
    NotFound,
    ResponseNotFound,
    StoreUnavailable,
    TooManyBackground,
    UpstreamError,
)
from gateway.proxy.auth import Principal
from gateway.proxy.budgets import Admission
from gateway.proxy.forward import Exchange, unshaped_error
from gateway.proxy.record import Recorder, Settlement
from gateway.proxy.resolve import Target
from gateway.proxy.usage import from_body
from gateway.runtime import Runtime
from gateway.settings.schema import StoreErrorPolicy, UpstreamSettings
from gateway.store.base import StoreError
from gateway.store.objects import PER_TENANT, ObjectOwners, Owned

log = logging.getLogger(__name__)

KIND = "response"
MAX_BACKGROUND = 10_000  # background responses one process follows at once
CALL_TIMEOUT_S = 30.0  # one retrieval, poll or cancel
FOLLOW_MARGIN_S = 3 * CALL_TIMEOUT_S  # past the poll deadline: a last poll, cancel, final read
_POLL_S = (0.5, 1.0, 2.0, 5.0)  # polling slows down as a response runs on
_MAX_ANSWER = 32 * 1024 * 1024  # bytes read from the upstream for a retrieval
_TERMINAL = frozenset({"completed", "failed", "incomplete", "cancelled"})
_BILLED_WITHOUT_USAGE = frozenset({"cancelled", "incomplete"})  # work done, amount unknown


def not_found(oid: str) -> GatewayError:
    return ResponseNotFound(f"No response found with id '{oid}'.")


class ResponseOwners:
    """Ownership and context size of responses, through the store."""

    def __init__(self, objects: ObjectOwners, clock: Clock,
                 keep: Callable[[], int] = lambda: PER_TENANT) -> None:
        self._objects = objects
        self._clock = clock
        self._keep = keep  # limits.objects_per_tenant, as configured now

    async def prior_context(self, principal: Principal, body: Mapping[str, Any],
                            policy: StoreErrorPolicy) -> int | None:
        """The context an earlier response carries into this turn, if the gateway knows it.

        Another tenant's (or an unknown) ``previous_response_id`` is OpenAI's 404."""
        previous = body.get("previous_response_id")
        if not isinstance(previous, str):
            return None
        try:
            owned = await self._objects.get(principal.tenant, KIND, previous, self._clock.now())
        except StoreError as exc:
            if policy is StoreErrorPolicy.REJECT:
                raise StoreUnavailable("The gateway cannot check response ownership right now "
                                       "(its store is unreachable); retry shortly.") from exc
            return None  # fail open, as on_store_error: allow says; bounded by the context
        if owned is None:
            raise NotFound(f"Previous response with id '{previous}' not found.",
                           param="previous_response_id", code="previous_response_not_found")
        return owned.context_tokens

    async def remember(self, principal: Principal, target: Target, oid: str,
                       context_tokens: int | None) -> None:
        try:
            await self._objects.put(principal.tenant, KIND, oid,
                                    Owned(target.upstream.name, context_tokens),
                                    self._clock.now(), self._keep())
        except StoreError as exc:
            log.warning("response %s not recorded as its tenant's: %s", oid, exc)

    async def owned(self, tenant: str, oid: str) -> Owned | None:
        return await self._objects.get(tenant, KIND, oid, self._clock.now())

    async def forget(self, tenant: str, oid: str) -> None:
        await self._objects.delete(tenant, KIND, oid)


class BackgroundResponses:
    """Follows background responses to their end and settles each once."""

    def __init__(self, session: aiohttp.ClientSession, recorder: Recorder,
                 owners: ResponseOwners, clock: Clock) -> None:
        self._session = session
        self._recorder = recorder
        self._owners = owners
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def check_room(self) -> None:
        if len(self._tasks) >= MAX_BACKGROUND:
            raise TooManyBackground(
                f"This gateway is following {MAX_BACKGROUND} background responses already; "
                "retry when some have finished."
            )

    def adopt(self, principal: Principal, target: Target, admission: Admission,
              oid: str) -> None:
        task = asyncio.create_task(self._follow(principal, target, admission, oid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """At shutdown: each response still running is charged its reservation (it may still
        bill), never released."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _follow(self, principal: Principal, target: Target, admission: Admission,
                      oid: str) -> None:
        exchange = Exchange(ok=True)
        try:
            final = await self._until_done(target.upstream, oid)
            if final is None:  # past the deadline: stop it, then read what it came to
                await self._call(target.upstream, "POST", oid, "/cancel")
                final = await self._call(target.upstream, "GET", oid)
            _read_final(final, exchange)
        except asyncio.CancelledError:
            exchange.lost = True
            await asyncio.shield(self._settle(principal, target, admission, exchange, oid))
            raise
        await self._settle(principal, target, admission, exchange, oid)

    async def _until_done(self, upstream: UpstreamSettings, oid: str) -> dict[str, Any] | None:
        deadline = self._clock.now() + upstream.timeout_s
        polls = 0
        while self._clock.now() < deadline:
            await self._clock.sleep(_POLL_S[min(polls, len(_POLL_S) - 1)])
            polls += 1
            answer = await self._call(upstream, "GET", oid)
            if answer is not None and answer.get("status") in _TERMINAL:
                return answer
        return None

    async def _call(self, upstream: UpstreamSettings, method: str, oid: str,
                    suffix: str = "") -> dict[str, Any] | None:
        """One upstream call; None when it fails (the poll goes on until its deadline)."""
        try:
            status, body = await upstream_call(self._session, upstream, method,
                                               f"/responses/{oid}{suffix}")
        except UpstreamError as exc:
            log.warning("background response %s: %s", oid, exc.message)
            return None
        parsed = _json(body)
        return parsed if status < 400 and parsed is not None else None

    async def _settle(self, principal: Principal, target: Target, admission: Admission,
                      exchange: Exchange, oid: str) -> None:
        settlement: Settlement = await self._recorder.settle(principal, target, admission,
                                                             exchange)
        tokens = context_tokens(settlement)
        await self._owners.remember(principal, target, oid, tokens)
        log.info("background response settled id=%s tenant=%s tokens=%s exact=%s", oid,
                 principal.tenant, tokens, settlement.exact)


def context_tokens(settlement: Settlement) -> int | None:
    """What a response carries into the next turn: its input and output, when the upstream
    reported them (a count of the text would miss reasoning; then the context window bounds
    the next turn instead)."""
    if settlement.usage is None or not settlement.exact:
        return None
    return settlement.usage.total_tokens


def _read_final(final: Mapping[str, Any] | None, exchange: Exchange) -> None:
    """What the final state says: its usage; none on a failure (nothing billed); the
    reservation when it did work but says nothing (cancelled or cut short, or never read)."""
    if final is None:
        exchange.lost = True
        return
    exchange.reported = from_body(final)
    if exchange.reported is None:
        if final.get("status") == "failed":
            exchange.ok = False
        elif final.get("status") in _BILLED_WITHOUT_USAGE:
            exchange.lost = True


async def upstream_call(session: aiohttp.ClientSession, upstream: UpstreamSettings,
                        method: str, path: str, query: Mapping[str, str] | None = None,
                        data: Any = None) -> tuple[int, bytes]:
    """One call to ``path`` below the upstream's ``base_url``, its answer read (bounded)."""
    url = f"{upstream.base_url}{path}"
    headers = {"Authorization": f"Bearer {upstream.api_key}"} if upstream.api_key else {}
    try:
        async with session.request(method, url, headers=headers, params=query, data=data,
                                   timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)) as resp:
            body = await resp.content.read(_MAX_ANSWER)
            return resp.status, body
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UpstreamError(f"The upstream '{upstream.name}' could not be reached: "
                            f"{type(exc).__name__}.") from None


def _json(body: bytes) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


class StoredResponseRoutes:
    """``/v1/responses/{id}`` and its sub-resources, for the owning tenant only."""

    def __init__(self, config: Callable[[], Runtime], owners: ResponseOwners,
                 session: aiohttp.ClientSession) -> None:
        self._config = config
        self._owners = owners
        self._session = session

    async def handle(self, request: web.Request, method: str, suffix: str) -> web.Response:
        runtime = self._config()
        principal = runtime.keyring.authenticate(request.headers.get("Authorization"))
        oid = request.match_info["response_id"]
        owned = await self._owners.owned(principal.tenant, oid)
        upstream = next((u for u in runtime.settings.upstreams if u.name == owned.upstream),
                        None) if owned is not None else None
        if owned is None or upstream is None:
            raise not_found(oid)
        query = {k: v for k, v in request.query.items()} if suffix else None
        status, body = await upstream_call(self._session, upstream, method,
                                           f"/responses/{oid}{suffix}", query)
        if upstream.api_key and upstream.api_key.encode() in body:
            body = body.replace(upstream.api_key.encode(), b"[redacted]")
        if method == "DELETE" and status < 300:
            await self._owners.forget(principal.tenant, oid)
        if _json(body) is None:  # a proxy's page, a plain-text error: said in OpenAI's shape
            error = unshaped_error(upstream.name, status) if status >= 400 else UpstreamError(
                f"The upstream '{upstream.name}' answered HTTP {status} without a JSON body.")
            return web.json_response(error.body(), status=error.status)
        return web.Response(body=body, status=status, content_type="application/json")
