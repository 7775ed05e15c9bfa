"""Budget alerts: a log line at once, and a webhook POST sent in the background.

Sending never blocks a request: alerts go on a bounded queue drained by one task, retried with
backoff; a full queue drops the oldest alert with a warning rather than holding memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

import aiohttp
import orjson

from gateway.cost.model import Limit, nano_to_usd

log = logging.getLogger(__name__)

_QUEUE_MAX = 1000
_TRIES = 5


@dataclass(frozen=True, slots=True)
class Alert:
    budget: str
    tenant: str
    limit: str
    window: str
    used: int
    max: int
    ratio: float
    time: float

    def header(self) -> str:
        return f"{self.budget}:{self.limit}:{self.ratio:.4f}"

    def payload(self) -> dict[str, object]:
        body = asdict(self)
        body["time"] = dt.datetime.fromtimestamp(self.time, dt.UTC).isoformat()
        body["ratio"] = round(self.ratio, 6)
        if Limit(self.limit).is_cost:
            body["used"] = nano_to_usd(self.used)
            body["max"] = nano_to_usd(self.max)
        return body


class AlertSink(Protocol):
    def emit(self, alert: Alert) -> None: ...


class LogAlerts:
    def emit(self, alert: Alert) -> None:
        log.warning("budget alert %s", orjson.dumps(alert.payload()).decode())


class WebhookAlerts(LogAlerts):
    def __init__(self, session: aiohttp.ClientSession, url: Callable[[], str | None]) -> None:
        self._session = session
        self._url = url  # read per alert: a reload may change it
        self._queue: asyncio.Queue[Alert] = asyncio.Queue(_QUEUE_MAX)
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.failed = 0

    def emit(self, alert: Alert) -> None:
        super().emit(alert)
        if not self._url():
            return
        if self._queue.full():
            dropped = self._queue.get_nowait()
            log.warning("alert queue full; dropped alert for budget %s", dropped.budget)
        self._queue.put_nowait(alert)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while True:
            alert = await self._queue.get()
            await self._send(alert)

    async def _send(self, alert: Alert) -> None:
        data = orjson.dumps(alert.payload())
        for attempt in range(_TRIES):
            url = self._url()
            if not url:
                return
            try:
                async with self._session.post(
                    url, data=data, headers={"Content-Type": "application/json"},
                    timeout=aiohttp.ClientTimeout(total=10),
                ) as resp:
                    if resp.status < 500:
                        self.sent += 1
                        return
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.debug("alert webhook attempt %d failed: %s", attempt + 1, exc)
            await asyncio.sleep(min(0.5 * 2**attempt, 10))
        self.failed += 1
        log.error("alert webhook gave up after %d tries for budget %s", _TRIES, alert.budget)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
