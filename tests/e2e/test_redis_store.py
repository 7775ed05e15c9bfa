"""Several gateway processes on one real Redis: budgets hold across them, a Redis outage loses
no charged usage, and a killed gateway's reservations expire."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.cost.model import Filter
from gateway.cost.windows import HOUR
from gateway.store.base import Line
from gateway.store.redis import RedisStore
from tests import leaks
from tests.procs import Proc, free_port, gateway_process, mock_upstream, stop
from tests.servers import redis_cluster, redis_server, start_redis

SECRET = "sk-e2e-redis-tenant"
ADMIN_SECRET = "sk-e2e-redis-tenant-admin"
OPS_TOKEN = "e2e-redis-ops-token-0123456789abcdef"
leaks.SECRETS.update([SECRET, ADMIN_SECRET, OPS_TOKEN])
BODY = {"model": "gpt-4o-mini", "max_tokens": 10,
        "messages": [{"role": "user", "content": "count to ten"}]}
TIMEOUT_S = 2  # upstream timeout: a reservation lives timeout + 60 s

CONFIG = """
store: "{store}"
on_store_error: {policy}
upstreams:
  mock: {{base_url: "{mock}/v1", api_key: "k", timeout_s: {timeout}}}
tenants:
  shared:
    keys:
      - {{name: app, sha256: "{sha}"}}
      - {{name: ops, sha256: "{admin_sha}", role: admin}}
budgets:
  - {{name: cap, tenant: shared, max_tokens_per_hour: {limit}}}
ops: {{token: "{ops_token}"}}
"""


def write_config(path: Path, mock: str, store: str, limit: int, policy: str = "reject") -> Path:
    path.write_text(CONFIG.format(store=store, mock=mock, limit=limit, policy=policy,
                                  timeout=TIMEOUT_S, ops_token=OPS_TOKEN,
                                  sha=hashlib.sha256(SECRET.encode()).hexdigest(),
                                  admin_sha=hashlib.sha256(ADMIN_SECRET.encode()).hexdigest()))
    return path


@contextlib.contextmanager
def gateways(tmp: Path, configs: list[Path]) -> Iterator[list[Proc]]:
    with contextlib.ExitStack() as stack:
        procs = []
        for i, config in enumerate(configs):
            procs.append(stack.enter_context(gateway_process(config, tmp / f"gateway-{i}.log")))
        yield procs


async def per_request_tokens(mock: str) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{mock}/v1/chat/completions", json=BODY) as resp:
            tokens: int = (await resp.json())["usage"]["total_tokens"]
        await session.post(f"{mock}/v1/mock/reset")
    return tokens


async def mock_stats(mock: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{mock}/v1/mock/stats") as r:
        stats: dict[str, Any] = await r.json()
        return stats


async def post_many(urls: list[str], count: int, body: dict[str, Any] = BODY) -> list[int]:
    headers = {"Authorization": f"Bearer {SECRET}"}
    connector = aiohttp.TCPConnector(limit=count)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(headers=headers, connector=connector,
                                     timeout=timeout) as session:

        async def one(i: int) -> int:
            try:
                async with session.post(f"{urls[i % len(urls)]}/v1/chat/completions",
                                        json=body) as resp:
                    await resp.read()
                    return resp.status
            except aiohttp.ClientError:
                return 0

        return await asyncio.gather(*(one(i) for i in range(count)))


@contextlib.contextmanager
def redis(tmp: Path, port: int) -> Iterator[Any]:
    proc = start_redis(tmp, port, "--appendonly", "yes", "--appendfsync", "always")
    try:
        yield proc
    finally:
        stop(proc)


@contextlib.contextmanager
def shared_store(tmp: Path, kind: str) -> Iterator[str]:
    """``kind``: redis | redis-cluster, optionally with ``?max_connections=N`` appended (so a
    small bound is seen to make calls wait, never fail)."""
    name, _, query = kind.partition("?")
    with (redis_server(tmp) if name == "redis" else redis_cluster(tmp)) as url:
        yield url + (f"?{query}" if query else "")


@pytest.mark.parametrize("kind", ["redis", "redis-cluster", "redis?max_connections=4",
                                  "redis-cluster?max_connections=4"])
async def test_two_gateways_one_store_exactly_fifty_of_four_hundred(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two instances x 200 in flight against a budget for exactly 50, on one Redis and on a
    3-node cluster alike: 50 admitted, 350 denied, no 503, no transport error."""
    with mock_upstream(tmp_path) as mock, shared_store(tmp_path, kind) as store:
        per = await per_request_tokens(mock.url)
        configs = [write_config(tmp_path / f"g{i}.yaml", mock.url, store, 50 * per)
                   for i in range(2)]
        with gateways(tmp_path, configs) as procs:
            statuses = await post_many([p.url for p in procs], 400)
        stats = await mock_stats(mock.url)
        spent = await RedisStore.from_url(store).query(Filter(tenant_id="shared"))
    counts = collections.Counter(statuses)
    with capsys.disabled():
        print(f"\n[{kind}] 2 gateways x 200 in flight, budget for 50: {counts[200]} admitted, "
              f"{counts[429]} x 429, {counts[503]} x 503, {counts[0]} transport errors")
    assert counts == {200: 50, 429: 350}
    assert stats["requests"] == {"/chat/completions": 50}
    assert spent.entry_count == 50
    assert spent.total_input_tokens + spent.total_output_tokens == 50 * per


