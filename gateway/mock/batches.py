"""The Batch API (both modes): a file of requests answered late, line by line, at batch prices.

``POST /v1/batches`` (``input_file_id`` of a ``batch`` file, ``endpoint``, ``completion_window``
``24h``, ``metadata``), ``GET /v1/batches`` (``limit``, ``after``; newest first), ``GET
/v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``; the files through ``gateway.mock.files``.

A batch is ``validating`` for ``VALIDATING_SHARE`` of its duration, then ``in_progress`` while
its lines complete one at a time, evenly over all but ``FINALIZING_SHARE`` of it (so a cancel
or an expiry mid-way leaves part of them done), then ``finalizing``, then ``completed``. Each
line is answered by the mock's own request path (``MockUpstream.answer_line``): the plan,
usage and worst-mode bill of the same request sent on its own, never streamed, billed when it
completes and marked in the ledger with the ``batch`` tier. A line answered 200 goes to the
output file, any other status to the error file; the output file lists its lines in the
reverse of the input order (OpenAI keeps no order: match them by ``custom_id``). A line that
is not a request to the batch's endpoint fails the whole batch at validation (``errors``, one
per line at fault; ``gateway.mock.batch_input``), before anything is billed. ``usage`` (the
billed lines' tokens) is zero until the batch ends.

The batch's ``metadata`` (string values, as OpenAI's) may ask for:

- ``mock_batch_duration_s``: its duration, instead of the app's ``batch_duration_s``;
- ``mock_expire_after_lines: K``: ``expired`` once K lines are done (they are billed and in
  the output file; the lines not run are in the error file as ``batch_expired``);
- ``mock_fail: "true"``: ``failed`` at validation (``token_limit_exceeded``), nothing billed;
- ``mock_flaky_gets: N``: its first N retrievals (``GET /v1/batches/{id}``) answer 500.

A cancel makes it ``cancelling`` at once (no line completes after it) and ``cancelled``
``FINALIZING_SHARE`` of its duration later, with the lines done before the cancel billed and in
the output file and the others in the error file as ``batch_cancelled``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import orjson
from aiohttp import web

from gateway.mock import batch_input, billing, send, stored
from gateway.mock.batch_input import Knobs, Line
from gateway.mock.faults import Fault
from gateway.mock.files import FileStore, StoredFile
from gateway.mock.shapes import JSON, MockError, Usage
from gateway.mock.stats import LedgerEntry, MockStats
from gateway.proxy.endpoints import Endpoint

BATCH_S = 0.5
BATCHES_LIMIT = 1_000
VALIDATING_SHARE = 0.1
FINALIZING_SHARE = 0.1
WINDOW_S = 86_400
_YIELD_EVERY = 64  # lines answered back to back before other tasks get a turn
_LIST_PAGE = (20, 100)
_ROUTE = "/batches"
_ENDED = ("completed", "expired", "cancelled", "failed")
_NOT_RUN = {
    "expired": ("batch_expired",
                "This request could not be executed before the completion window expired."),
    "cancelled": ("batch_cancelled",
                  "This request was not executed because the batch was cancelled."),
}


class Reply(NamedTuple):
    """A batch line's answer: status and JSON body; what it billed (None unless answered) and
    its ledger entry (worst mode)."""

    status: int
    body: bytes
    billed: Usage | None = None
    entry: LedgerEntry | None = None


LineAnswerer = Callable[[Endpoint, Any, str], Reply]
"""``answer(endpoint, body, batch_id)``: one line, answered as that request on its own is."""


@dataclass(slots=True, eq=False)
class Batch:
    """One batch: its request, where its run is, and what its lines answered so far."""

    id: str
    endpoint: Endpoint
    input_file_id: str
    metadata: JSON
    knobs: Knobs
    content: bytes  # the input file as it was when the batch was created
    created_at: int = field(default_factory=lambda: int(time.time()))
    status: str = "validating"
    times: dict[str, int] = field(default_factory=dict)  # "<status>_at" of each status reached
    model: str | None = None
    errors: list[JSON] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    total: int = 0
    output: list[bytes] = field(default_factory=list)
    error_lines: list[bytes] = field(default_factory=list)
    answered: list[LedgerEntry] = field(default_factory=list)  # entries of the output's lines
    billed: Counter[str] = field(default_factory=Counter)
    output_file_id: str | None = None
    error_file_id: str | None = None
    flaky_gets: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def move(self, status: str) -> None:
        self.status = status
        self.times[f"{status}_at"] = int(time.time())

    def body(self) -> JSON:
        usage = self.billed if self.status in _ENDED else Counter[str]()
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": f"/v1{self.endpoint.value}",
            "model": self.model,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": batch_input.WINDOW,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.created_at + WINDOW_S,
            **{f"{s}_at": self.times.get(f"{s}_at") for s in (
                "in_progress", "finalizing", "completed", "failed", "expired", "cancelling",
                "cancelled")},
            "request_counts": {"total": self.total, "completed": len(self.output),
                               "failed": len(self.error_lines)},
            "usage": {
                "input_tokens": usage["input_tokens"],
                "input_tokens_details": {"cached_tokens": usage["cached_tokens"]},
                "output_tokens": usage["output_tokens"],
                "output_tokens_details": {"reasoning_tokens": usage["reasoning_tokens"]},
                "total_tokens": usage["input_tokens"] + usage["output_tokens"],
            },
            "metadata": self.metadata,
        }


class Batches:
    """The batches, oldest first (the oldest dropped past ``limit``: a running one still runs
    and bills), and the tasks that run them."""

    def __init__(
        self, files: FileStore, answer: LineAnswerer, duration_s: float = BATCH_S,
        limit: int = BATCHES_LIMIT,
    ) -> None:
        self._files = files
        self._answer = answer
        self._duration_s = duration_s
        self._limit = limit
        self._kept: OrderedDict[str, Batch] = OrderedDict()
        self._running: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._line_ids = itertools.count(1)

    def create(self, body: Any) -> Batch:
        """Check a create request and start the batch; a MockError before anything starts."""
        if not isinstance(body, dict):
            raise MockError(400, "We could not parse the JSON body of your request. The body "
                            "must be a JSON object.")
        endpoint = batch_input.endpoint(body)
        metadata = batch_input.metadata(body)
        knobs = Knobs.read(metadata, self._duration_s)
        input_file = self._input_file(body)
        batch = Batch(f"batch_mock{next(self._ids):014d}", endpoint, input_file.id, metadata,
                      knobs, input_file.content, flaky_gets=knobs.flaky_gets)
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        self._kept[batch.id] = batch
        while len(self._kept) > self._limit:
            self._kept.popitem(last=False)
        return batch

    def get(self, batch_id: str) -> Batch | None:
        return self._kept.get(batch_id)

    def listed(self) -> list[Batch]:
        return list(self._kept.values())

    def cancel(self, batch: Batch) -> None:
        """``cancelling`` now; a second cancel changes nothing; a batch past its lines
        cannot be cancelled."""
        if batch.status in ("cancelling", "cancelled"):
            return
        if batch.status not in ("validating", "in_progress"):
            raise MockError(400, f"Cannot cancel a batch with status '{batch.status}'.")
        batch.move("cancelling")
        batch.stop.set()

    async def close(self) -> None:
        """Stop every run (the app is shutting down): no more line is answered or billed."""
        running = list(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    def _input_file(self, body: JSON) -> StoredFile:
        file_id = body.get("input_file_id")
        if not isinstance(file_id, str) or not file_id:
            raise MockError(400, "Missing required parameter: 'input_file_id'.",
                            param="input_file_id", code="missing_required_parameter")
        found = self._files.get(file_id)
        if found is None:
            raise MockError(404, f"No such File object: {file_id}", param="input_file_id")
        if found.purpose != "batch":
            raise MockError(400, f"File {file_id} was not uploaded with purpose 'batch'.",
                            param="input_file_id")
        return found

    # -- the run -----------------------------------------------------------------------------

    async def _run(self, batch: Batch) -> None:
        duration = batch.knobs.duration
        if await _pause(batch, duration * VALIDATING_SHARE):
            await self._end(batch, "cancelled")  # nothing validated: no file
            return
        batch.lines, batch.errors = batch_input.parse_lines(batch.content, batch.endpoint)
        batch.content = b""
        if batch.errors or batch.knobs.fail:
            if not batch.errors:
                batch.errors = [batch_input.token_limit(batch.lines)]
            batch.lines = []
            batch.move("failed")
            return
        batch.model = batch_input.model(batch.lines)
        batch.total = len(batch.lines)
        batch.move("in_progress")
        ended = await self._run_lines(batch, duration * (1 - VALIDATING_SHARE - FINALIZING_SHARE))
        if ended == "completed":
            batch.move("finalizing")
        await self._end(batch, ended)

    async def _run_lines(self, batch: Batch, seconds: float) -> str:
        """Answer the lines evenly over ``seconds``; how the run ends: ``completed``,
        ``expired`` or ``cancelled``."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        step = seconds / len(batch.lines)
        for i, line in enumerate(batch.lines):
            if i == batch.knobs.expire_after:
                self._not_run(batch, i, "expired")
                return "expired"
            if await _pause(batch, start + (i + 1) * step - loop.time()):
                self._not_run(batch, i, "cancelled")
                return "cancelled"
            self._answer_line(batch, line)
            if i % _YIELD_EVERY == _YIELD_EVERY - 1:
                await asyncio.sleep(0)
        return "completed"

    def _answer_line(self, batch: Batch, line: Line) -> None:
        reply = self._answer(batch.endpoint, line.body, batch.id)
        number = next(self._line_ids)
        response = {"status_code": reply.status, "request_id": f"req_mock{number:014d}",
                    "body": orjson.Fragment(reply.body)}
        record = orjson.dumps({"id": f"batch_req_mock{number:014d}", "custom_id": line.custom_id,
                               "response": response, "error": None}) + b"\n"
        if reply.status != 200 or reply.billed is None:
            batch.error_lines.append(record)
            return
        batch.output.append(record)
        batch.billed.update(asdict(reply.billed))
        if reply.entry is not None:
            batch.answered.append(reply.entry)

    def _not_run(self, batch: Batch, start: int, why: str) -> None:
        code, message = _NOT_RUN[why]
        for line in batch.lines[start:]:
            number = next(self._line_ids)
            batch.error_lines.append(orjson.dumps({
                "id": f"batch_req_mock{number:014d}", "custom_id": line.custom_id,
                "response": None, "error": {"code": code, "message": message},
            }) + b"\n")

    async def _end(self, batch: Batch, status: str) -> None:
        if status in ("completed", "cancelled"):  # finalizing, cancelling: a while yet
            await asyncio.sleep(batch.knobs.duration * FINALIZING_SHARE)
        if batch.output:
            batch.output_file_id = self._files.add(
                f"{batch.id}_output.jsonl", "batch_output", b"".join(reversed(batch.output))
            ).id
            for entry in batch.answered:
                billing.delivered(entry, True)
        if batch.error_lines:
            batch.error_file_id = self._files.add(
                f"{batch.id}_error.jsonl", "batch_output", b"".join(batch.error_lines)
            ).id
        batch.lines = []
        batch.answered = []
        batch.move(status)


