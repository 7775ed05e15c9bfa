"""Settles batches when they end: each line's reported usage at batch prices, the rest released.

A poller in every instance reads the store's running batches every ``limits.batch_poll_s``.
One instance at a time claims a batch (a lease in the store) and asks the upstream how it
stands; once it has ended (completed, expired or cancelled: the lines done are billed; failed:
nothing is), its output file is read line by line and the sum is charged in the batch's
reservation. The store's ``settle`` is idempotent, so a batch is charged once whoever settles
it and whatever crashes. A batch whose end cannot be learned by its deadline (a lost creation
answer, an upstream that never says) is charged its reservation, marked as an estimate: it may
have run, and what it bills is never more than what was reserved.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from gateway.clock import Clock
from gateway.cost.model import Usage, batch_provider, nano_to_usd
from gateway.cost.pricing import Price
from gateway.errors import UpstreamError
from gateway.proxy.batch_file import BATCH_TIER, jsonl_lines
from gateway.proxy.responses import CALL_TIMEOUT_S, upstream_call
from gateway.proxy.usage import from_body
from gateway.runtime import Runtime
from gateway.settings.schema import UpstreamSettings
from gateway.store.base import Store, StoreError
from gateway.store.batches import BatchRecord

log = logging.getLogger(__name__)

ENDED = frozenset({"completed", "expired", "cancelled", "failed"})
LEASE_S = 300.0  # one instance reads a batch's outcome meanwhile
CREATE_WAIT_S = 2 * CALL_TIMEOUT_S  # a record still without its batch id after this: lost
_ROUND_MIN_S = 1.0  # between two rounds, however often a round is asked for
_LINE_MAX = 64 * 1024 * 1024  # one line of an output file


@dataclass(slots=True)
class Outcome:
    """What a batch's output file says was billed, at batch prices."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_nano: int = 0
    requests: int = 0
    unreadable: int = 0  # lines that carried no usage to read

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add(self, line: bytes, price: Price) -> None:
        try:
            entry = orjson.loads(line)
            response = entry.get("response") or {}
            body = response.get("body") or {}
            ok = response.get("status_code") == 200
        except (orjson.JSONDecodeError, AttributeError):
            self.unreadable += 1
            return
        reported = from_body(body) if ok and isinstance(body, Mapping) else None
        if reported is None:
            self.unreadable += ok
            return
        self.input_tokens += reported.input_tokens
        self.output_tokens += reported.output_tokens
        self.cached_tokens += reported.cached_tokens
        self.cost_nano += price.charge_nano(reported, BATCH_TIER)
        self.requests += 1


