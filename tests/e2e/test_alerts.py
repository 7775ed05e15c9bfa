"""Budget alerts across instances: exactly one webhook per crossing, and a webhook that does
not answer holds up no request."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests import leaks
from tests.e2e.test_redis_store import BODY, gateways, per_request_tokens, redis
from tests.procs import free_port, mock_upstream

SECRET = "sk-e2e-alerts-tenant"
leaks.SECRETS.add(SECRET)

CONFIG = """
store: "redis://127.0.0.1:{redis}/0"
upstreams:
  mock: {{base_url: "{mock}/v1", api_key: "k"}}
tenants:
  watched:
    keys: [{{name: app, sha256: "{sha}"}}]
budgets:
  - {{name: watch, tenant: watched, max_tokens_per_day: {limit}, alert_threshold: 0.5,
      action: alert}}
alerts:
  webhook_url: "{hook}"
"""


@contextlib.asynccontextmanager
async def receiver(hang: bool = False) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A local webhook receiver; ``hang``: accepts and never answers."""
    received: list[dict[str, Any]] = []
    stop = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        if hang:
            await stop.wait()
        received.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/hook", received
    finally:
        stop.set()
        await runner.cleanup()


async def post_concurrently(urls: list[str], count: int) -> list[int]:
    headers = {"Authorization": f"Bearer {SECRET}"}
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout,
                                     connector=aiohttp.TCPConnector(limit=count)) as session:

        async def one(i: int) -> int:
            async with session.post(f"{urls[i % len(urls)]}/v1/chat/completions",
                                    json=BODY) as resp:
                await resp.read()
                return resp.status

        return await asyncio.gather(*(one(i) for i in range(count)))


def configs(tmp: Path, mock: str, redis_port: int, limit: int, hook: str) -> list[Path]:
    text = CONFIG.format(redis=redis_port, mock=mock, limit=limit, hook=hook,
                         sha=hashlib.sha256(SECRET.encode()).hexdigest())
    paths = [tmp / "a.yaml", tmp / "b.yaml"]
    for path in paths:
        path.write_text(text)
    return paths


async def test_one_alert_per_crossing_from_two_instances(tmp_path: Path) -> None:
    redis_port = free_port()
    with mock_upstream(tmp_path) as mock, redis(tmp_path, redis_port):
        per = await per_request_tokens(mock.url)
        async with receiver() as (hook, received):
            paths = configs(tmp_path, mock.url, redis_port, 60 * per, hook)
            with gateways(tmp_path, paths) as procs:
                statuses = await post_concurrently([p.url for p in procs], 100)
                for _ in range(100):  # delivery is in the background: bounded wait
                    if len(received) >= 2:
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.5)  # room for any duplicate to show up
    assert statuses == [200] * 100, "alert budgets never refuse"
    assert sorted((a["budget"], a["limit"], a["window"]) for a in received) == [
        ("watch", "max_tokens_per_day", "day")] * 2
    ratios = sorted(a["ratio"] for a in received)
    assert 0.5 <= ratios[0] < 0.5 + 2 / 60 and 1.0 <= ratios[1] < 1.0 + 2 / 60
    assert {a["tenant"] for a in received} == {"watched"}
    assert all(a["max"] == 60 * per and a["used"] > 0 and a["time"] for a in received)


async def test_a_webhook_that_hangs_delays_no_request(tmp_path: Path) -> None:
    redis_port = free_port()
    with mock_upstream(tmp_path) as mock, redis(tmp_path, redis_port):
        per = await per_request_tokens(mock.url)
        async with receiver(hang=True) as (hook, _received):
            paths = configs(tmp_path, mock.url, redis_port, 4 * per, hook)
            with gateways(tmp_path, paths[:1]) as (gateway,):
                statuses = await post_concurrently([gateway.url], 20)
    assert statuses == [200] * 20, "every request answered while the webhook hung"