async def _pause(batch: Batch, seconds: float) -> bool:
    """Wait ``seconds``; True as soon as the batch is being cancelled."""
    if batch.stop.is_set() or seconds <= 0:
        return batch.stop.is_set()
    try:
        async with asyncio.timeout(seconds):
            await batch.stop.wait()
    except TimeoutError:
        return False
    return True


class BatchRoutes:
    """The Batch API's routes; every one checks the key."""

    def __init__(
        self, batches: Batches, check_key: Callable[[web.Request], None], stats: MockStats
    ) -> None:
        self._batches = batches
        self._check_key = check_key
        self._stats = stats

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/batches", self.create),
            web.get("/v1/batches", self.listing, allow_head=False),
            web.get("/v1/batches/{id}", self.retrieve, allow_head=False),
            web.post("/v1/batches/{id}/cancel", self.cancel),
        ]

    async def create(self, request: web.Request) -> web.StreamResponse:
        try:
            self._check_key(request)
            try:
                body = orjson.loads(await request.read())
            except orjson.JSONDecodeError:
                body = None
            batch = self._batches.create(body)
        except MockError as exc:
            return self._refuse(exc)
        return self._json(batch.body())

    async def listing(self, request: web.Request) -> web.StreamResponse:
        try:
            self._check_key(request)
            bodies = [batch.body() for batch in self._batches.listed()]
            page = stored.page(bodies, request.query, _LIST_PAGE)
        except MockError as exc:
            return self._refuse(exc)
        return self._json(page)

    async def retrieve(self, request: web.Request) -> web.StreamResponse:
        try:
            batch = self._find(request)
        except MockError as exc:
            return self._refuse(exc)
        if batch.flaky_gets > 0:
            batch.flaky_gets -= 1
            self._stats.faulted[_ROUTE] += 1
            return send.fault_response(Fault(status=500))
        return self._json(batch.body())

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        try:
            batch = self._find(request)
            self._batches.cancel(batch)
        except MockError as exc:
            return self._refuse(exc)
        return self._json(batch.body())

    def _find(self, request: web.Request) -> Batch:
        self._check_key(request)
        batch_id = request.match_info["id"]
        batch = self._batches.get(batch_id)
        if batch is None:
            raise MockError(404, f"No batch found with id '{batch_id}'.", param="batch_id")
        return batch

    def _json(self, body: JSON) -> web.Response:
        self._stats.requests[_ROUTE] += 1
        return send.json_response(orjson.dumps(body))

    def _refuse(self, exc: MockError) -> web.Response:
        self._stats.errors[_ROUTE] += 1
        return send.error_response(exc)
