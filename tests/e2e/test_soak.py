"""The soak: two gateway processes on one real Redis, and again on a 3-node Redis Cluster, take a
long mixed load (tenants, endpoints,
streaming or not, faults injected at random, clients that give up early), and afterwards the
ledger is exact: the store holds exactly the usage the mock upstream says it served (reported,
or produced and counted), no reservation is left, and neither gateway grew.

``SOAK_REQUESTS`` sets the number of requests (default 20,000); the run prints its figures.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from gateway.cost.model import Filter
from gateway.proxy.endpoints import Endpoint
from gateway.proxy.estimate import count_input_tokens
from gateway.store.redis import RedisStore
from tests import leaks
from tests.procs import Proc, gateway_process, mock_upstream, rss_mb
from tests.servers import redis_cluster, redis_server

REQUESTS = int(os.environ.get("SOAK_REQUESTS", "20000"))
CLIENTS = 32
SEED = 20261122
UPSTREAM_TIMEOUT_S = 2
RUN_TIMEOUT_S = 900.0  # a bound on the whole load, not a speed assertion
SETTLE_TIMEOUT_S = 30.0
RSS_GROWTH_MAX_MB = 16.0  # between a quarter of the run and its end: a leak, not noise
TENANTS = ("alpha", "beta", "gamma")  # gamma's hourly budget runs out early in the run
GAMMA_TOKENS_PER_HOUR = 20_000
SECRETS = {t: f"sk-soak-{t}-0123456789abcdef" for t in TENANTS}
OPS_TOKEN = "soak-ops-token-0123456789abcdef"  # /metrics is the operators', not tenants'
leaks.SECRETS.update([*SECRETS.values(), OPS_TOKEN])


@dataclass(frozen=True)
class Kind:
    """One kind of request: its endpoint, body and fault, and how often it is sent."""

    name: str
    weight: int
    path: str
    body: dict[str, Any]
    client_timeout_s: float | None = None  # the client gives up before the answer
    lost: bool = False  # the upstream's answer is lost: the gateway charges the reservation

    def payload(self, rng: random.Random) -> dict[str, Any]:
        body = dict(self.body)
        words = " ".join(rng.choice(("budget", "token", "soak", "ledger", "é", "🙂"))
                         for _ in range(rng.randint(1, 40)))
        key = "input" if "input" in body else "prompt" if "prompt" in body else None
        if key is None:
            body["messages"] = [{"role": "user", "content": words}]
        else:
            body[key] = words
        return body


LOST_MODEL = "gpt-4o-mini-2024-07-18"
"""Lost answers go to a mock of their own (by this model), so the first mock's figures are
exactly the rest; for them the gateway charges each reservation: input and the output cap."""
CHAT_CAP = 12


def _chat(fault: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "gpt-4o-mini", "max_tokens": CHAT_CAP, **extra}
    if fault is not None:
        body["metadata"] = {"mock_fault": fault}
    return body


STREAM = {"stream": True}
WITH_USAGE = {"stream": True, "stream_options": {"include_usage": True}}
KINDS = (
    Kind("chat", 30, "/chat/completions", _chat()),
    Kind("chat stream", 15, "/chat/completions", _chat(**STREAM)),
    Kind("chat stream with usage", 10, "/chat/completions", _chat(**WITH_USAGE)),
    Kind("completions", 5, "/completions", {"model": "gpt-4o-mini", "prompt": "", "max_tokens": 8}),
    Kind("embeddings", 8, "/embeddings", {"model": "text-embedding-3-small", "input": ""}),
    Kind("responses", 4, "/responses", {"model": "gpt-4o-mini", "input": "",
                                        "max_output_tokens": 10}),
    Kind("fault 500", 3, "/chat/completions", _chat("500")),
    Kind("fault 429", 3, "/chat/completions", _chat("429")),
    Kind("fault 503", 2, "/chat/completions", _chat("503")),
    Kind("fault no usage", 4, "/chat/completions", _chat("no_usage")),
    Kind("fault no usage, stream", 4, "/chat/completions", _chat("no_usage", **WITH_USAGE)),
    Kind("fault stream cut", 4, "/chat/completions",
         _chat("reset_after:2", model=LOST_MODEL, **STREAM), lost=True),
    Kind("fault slow stream", 2, "/chat/completions", _chat("slow_stream:0.01", **STREAM)),
    Kind("fault upstream timeout", 1, "/chat/completions",
         _chat(f"timeout:{UPSTREAM_TIMEOUT_S + 1}", model=LOST_MODEL), lost=True),
    Kind("client gives up", 2, "/chat/completions", _chat("timeout:0.3"), client_timeout_s=0.1),
)
FAULTS = {k.name for k in KINDS if k.name.startswith("fault") or k.client_timeout_s}

CONFIG = """
store: "{store}"
upstreams:
  lost: {{base_url: "{lost}/v1", api_key: "k", timeout_s: {timeout}, models: ["{lost_model}"]}}
  mock: {{base_url: "{mock}/v1", api_key: "k", timeout_s: {timeout}}}