async def test_redis_killed_and_restarted_under_load_loses_no_usage(tmp_path: Path) -> None:
    redis_port = free_port()
    with mock_upstream(tmp_path) as mock:
        store = f"redis://127.0.0.1:{redis_port}/0"
        big = 10**9
        configs = [write_config(tmp_path / "reject.yaml", mock.url, store, big, "reject"),
                   write_config(tmp_path / "allow.yaml", mock.url, store, big, "allow")]
        redis_proc = start_redis(tmp_path, redis_port, "--appendonly", "yes",
                                 "--appendfsync", "always")
        try:
            with gateways(tmp_path, configs) as (rejecting, allowing):
                urls = [rejecting.url, allowing.url]
                before = await post_many(urls, 40)
                stop(redis_proc, signal.SIGKILL)
                during = await post_many(urls, 40)
                redis_proc = start_redis(tmp_path, redis_port, "--appendonly", "yes",
                                         "--appendfsync", "always")
                after = await post_many(urls, 40)
                stats = await mock_stats(mock.url)
                spent = await _wait_for_spend(store, stats["output_tokens"])
                assert rejecting.popen.poll() is None and allowing.popen.poll() is None
        finally:
            stop(redis_proc)
    assert collections.Counter(before) == {200: 40}
    assert collections.Counter(after) == {200: 40}, "a restarted Redis serves at once"
    assert during[0::2] == [503] * 20, "on_store_error: reject fails closed"
    assert during[1::2] == [200] * 20, "on_store_error: allow lets requests through"
    assert stats["requests"] == {"/chat/completions": 100}
    assert spent.total_input_tokens == stats["input_tokens"]
    assert spent.total_output_tokens == stats["output_tokens"]
    assert spent.entry_count == 100


async def _wait_for_spend(store: str, output_tokens: int) -> Any:
    """The allowing gateway writes its buffer back within seconds of Redis's return."""
    redis_store = RedisStore.from_url(store)
    try:
        for _ in range(100):
            spent = await redis_store.query(Filter(tenant_id="shared"))
            if spent.total_output_tokens >= output_tokens:
                return spent
            await asyncio.sleep(0.1)
        return spent
    finally:
        await redis_store.close()


async def test_sigkilled_gateway_leaves_reservations_that_expire(tmp_path: Path) -> None:
    redis_port = free_port()
    with mock_upstream(tmp_path) as mock, redis(tmp_path, redis_port):
        store = f"redis://127.0.0.1:{redis_port}/0"
        config = write_config(tmp_path / "g.yaml", mock.url, store, 10**9)
        slow = {**BODY, "stream": True, "max_tokens": 200,
                "metadata": {"mock_fault": "slow_stream:0.05"}}
        with gateways(tmp_path, [config]) as (gateway,):
            requests = asyncio.ensure_future(post_many([gateway.url], 5, slow))
            line = Line("{shared}:b:cap:max_tokens_per_hour", HOUR, 10**9, 0)
            redis_store = RedisStore.from_url(store)
            held = 0
            for _ in range(100):
                held = (await redis_store.peek([line], time.time()))[0]
                if held > 0:
                    break
                await asyncio.sleep(0.05)
            os.kill(gateway.popen.pid, signal.SIGKILL)
            gateway.popen.wait(timeout=10)
            await requests
        now = time.time()
        still_held = (await redis_store.peek([line], now))[0]
        expired = (await redis_store.peek([line], now + TIMEOUT_S + 60 + 1))[0]
        await redis_store.close()
    assert held > 0 and still_held == held, "the killed gateway's reservations are in Redis"
    assert expired == 0, "and they are gone once their expiry passes"


async def test_an_api_budget_made_on_one_instance_binds_the_next_request_on_another(
    tmp_path: Path,
) -> None:
    redis_port = free_port()
    with mock_upstream(tmp_path) as mock, redis(tmp_path, redis_port):
        store = f"redis://127.0.0.1:{redis_port}/0"
        configs = [write_config(tmp_path / f"g{i}.yaml", mock.url, store, 10**9)
                   for i in range(2)]
        with gateways(tmp_path, configs) as (first, second):
            assert await post_many([second.url], 1) == [200]  # second caches "no API budgets"
            admin = {"Authorization": f"Bearer {ADMIN_SECRET}"}
            async with aiohttp.ClientSession(headers=admin) as session, session.post(
                f"{first.url}/api/client/v1/budgets", json={"max_tokens_per_hour": 5}
            ) as resp:
                assert resp.status == 201
            assert await post_many([second.url], 1) == [429]
            assert await post_many([first.url], 1) == [429]