class BatchSettler:
    def __init__(self, config: Callable[[], Runtime], store: Store,
                 session: aiohttp.ClientSession, clock: Clock) -> None:
        self._config = config
        self._store = store
        self._session = session
        self._clock = clock
        self.settled = 0  # batches this process settled
        self._woken = asyncio.Event()
        self.running = 0  # batches holding a reservation, as of the last round
        self.over_reservation = 0  # of those, billed above their bound (charged at it)

    def wake(self) -> None:
        """A client saw a batch end: the next round starts now rather than at its time (at
        most one round per ``_ROUND_MIN_S``, however often clients look)."""
        self._woken.set()

    async def run(self) -> None:
        while True:
            await self._clock.sleep(min(_ROUND_MIN_S, self._poll_s()))
            await self._nap(self._poll_s() - _ROUND_MIN_S)
            try:
                await self.poll()
            except Exception:  # the poller must outlive anything one round meets
                log.exception("batch settlement round failed")

    def _poll_s(self) -> float:
        return self._config().settings.limits.batch_poll_s

    async def _nap(self, seconds: float) -> None:
        """Up to ``seconds``, less when woken."""
        if seconds > 0 and not self._woken.is_set():
            sleeping = asyncio.ensure_future(self._clock.sleep(seconds))
            woken = asyncio.ensure_future(self._woken.wait())
            try:
                await asyncio.wait((sleeping, woken), return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeping.cancel()
                woken.cancel()
        self._woken.clear()

    async def poll(self) -> int:
        """One round over every running batch; how many it settled."""
        try:
            records = await self._store.batches.pending()
        except StoreError as exc:
            log.warning("running batches not read, store unavailable: %s", exc)
            return 0
        self.running = len(records)
        settled = 0
        for record in records:
            try:
                settled += await self._one(record)
            except StoreError as exc:
                log.warning("batch %s not settled yet, store unavailable: %s", record.rid, exc)
        return settled

    async def _one(self, record: BatchRecord) -> bool:
        now = self._clock.now()
        if record.batch_id is None and now < record.created + CREATE_WAIT_S:
            return False  # being created right now
        runtime = self._config()
        upstream = next((u for u in runtime.settings.upstreams if u.name == record.upstream),
                        None)
        price = runtime.router.prices.lookup(record.model)
        ended = None
        if record.batch_id is not None and upstream is not None and price is not None:
            ended = await self._ended(upstream, record.batch_id)
        if ended is None and now < record.deadline:
            return False
        if not await self._store.batches.claim(record.rid, now + LEASE_S, now):
            return False  # another instance reads it
        outcome = None
        if ended is not None and upstream is not None and price is not None:
            outcome = await self._outcome(upstream, price, ended)
        if outcome is None:
            if now < record.deadline:
                return False  # read again at the next round, by whoever claims it then
            log.error("batch %s (%s) did not end by its deadline: charged its reservation",
                      record.batch_id, record.rid)
        await self._charge(record, outcome)
        return True

    async def _ended(self, upstream: UpstreamSettings, batch_id: str
                     ) -> Mapping[str, Any] | None:
        """The batch, once it has ended; None while it runs or cannot be read."""
        batch = await self._get(upstream, f"/batches/{batch_id}")
        return batch if batch is not None and batch.get("status") in ENDED else None

    async def _outcome(self, upstream: UpstreamSettings, price: Price,
                       batch: Mapping[str, Any]) -> Outcome | None:
        """What the ended batch's output file says was billed; None if it cannot be read."""
        outcome = Outcome()
        output = batch.get("output_file_id")
        if isinstance(output, str) and output:
            try:
                async for line in self._lines(upstream, output):
                    outcome.add(line, price)
            except UpstreamError as exc:
                log.warning("batch %s output not read yet: %s", batch.get("id"), exc.message)
                return None
        return outcome

    async def _charge(self, record: BatchRecord, outcome: Outcome | None) -> None:
        now = self._clock.now()
        exact = outcome is not None
        tokens = outcome.tokens if outcome else record.tokens
        cost = outcome.cost_nano if outcome else record.cost_nano
        if tokens > record.tokens or cost > record.cost_nano:
            self.over_reservation += 1
            log.error("batch billed above its reservation, charged at its bound: batch=%s "
                      "tokens=%d/%d cost_nano=%d/%d", record.batch_id, tokens, record.tokens,
                      cost, record.cost_nano)
        tokens, cost = min(tokens, record.tokens), min(cost, record.cost_nano)
        usage = None if tokens == 0 and cost == 0 else Usage(
            input_tokens=outcome.input_tokens if outcome else record.input_tokens,
            output_tokens=outcome.output_tokens if outcome else record.output_tokens,
            cached_tokens=outcome.cached_tokens if outcome else 0,
            total_tokens=tokens, cost=nano_to_usd(cost), model=record.model,
            provider=batch_provider(record.upstream), tenant_id=record.tenant, timestamp=now,
            estimated=not exact)
        first = await self._store.settle(record.tenant, record.rid, record.held(tokens, cost),
                                         usage, now)
        await self._store.batches.close(record.rid)
        if first:
            self.settled += 1
            log.info("batch settled id=%s tenant=%s requests=%s tokens=%d cost_nano=%d exact=%s",
                     record.batch_id, record.tenant, outcome.requests if outcome else "?",
                     tokens, cost, exact)

    async def _get(self, upstream: UpstreamSettings, path: str) -> dict[str, Any] | None:
        try:
            status, raw = await upstream_call(self._session, upstream, "GET", path)
        except UpstreamError as exc:
            log.warning("batch poll %s: %s", path, exc.message)
            return None
        with contextlib.suppress(orjson.JSONDecodeError):
            parsed = orjson.loads(raw)
            if status < 300 and isinstance(parsed, dict):
                return parsed
        return None

    async def _lines(self, upstream: UpstreamSettings, file_id: str) -> AsyncIterator[bytes]:
        """An output file's lines as they arrive: never held whole."""
        url = f"{upstream.base_url}/files/{file_id}/content"
        headers = {"Authorization": f"Bearer {upstream.api_key}"} if upstream.api_key else {}
        try:
            async with self._session.get(url, headers=headers) as resp:
                if resp.status >= 300:
                    raise UpstreamError(f"HTTP {resp.status} for the output file {file_id}")
                chunks = resp.content.iter_chunked(1 << 16)
                async for line in jsonl_lines(chunks, _LINE_MAX, functools.partial(
                        UpstreamError, f"a line of the output file {file_id} is longer than "
                        f"{_LINE_MAX} bytes")):
                    if line.strip():
                        yield line
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(f"the output file {file_id} could not be read: "
                                f"{type(exc).__name__}") from None


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