tenants:
{tenants}
budgets:
  - {{name: alpha-day, tenant: alpha, max_tokens_per_day: 1000000000, max_cost_per_day: 1000}}
  - {{name: beta-month, tenant: beta, max_cost_per_month: 1000}}
  - {{name: gamma-hour, tenant: gamma, max_tokens_per_hour: {gamma}}}
ops: {{token: "{ops_token}"}}
"""


def write_config(path: Path, mock: str, lost: str, store: str) -> Path:
    tenants = "\n".join(
        f"  {t}:\n    keys: [{{name: app, sha256: \"{hashlib.sha256(s.encode()).hexdigest()}\"}}]"
        for t, s in SECRETS.items())
    path.write_text(CONFIG.format(store=store, mock=mock, lost=lost, lost_model=LOST_MODEL,
                                  timeout=UPSTREAM_TIMEOUT_S,
                                  tenants=tenants, gamma=GAMMA_TOKENS_PER_HOUR,
                                  ops_token=OPS_TOKEN))
    return path


@dataclass
class Tally:
    by_kind: collections.Counter[str] = field(default_factory=collections.Counter)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    gave_up: int = 0
    broken: list[str] = field(default_factory=list)  # answers that were not well-formed
    lost_input: int = 0  # what the lost answers' reservations held, charged in full
    lost_output: int = 0



async def one(session: aiohttp.ClientSession, url: str, kind: Kind, tenant: str,
              rng: random.Random, tally: Tally) -> None:
    tally.by_kind[kind.name] += 1
    headers = {"Authorization": f"Bearer {SECRETS[tenant]}"}
    timeout = aiohttp.ClientTimeout(total=kind.client_timeout_s or 30)
    payload = kind.payload(rng)
    try:
        async with session.post(url + "/v1" + kind.path, json=payload,
                                headers=headers, timeout=timeout) as resp:
            body = await resp.read()
    except TimeoutError:
        if kind.client_timeout_s is None:
            tally.broken.append(f"{kind.name}: timed out")
        tally.gave_up += 1
        return
    tally.statuses[resp.status] += 1
    if kind.lost and resp.status != 429:
        tally.lost_input += count_input_tokens(Endpoint(kind.path), payload)[0]
        tally.lost_output += CHAT_CAP
    is_sse = resp.content_type == "text/event-stream"
    if resp.status == 200 and is_sse and kind.body.get("metadata") is None:
        if not body.rstrip().endswith(b"data: [DONE]"):
            tally.broken.append(f"{kind.name}: stream without [DONE]")
    elif not is_sse and not body.startswith(b"{"):
        tally.broken.append(f"{kind.name}: {resp.status} {body[:80]!r}")


async def load(gateways: list[Proc], tally: Tally, on_quarter: Any) -> None:
    rng = random.Random(SEED)
    weights = [k.weight for k in KINDS]
    plan = [(rng.choices(KINDS, weights)[0], rng.choice(TENANTS), i % len(gateways))
            for i in range(REQUESTS)]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(REQUESTS):
        queue.put_nowait(i)
    done = 0

    async def worker(session: aiohttp.ClientSession, seed: int) -> None:
        nonlocal done
        worker_rng = random.Random(seed)
        while not queue.empty():
            kind, tenant, g = plan[queue.get_nowait()]
            await one(session, gateways[g].url, kind, tenant, worker_rng, tally)
            done += 1
            if done % (REQUESTS // 4) == 0:
                on_quarter()

    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.wait_for(
            asyncio.gather(*(worker(session, SEED + w) for w in range(CLIENTS))), RUN_TIMEOUT_S)


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return await resp.json()


async def settled(gateways: list[Proc]) -> None:
    """Until every gateway holds no reservation and no buffered settlement."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    busy = ("gateway_reservations_in_flight ", "gateway_buffered_settlements ")
    while time.monotonic() < deadline:
        texts = []
        scraper = {"Authorization": f"Bearer {OPS_TOKEN}"}
        async with aiohttp.ClientSession(headers=scraper) as session:
            for g in gateways:
                async with session.get(g.url + "/metrics") as resp:
                    assert resp.status == 200, await resp.text()
                    texts.append(await resp.text())
        values = [float(line.split()[-1]) for text in texts for line in text.splitlines()
                  if line.startswith(busy)]
        if values and not any(values):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("reservations or settlements still pending after the run")


