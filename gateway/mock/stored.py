"""Stored responses (worst mode): the Responses API's ``store`` and ``background``.

Every Responses answer not sent with ``store: false`` is kept by id (the last ``limit``), so
``previous_response_id`` can bill its tokens again and the retrieve, delete, cancel and
input-items routes can find it. A background response answers at once ``queued``; on the
event loop's clock it is ``in_progress`` after ``QUEUED_SHARE`` of its time and ends (and is
billed) after ``metadata.mock_background_s`` seconds. A cancel before then bills what it had
produced: all its input once in progress, its output in proportion to the time it ran.
Deleting a running background response (or its falling out of the store) does not stop it:
it still ends, and bills, on time.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import orjson
from aiohttp import web

from gateway.mock import fields, send
from gateway.mock.shapes import (
    JSON,
    MockError,
    Plan,
    Usage,
    final_status,
    response_object,
    response_output,
    responses_usage,
)
from gateway.mock.stats import Ledger, LedgerEntry

STORED_LIMIT = 10_000
BACKGROUND_S = 1.0
QUEUED_SHARE = 0.1
_ITEMS_PAGE = (20, 100)  # input_items: default and largest ``limit``


@dataclass(slots=True, eq=False)  # compared and hashed by identity: kept in a set
class Stored:
    """One kept response; a background one runs from ``started`` for ``duration`` seconds."""

    plan: Plan
    items: list[JSON]
    entry: LedgerEntry | None = None
    background: bool = False
    started: float = 0.0
    duration: float = 0.0
    ended: bool = True
    cancelled: Usage | None = None
    timer: asyncio.TimerHandle | None = None

    def status(self, now: float) -> str:
        if self.cancelled is not None:
            return "cancelled"
        if self.ended:
            return final_status(self.plan)
        return "queued" if now - self.started <= self._queued_s else "in_progress"

    def body(self, now: float) -> JSON:
        status = self.status(now)
        output: list[JSON] = []
        usage = self.cancelled
        if status not in ("queued", "in_progress", "cancelled"):
            output = response_output(self.plan)
            usage = self.plan.billed if self.plan.usage else None
        return response_object(self.plan, status, output, usage)

    def tokens(self) -> int:
        """Input and output tokens a later response that continues this one reads again."""
        usage = self.cancelled or self.plan.billed
        return usage.input_tokens + usage.output_tokens

    def produced(self, now: float) -> Usage:
        """What it billed had it stopped at ``now``: nothing while queued, then all its input
        and searches, and its output in proportion to the time it has been in progress."""
        ran = now - self.started - self._queued_s
        if ran <= 0:
            return Usage(input_tokens=0, output_tokens=0)
        running_s = self.duration - self._queued_s
        share = min(ran / running_s, 1.0) if running_s > 0 else 1.0
        billed = self.plan.billed
        return replace(
            billed,
            output_tokens=math.floor(billed.output_tokens * share),
            reasoning_tokens=math.floor(billed.reasoning_tokens * share),
            output_audio_tokens=math.floor(billed.output_audio_tokens * share),
            rejected_prediction_tokens=math.floor(billed.rejected_prediction_tokens * share),
        )

    @property
    def _queued_s(self) -> float:
        return self.duration * QUEUED_SHARE


class ResponseStore:
    """The kept responses, oldest first; the running background ones and their timers."""

    def __init__(self, ledger: Ledger, limit: int = STORED_LIMIT) -> None:
        self._ledger = ledger
        self._limit = limit
        self._kept: OrderedDict[str, Stored] = OrderedDict()
        self._running: set[Stored] = set()

    def __len__(self) -> int:
        return len(self._kept)

    def keep(self, stored: Stored) -> None:
        self._kept[stored.plan.id] = stored
        while len(self._kept) > self._limit:
            self._kept.popitem(last=False)  # a running one still ends and bills

    def get(self, response_id: str) -> Stored | None:
        return self._kept.get(response_id)

    def pop(self, response_id: str) -> Stored | None:
        return self._kept.pop(response_id, None)

    def previous_tokens(self, response_id: str) -> int | None:
        stored = self._kept.get(response_id)
        return None if stored is None else stored.tokens()

    def start(self, stored: Stored) -> None:
        """Run a background response until its time is up, then bill it."""
        loop = asyncio.get_running_loop()
        stored.started = loop.time()
        stored.ended = False
        stored.timer = loop.call_at(stored.started + stored.duration, self._end, stored)
        self._running.add(stored)

    def cancel(self, stored: Stored, now: float) -> None:
        """Stop a running background response and bill what it produced; once ended, a no-op
        (a second cancel returns the response as it is, as OpenAI does)."""
        if stored.ended or stored.timer is None:
            return
        stored.timer.cancel()
        stored.cancelled = stored.produced(now)
        self._finish(stored, stored.cancelled, "cancelled")

    def close(self) -> None:
        """Stop every timer (the app is shutting down): nothing more is billed."""
        for stored in self._running:
            if stored.timer is not None:
                stored.timer.cancel()
        self._running.clear()

    def _end(self, stored: Stored) -> None:
        self._finish(stored, stored.plan.billed, "billed")

    def _finish(self, stored: Stored, usage: Usage, state: str) -> None:
        stored.ended = True
        self._running.discard(stored)
        if stored.entry is not None:
            self._ledger.bill(stored.entry, responses_usage(usage), asdict(usage), state)


def background_wanted(body: JSON) -> bool:
    """``background: true``, checked: it needs ``store`` and (in this mock) no ``stream``."""
    if body.get("background") is not True:
        return False
    if body.get("store") is False:
        raise MockError(400, "Background mode requires 'store' to be true.", param="store")
    if body.get("stream") is True:
        raise MockError(
            400, "mock upstream: background responses cannot be streamed by this mock.",
            param="stream", code="unsupported_by_mock",
        )
    return True


def background_seconds(body: JSON) -> float:
    return fields.metadata_seconds(body, "mock_background_s", BACKGROUND_S)


def input_items(body: JSON, plan_id: str) -> list[JSON]:
    """The request's ``input`` as the items OpenAI lists for it, each with an id."""
    given = body.get("input")
    raw: list[Any] = [{"role": "user", "content": given}] if isinstance(given, str) else (
        given if isinstance(given, list) else []
    )
    suffix = plan_id.removeprefix("resp_")
    return [_item(item, f"{suffix}_in{i:03d}") for i, item in enumerate(raw)
            if isinstance(item, dict)]


