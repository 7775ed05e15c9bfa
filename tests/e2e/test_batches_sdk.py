"""The Batch API against real processes with the official openai SDK: a file uploaded, batches
created at once against a budget (exactly as many admitted as fit), each charged what the worst
mock billed at batch prices when it ends, never more than it reserved; settled exactly once by
two instances sharing Redis, and after a crash of the embedded store's gateway."""

from __future__ import annotations

import asyncio
import hashlib
import io
import signal
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from gateway.cost.price_data import ShippedPrices
from gateway.cost.pricing import Item
from tests import leaks
from tests.procs import gateway_process, mock_upstream, stop
from tests.servers import redis_server, store_url

SECRET = "sk-e2e-batches-0123456789abcdef"
OTHER = "sk-e2e-batches-other-0123456789"
OPS_TOKEN = "e2e-batches-ops-token-0123456789"
UPSTREAM_KEY = "sk-e2e-batches-upstream-key"
leaks.SECRETS.update([SECRET, OTHER, OPS_TOKEN, UPSTREAM_KEY])
MODEL = "gpt-4o-mini"
LINES = 6
OUTPUT = 40

CONFIG = """
store: "{store}"
max_body_bytes: 1048576
upstreams:
  mock: {{base_url: "{mock}/v1", api_key: "sk-e2e-batches-upstream-key", timeout_s: 30}}
tenants:
  team: {{keys: [{{name: app, sha256: "{sha}"}}]}}
  other: {{keys: [{{name: app2, sha256: "{other}"}}]}}
budgets:
  - {{name: team-daily, tenant: team, max_cost_per_day: {limit}}}
limits: {{batch_poll_s: 0.2}}
ops: {{token: "{ops}"}}
"""


def content(tag: str) -> bytes:
    lines = [{"custom_id": f"{tag}-{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": MODEL, "max_completion_tokens": OUTPUT, "messages": [
                  {"role": "user", "content": f"Summarise ticket {i} of {tag}."}]}}
             for i in range(LINES)]
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)




def write_config(tmp: Path, store: str, mock: str, limit: float) -> Path:
    path = tmp / "gateway.yaml"
    path.write_text(CONFIG.format(
        store=store, mock=mock, limit=limit, ops=OPS_TOKEN,
        sha=hashlib.sha256(SECRET.encode()).hexdigest(),
        other=hashlib.sha256(OTHER.encode()).hexdigest()))
    return path


def sdk(url: str, key: str = SECRET) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)


async def upload(client: openai.AsyncOpenAI, tag: str) -> str:
    uploaded = await client.files.create(file=(f"{tag}.jsonl", io.BytesIO(content(tag))),
                                         purpose="batch")
    return uploaded.id


async def start(client: openai.AsyncOpenAI, file_id: str, seconds: float = 0.5) -> Any:
    return await client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                       completion_window="24h",
                                       metadata={"mock_batch_duration_s": str(seconds)})


