"""Budgets hold against an upstream at its worst, on both stores, at concurrency.

The mock runs in worst mode (``gateway mock-upstream --worst``): an uncapped request bills the
model's maximum output, hidden context bills the whole context window, tiers are billed at
their own price, searches bill fees and hidden input, background responses bill later, late
answers bill although the gateway gave up. For each kind of request, a tenant has a budget that
fits exactly 10 of its reservations, and 100 such requests are sent at once. Afterwards:

- no budget is over its limit, and no settlement was charged above its reservation;
- what the gateway charged equals, or where an answer was lost exceeds, what the mock billed;
- every request the upstream saw carried the bounds the gateway reserved for.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.cost.price_data import shipped_table
from gateway.cost.pricing import Billed
from gateway.proxy.bounds import Defaults
from gateway.proxy.budgets import reserved_cost
from gateway.proxy.endpoints import Endpoint
from gateway.proxy.estimate import estimate
from tests.procs import Proc, gateway_process, mock_upstream
from tests.servers import redis_cluster, redis_server

IN_FLIGHT = 100
FITS = 10
TIMEOUT_S = 2
SETTLE_DEADLINE_S = 30.0
USER = [{"role": "user", "content": "Write a long essay about budgets."}]


@dataclass(frozen=True)
class Kind:
    name: str
    endpoint: Endpoint
    body: dict[str, Any]
    lost: bool = False  # answered after the gateway's timeout: the reservation is charged

    @property
    def secret(self) -> str:
        return f"sk-worst-{self.name}"


KINDS = [
    Kind("uncapped", Endpoint.CHAT, {"model": "gpt-5", "messages": USER}),
    Kind("uncapped-stream", Endpoint.CHAT,
         {"model": "gpt-4o-mini", "messages": USER, "stream": True}),
    Kind("n-choices", Endpoint.CHAT, {"model": "gpt-4.1-mini", "messages": USER, "n": 3}),
    Kind("stored-prompt", Endpoint.RESPONSES,
         {"model": "gpt-5-mini", "prompt": {"id": "pmpt_123"}, "max_output_tokens": 500}),
    Kind("file-input", Endpoint.RESPONSES,
         {"model": "gpt-4.1", "max_output_tokens": 300, "input": [
             {"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]}),
    Kind("priority", Endpoint.RESPONSES,
         {"model": "gpt-5", "input": "hi", "service_tier": "priority",
          "max_output_tokens": 2_000}),
    Kind("flex", Endpoint.CHAT, {"model": "gpt-5", "messages": USER, "service_tier": "flex",
                                 "max_completion_tokens": 4_000}),
    Kind("web-search", Endpoint.RESPONSES,
         {"model": "gpt-5", "input": "news?", "tools": [{"type": "web_search"}],
          "max_output_tokens": 1_000}),
    Kind("prediction", Endpoint.CHAT,
         {"model": "gpt-4o", "messages": USER, "max_completion_tokens": 100,
          "prediction": {"type": "content", "content": "budgets " * 300}}),
    Kind("audio", Endpoint.CHAT, {"model": "gpt-audio", "messages": USER, "max_tokens": 400,
                                  "modalities": ["text", "audio"],
                                  "audio": {"voice": "alloy", "format": "wav"}}),
    Kind("completions", Endpoint.COMPLETIONS,
         {"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon a time"}),
    Kind("background", Endpoint.RESPONSES,
         {"model": "gpt-5-mini", "input": "research", "background": True,
          "max_output_tokens": 800, "metadata": {"mock_background_s": "0.3"}}),
    Kind("late-answer", Endpoint.CHAT,
         {"model": "gpt-4o-mini", "messages": USER, "max_tokens": 50,
          "metadata": {"mock_delay_s": str(TIMEOUT_S + 1)}}, lost=True),
]
TABLE = shipped_table({})
DEFAULTS = Defaults()


async def reservation(kind: Kind) -> tuple[int, int]:
    """(tokens, nano-dollars) the gateway reserves for one request of this kind: the same code
    the gateway runs."""
    price = TABLE.lookup(kind.body["model"])
    assert price is not None, kind.body["model"]
    est = await estimate(kind.endpoint, kind.body, price, DEFAULTS)
    return est.total, reserved_cost(price, est)


def sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def render_config(mock: Proc, store: str) -> tuple[str, dict[str, int]]:
    limits: dict[str, int] = {}
    tenants, budgets = [], []
    for kind in KINDS:
        _, nano = await reservation(kind)
        limits[kind.name] = FITS * nano + nano // 2  # ten fit, the eleventh does not
        tenants.append(f"  {kind.name}:\n    keys:\n      - {{name: k, sha256: "
                       f"\"{sha(kind.secret)}\", role: admin}}")
        budgets.append(f"  - {{name: {kind.name}-cap, tenant: {kind.name}, "
                       f"max_cost_per_day: {limits[kind.name] / 1e9!r}}}")
    config = (
        f'store: "{store}"\n'
        f"upstreams:\n  worst:\n    base_url: \"{mock.url}/v1\"\n    api_key: sk-up\n"
        f"    timeout_s: {TIMEOUT_S}\n"
        "tenants:\n" + "\n".join(tenants) + "\nbudgets:\n" + "\n".join(budgets) + "\n"
    )
    return config, limits


@dataclass
class Outcome:
    statuses: dict[str, list[int]] = field(default_factory=dict)


async def fire(session: aiohttp.ClientSession, base: str, kind: Kind) -> list[int]:
    async def one() -> int:
        async with session.post(base + kind.endpoint.value, json=kind.body,
                                headers={"Authorization": f"Bearer {kind.secret}"}) as resp:
            await resp.read()
            return resp.status

    return list(await asyncio.gather(*(one() for _ in range(IN_FLIGHT))))


async def admin_get(session: aiohttp.ClientSession, base: str, kind: Kind,
                    path: str) -> dict[str, Any]:
    url = base.removesuffix("/v1") + "/api/client/v1" + path
    async with session.get(url, headers={"Authorization": f"Bearer {kind.secret}"}) as resp:
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body


async def report(session: aiohttp.ClientSession, base: str, kind: Kind) -> dict[str, Any]:
    return await admin_get(session, base, kind, "/spend/report")


async def status(session: aiohttp.ClientSession, base: str, kind: Kind) -> dict[str, Any]:
    return await admin_get(session, base, kind, "/budgets/status")


async def mock_ledger(session: aiohttp.ClientSession, mock: Proc) -> dict[str, Any]:
    async with session.get(mock.url + "/v1/mock/stats") as resp:
        body: dict[str, Any] = await resp.json()
        ledger: dict[str, Any] = body["ledger"]
        return ledger


def billed_nano(entry: dict[str, Any]) -> int:
    """What the mock billed for one request, priced as the real API prices it."""
    price = TABLE.lookup(entry["model"])
    assert price is not None
    counts = entry["billed"]
    billed = Billed(
        counts["input_tokens"], counts["output_tokens"], counts["cached_tokens"],
        counts["cache_write_tokens"], counts["input_audio_tokens"], 0,
        counts["output_audio_tokens"], counts["web_searches"], counts["file_searches"],
    )
    tier = entry["service_tier"]
    return price.charge_nano(billed, "default" if tier in (None, "auto") else tier)


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "memory":
        yield "memory://"
    elif request.param == "redis":
        with redis_server(tmp_path) as url:
            yield url
    else:
        with redis_cluster(tmp_path) as url:
            yield url


async def test_budgets_hold_against_the_worst_upstream(
    store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with mock_upstream(tmp_path, worst=True) as mock:
        config_text, limits = await render_config(mock, store_url)
        config = tmp_path / "gateway.yaml"
        config.write_text(config_text)
        with gateway_process(config, tmp_path / "gateway.log") as gw:
            base = gw.url + "/v1"
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as session:
                results = await asyncio.gather(*(fire(session, base, k) for k in KINDS))
                statuses = dict(zip((k.name for k in KINDS), results, strict=True))
                reports = await settled_reports(session, base)
                statuses_after = {k.name: await status(session, base, k) for k in KINDS}
                ledger = await mock_ledger(session, mock)
            log = gw.output()
    figures = []
    for kind in KINDS:
        got = statuses[kind.name]
        ok = 504 if kind.lost else 200
        admitted = got.count(ok)
        assert set(got) <= {ok, 429}, (kind.name, sorted(set(got)))  # no 503 on any store
        assert admitted >= FITS, (kind.name, admitted)
        charged = round(reports[kind.name]["total_cost"] * 1e9)
        assert charged <= limits[kind.name], kind.name
        for budget in statuses_after[kind.name]["budgets"]:
            for limit in budget["limits"]:
                assert limit["used"] <= limit["max"], (kind.name, limit)
        figures.append(f"{kind.name}: {admitted} admitted, {got.count(429)} x 429, "
                       f"{got.count(503)} x 503, charged "
                       f"${charged / 1e9:.4f} of ${limits[kind.name] / 1e9:.4f}")
    assert "billed above the reservation" not in log
    entries = [e for e in ledger["entries"] if e["state"] != "refused"]
    unbounded = [e for e in entries if not e["caps"] or (
        e["path"] != Endpoint.COMPLETIONS.value and e["service_tier"] is None)]
    assert unbounded == [], "every upstream request carries the bounds reserved for it"
    searching = [e for e in entries if e["path"] == Endpoint.RESPONSES.value
                 and e["model"] == "gpt-5" and e.get("max_tool_calls") is not None]
    assert searching, "the web search requests carried max_tool_calls"
    total_charged = sum(round(r["total_cost"] * 1e9) for r in reports.values())
    billed = sum(billed_nano(e) for e in entries if e["billed"] is not None)
    # lost answers are charged their reservation, which covers what the mock billed for them
    assert total_charged >= billed - len(entries), (total_charged, billed)
    total_requests = sum(r["requests"] for r in reports.values())
    with capsys.disabled():
        print(f"\n[worst upstream, {store_url.split(':')[0]}] {len(KINDS)} kinds x "
              f"{IN_FLIGHT} in flight, budgets fitting {FITS}: {total_requests} charged, "
              f"${total_charged / 1e9:.4f} in all (the mock billed ${billed / 1e9:.4f}), "
              f"0 over any limit, 0 over a reservation, {len(entries)} upstream requests all "
              "bounded")
        for line in figures:
            print("  " + line)


async def settled_reports(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    """The reports once background responses have settled (their requests are counted)."""
    deadline = time.monotonic() + SETTLE_DEADLINE_S
    previous: dict[str, Any] = {}
    while True:  # until the background ones are counted and two reads agree (streams settle
        reports = {k.name: await report(session, base, k) for k in KINDS}  # just after EOF)
        done = reports["background"]["requests"] >= FITS and reports == previous
        if done or time.monotonic() > deadline:
            return reports
        previous = reports
        await asyncio.sleep(0.2)


def test_the_kinds_reserve_what_they_should() -> None:
    """The scenario's premises: hidden context reserves the context window, and uncapped
    requests reserve the model's maximum output."""
    stored = asyncio.run(reservation(KINDS[3]))[0]
    price = TABLE.lookup("gpt-5-mini")
    assert price is not None and price.context_window is not None
    assert stored == price.context_window
    uncapped = asyncio.run(reservation(KINDS[0]))[0]
    assert uncapped > 128_000
    assert math.isfinite(uncapped)
