"""The durable embedded store against real processes (issue 16): a gateway killed with SIGKILL
mid-burst forgets nothing a client was answered for, charges nothing twice, and holds no
reservation after its restart; an earlier release's JSON state file is carried over."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.cost.model import Filter, Usage
from gateway.cost.windows import DAY
from gateway.store.base import Line
from gateway.store.memory import MemoryStore
from gateway.store.persist import Persister
from gateway.store.sqlite import SqliteStore
from tests import leaks
from tests.procs import gateway_process, mock_upstream

SECRET = "sk-e2e-durable-0123456789abcdef"
leaks.SECRETS.add(SECRET)
IN_FLIGHT = 100
ROUNDS = 4
LIMIT = 10**9
CONFIG = """
store: "{store}"
upstreams:
  mock: {{base_url: "{mock}/v1", api_key: k, timeout_s: 10}}
tenants:
  t0:
    keys: [{{name: app, sha256: "{sha}"}}]
budgets:
  - {{name: cap, tenant: t0, max_tokens_per_day: {limit}}}
"""


def body(rng: random.Random) -> dict[str, Any]:
    """Half of them streamed: a stream counts as answered once its ``[DONE]`` arrived."""
    return {"model": "gpt-4o-mini", "max_tokens": rng.randint(1, 30),
            "messages": [{"role": "user", "content": "durable"}], "stream": rng.random() < 0.5,
            "metadata": {"mock_delay_s": f"{rng.uniform(0.0, 0.3):.3f}"}}


async def burst(url: str, rng: random.Random, kill: Any) -> int:
    """``IN_FLIGHT`` requests at once, ``kill`` called in the middle; the whole answers
    received."""
    headers = {"Authorization": f"Bearer {SECRET}"}
    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:

        async def one(payload: dict[str, Any]) -> int:
            received = b""
            try:
                async with session.post(f"{url}/v1/chat/completions", json=payload) as resp:
                    async for chunk in resp.content.iter_any():
                        received += chunk
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            if payload["stream"] and b"data: [DONE]" in received:
                return 200  # the whole answer, even if the connection broke after it
            return status if not payload["stream"] else 0

        tasks = [asyncio.ensure_future(one(body(rng))) for _ in range(IN_FLIGHT)]
        await asyncio.sleep(rng.uniform(0.15, 0.6))
        kill()
        return sum(status == 200 for status in await asyncio.gather(*tasks))


async def test_sigkill_mid_burst_loses_no_answered_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(20261206)
    db = tmp_path / "state.db"
    with mock_upstream(tmp_path) as mock:
        config = tmp_path / "gateway.yaml"
        config.write_text(CONFIG.format(store=f"sqlite://{db}", mock=mock.url, limit=LIMIT,
                                        sha=hashlib.sha256(SECRET.encode()).hexdigest()))
        answered, released = 0, []
        for i in range(ROUNDS + 1):
            log = tmp_path / f"gateway-{i}.log"
            with gateway_process(config, log) as gateway:
                if i < ROUNDS:
                    answered += await burst(gateway.url, rng, lambda g=gateway: os.kill(
                        g.popen.pid, signal.SIGKILL))
                    gateway.popen.wait(timeout=10)
            released += [int(line.split(" reservations in flight")[0].rsplit(";", 1)[1])
                         for line in log.read_text().splitlines()
                         if "reservations in flight at the last stop released" in line]
        async with aiohttp.ClientSession() as session, session.get(
                f"{mock.url}/v1/mock/stats") as resp:
            stats = await resp.json()
    served = sum(stats["requests"].values()) + sum(stats["faulted"].values())
    store = SqliteStore(f"sqlite://{db}", read_only=True)
    await store.connect()
    spent = await store.query(Filter(tenant_id="t0"))
    tokens = spent.total_input_tokens + spent.total_output_tokens
    line = Line("{t0}:b:cap:max_tokens_per_day", DAY, LIMIT, 0)
    counted = (await store.peek([line], time.time()))[0]
    with capsys.disabled():
        print(f"\n[sqlite store] {ROUNDS} bursts of {IN_FLIGHT}, each SIGKILLed mid-burst: "
              f"{answered} answered 200, {served} served upstream, {spent.entry_count} recorded "
              f"({tokens:,} tokens, the budget counting {counted:,}); reservations released at "
              f"each restart {released[1:]}, left after the last stop "
              f"{store.released_at_start}")
    assert answered <= spent.entry_count <= served, "every answered request recorded, once"
    assert counted == tokens, "and counted against its budget"
    assert sum(released[1:]) > 0, "requests were in flight at the kills"
    assert store.released_at_start == 0, "none left held after a clean stop"


async def test_a_json_state_file_from_the_last_release_is_carried_over(tmp_path: Path) -> None:
    legacy = tmp_path / "state.json"
    old = MemoryStore()
    for i in range(3):
        await old.record(Usage(10, 5, 0, 15, 0.001, "gpt-4o-mini", "mock", "t0", 1.7e9 + i))
    Persister(old, legacy).save()
    with mock_upstream(tmp_path) as mock:
        config = tmp_path / "gateway.yaml"
        config.write_text(CONFIG.format(store=f"memory://?persist={legacy}", mock=mock.url,
                                        limit=LIMIT,
                                        sha=hashlib.sha256(SECRET.encode()).hexdigest()))
        log = tmp_path / "gateway.log"
        with gateway_process(config, log):
            pass
    assert "carried the state file" in log.read_text()
    assert not legacy.exists() and (tmp_path / "state.json.migrated").exists()
    store = SqliteStore(f"sqlite://{tmp_path / 'state.db'}", read_only=True)
    await store.connect()
    assert (await store.query(Filter(tenant_id="t0"))).entry_count == 3