async def reservations_left(url: str) -> int:
    """Held amounts straight from Redis: reservation ids in the lines' pending hashes (their
    ``_sum`` too) and in their expiry sets (``{tenant}:s:{rid}`` keys are settle markers)."""
    client: Any = (aioredis.RedisCluster.from_url(url.replace("redis+cluster", "redis"))
                   if url.startswith("redis+cluster://") else aioredis.from_url(url))
    try:
        left = 0
        async for key in client.scan_iter(match="*:p"):
            fields = await client.hgetall(key)
            left += sum(1 for f in fields if not f.startswith(b"_"))
            left += int(fields.get(b"_sum", 0)) != 0
        async for key in client.scan_iter(match="*:x"):
            left += await client.zcard(key)
        return left
    finally:
        await client.aclose()


@contextlib.contextmanager
def stack(tmp: Path, store_kind: str) -> Iterator[tuple[Proc, list[Proc], str]]:
    with contextlib.ExitStack() as stack:
        mock = stack.enter_context(mock_upstream(tmp))
        (tmp / "lost").mkdir(exist_ok=True)
        lost = stack.enter_context(mock_upstream(tmp / "lost"))
        servers = redis_server if store_kind == "redis" else redis_cluster
        store = stack.enter_context(servers(tmp))
        gateways = []
        for i in range(2):
            config = write_config(tmp / f"soak-{i}.yaml", mock.url, lost.url, store)
            gateways.append(stack.enter_context(
                gateway_process(config, tmp / f"soak-gateway-{i}.log")))
        yield mock, gateways, store


@pytest.mark.parametrize("store_kind", ["redis", "redis-cluster"])
async def test_soak_leaves_an_exact_ledger(tmp_path: Path, store_kind: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    with stack(tmp_path, store_kind) as (mock, gateways, store):
        tally = Tally()
        rss: list[list[float]] = []
        started = time.monotonic()
        await load(gateways, tally, lambda: rss.append([rss_mb(g.popen.pid) for g in gateways]))
        elapsed = time.monotonic() - started
        await settled(gateways)
        stats = await get_json(mock.url + "/v1/mock/stats")
        reader = RedisStore.from_url(store)
        spent = await reader.query(Filter())
        lost = await reader.query(Filter(model=LOST_MODEL))
        left = await reservations_left(store)
        for g in gateways:  # both still serve
            async with aiohttp.ClientSession() as session, session.post(
                    g.url + "/v1/chat/completions", json=KINDS[0].payload(random.Random(0)),
                    headers={"Authorization": f"Bearer {SECRETS['alpha']}"}) as resp:
                assert resp.status == 200, await resp.text()
            assert g.popen.poll() is None

    expected_in = stats["input_tokens"] + stats["unreported_input_tokens"] + tally.lost_input
    expected_out = stats["produced_output_tokens"] + tally.lost_output
    difference = abs(spent.total_input_tokens - expected_in) + abs(
        spent.total_output_tokens - expected_out) + abs(
        lost.total_input_tokens - tally.lost_input) + abs(
        lost.total_output_tokens - tally.lost_output)
    faults = sum(n for kind, n in tally.by_kind.items() if kind in FAULTS)
    growth = [end - quarter for quarter, end in zip(rss[0], rss[-1], strict=True)]
    with capsys.disabled():
        print(f"\nsoak [{store_kind}]: {REQUESTS:,} requests in {elapsed:.0f} s over 2 gateways "
              f"and 3 tenants, "
              f"{faults:,} with a fault injected; statuses {dict(sorted(tally.statuses.items()))}"
              f", {tally.gave_up} client timeouts; store {spent.total_input_tokens:,} in / "
              f"{spent.total_output_tokens:,} out tokens, mock {expected_in:,} / "
              f"{expected_out:,} (lost answers charged their reservations: "
              f"{tally.lost_input:,} / {tally.lost_output:,}): ledger difference {difference}; "
              f"reservations left {left}; "
              f"RSS MB at each quarter {[[round(v, 1) for v in q] for q in rss]}")
    assert tally.broken == []
    assert difference == 0
    assert left == 0
    assert tally.statuses[429] > 0 and tally.statuses[200] > REQUESTS // 3
    assert max(growth) <= RSS_GROWTH_MAX_MB, rss