def _item(item: JSON, suffix: str) -> JSON:
    item = dict(item)
    kind = item.setdefault("type", "message")
    content = item.get("content")
    if kind == "message" and isinstance(content, str):
        part = "output_text" if item.get("role") == "assistant" else "input_text"
        item["content"] = [{"type": part, "text": content}]
    item.setdefault("id", f"{'msg' if kind == 'message' else 'item'}_{suffix}")
    return item


class StoredRoutes:
    """``GET``/``DELETE /v1/responses/{id}``, ``POST .../cancel``, ``GET .../input_items``."""

    def __init__(self, store: ResponseStore, check_key: Callable[[web.Request], None]) -> None:
        self._store = store
        self._check_key = check_key

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/responses/{id}", self.retrieve, allow_head=False),
            web.delete("/v1/responses/{id}", self.delete),
            web.post("/v1/responses/{id}/cancel", self.cancel),
            web.get("/v1/responses/{id}/input_items", self.input_items, allow_head=False),
        ]

    async def retrieve(self, request: web.Request) -> web.StreamResponse:
        try:
            stored = self._find(request)
        except MockError as exc:
            return send.error_response(exc)
        return _json(stored.body(_now()))

    async def delete(self, request: web.Request) -> web.StreamResponse:
        try:
            stored = self._find(request)
        except MockError as exc:
            return send.error_response(exc)
        self._store.pop(stored.plan.id)
        return _json({"id": stored.plan.id, "object": "response.deleted", "deleted": True})

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        try:
            stored = self._find(request)
            if not stored.background:
                raise MockError(400, "Cannot cancel a synchronous response.")
        except MockError as exc:
            return send.error_response(exc)
        now = _now()
        self._store.cancel(stored, now)
        return _json(stored.body(now))

    async def input_items(self, request: web.Request) -> web.StreamResponse:
        try:
            stored = self._find(request)
            listed = page(stored.items, request.query)
        except MockError as exc:
            return send.error_response(exc)
        return _json(listed)

    def _find(self, request: web.Request) -> Stored:
        self._check_key(request)
        response_id = request.match_info["id"]
        stored = self._store.get(response_id)
        if stored is None:
            raise MockError(404, f"No response found with id '{response_id}'.")
        return stored


def page(items: list[JSON], query: Any, limits: tuple[int, int] = _ITEMS_PAGE) -> JSON:
    """One page of a list (oldest first), in OpenAI's list shape: ``order`` (``desc`` by
    default, as OpenAI), ``limit`` (``limits``: its default and largest), ``after`` (an id)."""
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise MockError(400, "order must be 'asc' or 'desc'", param="order")
    ordered = items if order == "asc" else items[::-1]
    limit_text = query.get("limit", str(limits[0]))
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= limits[1]:
        raise MockError(400, f"limit must be an integer from 1 to {limits[1]}", param="limit")
    after = query.get("after")
    ids = [item["id"] for item in ordered]
    start = ids.index(after) + 1 if after in ids else 0
    data = ordered[start : start + int(limit_text)]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": start + len(data) < len(ordered),
    }


def _json(body: JSON) -> web.Response:
    return send.json_response(orjson.dumps(body))


def _now() -> float:
    return asyncio.get_running_loop().time()