async def _get(url: str, token: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(
            url, headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json() if resp.content_type == "application/json" else await resp.text()


async def report(gateway: str) -> dict[str, Any]:
    answer: dict[str, Any] = await _get(f"{gateway}/api/client/v1/spend/report", SECRET)
    return answer


async def settled(gateway: str, requests: int) -> dict[str, Any]:
    """The spend report once ``requests`` usage records (one per batch) are in it."""
    for _ in range(300):
        spent = await report(gateway)
        if spent["requests"] >= requests:
            return spent
        await asyncio.sleep(0.1)
    raise AssertionError(f"{requests} batches not settled: {spent}")


async def billed(mock: str) -> list[dict[str, Any]]:
    """What the worst mock billed, per batch line."""
    stats = await _get(f"{mock}/v1/mock/stats", "k")
    return [e for e in stats["ledger"]["entries"] if e.get("batch_id")]


def batch_cost(counts: list[dict[str, Any]]) -> float:
    price = ShippedPrices().lookup(MODEL)
    assert price is not None
    rates = price.rates_for("batch")
    pico = sum(c["input_tokens"] * rates[Item.INPUT].pico
               + c["output_tokens"] * rates[Item.OUTPUT].pico for c in counts)
    return pico / 1e12


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
async def test_concurrent_batches_are_admitted_exactly_as_the_budget_allows_and_charged_what_ran(
        tmp_path: Path, kind: str) -> None:
    with mock_upstream(tmp_path, worst=True) as mock, store_url(kind, tmp_path) as store:
        probe = write_config(tmp_path, store, mock.url, 1000.0)
        with gateway_process(probe, tmp_path / "probe.log") as gateway:
            async with sdk(gateway.url) as client:
                bound = await _bound(gateway.url, await upload(client, "probe"))
        limit = 3 * bound + bound / 2  # three batches fit, a fourth does not
        config = write_config(tmp_path, store if kind != "sqlite" else
                              f"sqlite://{tmp_path / 'run.db'}", mock.url, limit)
        if kind == "redis":
            await _flush(store)
        async with aiohttp.ClientSession() as session:
            await session.post(f"{mock.url}/v1/mock/reset")
        with gateway_process(config, tmp_path / "gateway.log") as gateway:
            async with sdk(gateway.url) as client, sdk(gateway.url, OTHER) as other:
                file_id = await upload(client, "run")
                results = await asyncio.gather(*(start(client, file_id) for _ in range(8)),
                                               return_exceptions=True)
                started = [r for r in results if not isinstance(r, BaseException)]
                refused = [r for r in results if isinstance(r, openai.RateLimitError)]
                assert (len(started), len(refused)) == (3, 5), results
                with pytest.raises(openai.NotFoundError):
                    await other.batches.retrieve(started[0].id)
                with pytest.raises(openai.NotFoundError):
                    await other.files.content(file_id)
                spent = await settled(gateway.url, 3)
                ended = [await client.batches.retrieve(b.id) for b in started]
                assert {b.status for b in ended} == {"completed"}
                output = await client.files.content(ended[0].output_file_id or "")
                assert len(output.text.splitlines()) == LINES
            metrics = await _get(f"{gateway.url}/metrics", OPS_TOKEN)
        lines = await billed(mock.url)
    assert len(lines) == 3 * LINES
    assert all(line["billed"]["output_tokens"] == OUTPUT for line in lines)  # as long as allowed
    assert spent["requests"] == 3
    assert spent["total_output_tokens"] == 3 * LINES * OUTPUT
    assert spent["total_input_tokens"] == sum(line["billed"]["input_tokens"] for line in lines)
    assert spent["total_cost"] == pytest.approx(batch_cost([line["billed"] for line in lines]),
                                                abs=1e-9)
    assert spent["total_cost"] <= 3 * bound
    assert "gateway_settlements_over_reservation_total 0.0" in metrics


async def test_two_instances_on_redis_settle_each_batch_exactly_once(tmp_path: Path) -> None:
    with mock_upstream(tmp_path, worst=True) as mock, redis_server(tmp_path) as store:
        config = write_config(tmp_path, store, mock.url, 1000.0)
        with gateway_process(config, tmp_path / "a.log") as first, \
                gateway_process(config, tmp_path / "b.log") as second:
            async with sdk(first.url) as client:
                file_id = await upload(client, "shared")
                batches = [await start(client, file_id, 1.0) for _ in range(5)]
            async with sdk(second.url) as client:  # the other instance serves them too
                assert {(await client.batches.retrieve(b.id)).id for b in batches} == {
                    b.id for b in batches}
            await settled(first.url, 5)
            await asyncio.sleep(1.0)  # both pollers had rounds after the settlement
            spent = await report(second.url)
            logs = first.output() + second.output()
        lines = await billed(mock.url)
    assert spent["requests"] == 5
    assert spent["total_cost"] == pytest.approx(batch_cost([line["billed"] for line in lines]),
                                                abs=1e-9)
    assert logs.count("batch settled id=") == 5


async def test_a_batch_running_when_the_gateway_crashes_is_settled_once_after_its_restart(
        tmp_path: Path) -> None:
    with mock_upstream(tmp_path, worst=True) as mock:
        config = write_config(tmp_path, f"sqlite://{tmp_path / 'state.db'}", mock.url, 1000.0)
        with gateway_process(config, tmp_path / "before.log") as gateway:
            async with sdk(gateway.url) as client:
                file_id = await upload(client, "crash")
                batch = await start(client, file_id, 2.0)
            stop(gateway.popen, signal.SIGKILL)
        with gateway_process(config, tmp_path / "after.log") as gateway:
            spent = await settled(gateway.url, 1)
            async with sdk(gateway.url) as client:
                assert (await client.batches.retrieve(batch.id)).status == "completed"
            await asyncio.sleep(0.5)
            again = await report(gateway.url)
        lines = await billed(mock.url)
    assert spent["requests"] == again["requests"] == 1
    assert again["total_cost"] == pytest.approx(batch_cost([line["billed"] for line in lines]),
                                                abs=1e-9)


async def _bound(gateway: str, file_id: str) -> float:
    """The file's bound in USD, as the gateway reserves it: the day's use of the budget once
    one batch is created (the status API counts reservations in flight)."""
    async with sdk(gateway) as client:
        await start(client, file_id, 30.0)
    status = await _get(f"{gateway}/api/client/v1/budgets/status", SECRET)
    (budget,) = status["budgets"]
    (limit,) = budget["limits"]
    used: float = limit["used"]
    assert used > 0
    return used


async def _flush(url: str) -> None:
    import redis.asyncio as aioredis

    async with aioredis.Redis.from_url(url) as client:
        await client.flushdb()
