"""The streaming client: time to first byte of streamed answers, and many streams held open.

Time to first byte is from sending the request to receiving the first ``data:`` event, over
sequential requests on one kept-alive connection (the first ``WARM_UP`` not counted).

``python -m bench.stream_client URL [--requests N] [--key SECRET]`` prints p50/p99 for a URL
serving streamed chat completions.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Mapping

import aiohttp

from bench.bodies import chat_body
from bench.upstream import STREAM_MODEL

WARM_UP = 20
TIMEOUT = aiohttp.ClientTimeout(total=60)


async def _one(session: aiohttp.ClientSession, url: str, body: bytes,
               first: asyncio.Event | None = None) -> float:
    """Streams one answer to its end; the seconds until its first ``data:`` event."""
    start = time.perf_counter()
    ttfb = -1.0
    async with session.post(url, data=body) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{url}: HTTP {resp.status}: {(await resp.read())[:300]!r}")
        async for chunk in resp.content.iter_any():
            if ttfb < 0 and b"data:" in chunk:
                ttfb = time.perf_counter() - start
                if first is not None:
                    first.set()
    if ttfb < 0:
        raise RuntimeError(f"{url}: the stream ended without a data: event")
    return ttfb


def _session(headers: Mapping[str, str], connections: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=connections)
    return aiohttp.ClientSession(connector=connector, timeout=TIMEOUT,
                                 headers={"Content-Type": "application/json", **headers})


async def time_to_first_byte(url: str, headers: Mapping[str, str], body: bytes,
                             requests: int) -> list[float]:
    """Milliseconds to the first event of each of ``requests`` sequential streams."""
    async with _session(headers, 1) as session:
        for _ in range(WARM_UP):
            await _one(session, url, body)
        return [await _one(session, url, body) * 1e3 for _ in range(requests)]


class OpenStreams:
    """``count`` streams started at once and read to their end; ``opened()`` returns once
    every one has received its first event (each on its own connection)."""

    def __init__(self, url: str, headers: Mapping[str, str], body: bytes, count: int) -> None:
        self._session = _session(headers, 0)
        self._firsts = [asyncio.Event() for _ in range(count)]
        self._tasks = [asyncio.ensure_future(_one(self._session, url, body, first))
                       for first in self._firsts]

    async def opened(self, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            for first, task in zip(self._firsts, self._tasks, strict=True):
                waiter = asyncio.ensure_future(first.wait())
                await asyncio.wait([waiter, task], return_when=asyncio.FIRST_COMPLETED)
                if not first.is_set():  # the stream failed before its first event
                    waiter.cancel()
                    task.result()

    async def finished(self, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*self._tasks)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._session.close()


def percentiles(values: list[float]) -> tuple[float, float]:
    """p50 and p99."""
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[98]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="e.g. http://127.0.0.1:8080/v1/chat/completions")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--key", default="", help="sent as Authorization: Bearer KEY")
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    body = chat_body(STREAM_MODEL, 1024, stream=True)
    values = asyncio.run(time_to_first_byte(args.url, headers, body, args.requests))
    p50, p99 = percentiles(values)
    print(f"time to first byte over {len(values)} streams: p50 {p50:.3f} ms, p99 {p99:.3f} ms")


if __name__ == "__main__":
    main()
