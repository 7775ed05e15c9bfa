"""The ``limits:`` bounds in process: the throttle wait cap, held requests and requests in flight
per tenant and in all (a 429 at once past them), and held requests dropped when their clients
leave, bodies freed."""

from __future__ import annotations

import asyncio
import logging
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from gateway.appkeys import PIPELINE
from gateway.clock import FakeClock
from gateway.cost.windows import HOUR
from gateway.proxy import estimate as estimate_stage
from gateway.proxy.endpoints import Endpoint
from gateway.proxy.gate import Counter, Departures, Gate
from tests.proxy.conftest import KEYS, Harness, MakeHarness, config_text

THROTTLED = """
  - {name: slow, tenant: acme, max_tokens_per_hour: 30, action: throttle, max_wait_s: 4000}
  - {name: slow-g, tenant: globex, max_tokens_per_hour: 30, action: throttle, max_wait_s: 4000}
"""
HELD_LIMITS = "limits: {max_wait_s: 4000, held_per_tenant: 2, held_total: 3}"
TENANT_OF = {"ci": "acme", "other": "globex"}


def gate_of(gw: Harness) -> Gate:
    return gw.app[PIPELINE].gate


def without_handler_cancellation(gw: Harness) -> Harness:
    """As ``gateway serve`` runs: a client that closes does not cancel its handler (aiohttp's
    test server would), so only the gateway's own watch can notice it left."""
    server = gw.client.server.runner.server
    assert server is not None
    server.handler_cancellation = False
    return gw


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> float:
    """Seconds until ``predicate()`` held (polled every 10 ms); fails after ``timeout_s``."""
    started = time.perf_counter()
    while not predicate():
        if time.perf_counter() - started > timeout_s:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
    return time.perf_counter() - started


async def hold(gw: Harness, key: str = "ci", **fields: Any) -> asyncio.Task[Any]:
    """A request that is held: sent, then waited for until the gate counts it."""
    gate, tenant = gate_of(gw), TENANT_OF[key]
    before = gate.held.of(tenant)
    task = asyncio.ensure_future(gw.chat(max_tokens=10, key=key, **fields))
    await until(lambda: gate.held.of(tenant) > before or task.done())
    assert not task.done(), "held, not answered"
    return task


async def leave(tasks: list[asyncio.Task[Any]]) -> None:
    """The clients go away: their requests are cancelled and their connections closed."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def throttled(gateway: MakeHarness, extra: str = HELD_LIMITS) -> tuple[Harness, FakeClock]:
    """Each tenant's throttle budget is full after one request: the next ones are held."""
    clock = FakeClock()
    gw = await gateway(THROTTLED, extra=extra, clock=clock)
    assert (await gw.chat(max_tokens=10)).status == 200
    assert (await gw.chat(max_tokens=10, key="other")).status == 200
    return gw, clock


def admin_auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS['admin']}"}


async def error_of(resp: Any) -> dict[str, Any]:
    error: dict[str, Any] = (await resp.json())["error"]
    return error


@pytest.mark.parametrize("lowered", ["", "limits: {max_wait_s: 3000}"])
async def test_a_stored_budgets_wait_is_capped_by_limits_max_wait_s(
    gateway: MakeHarness, lowered: str
) -> None:
    """An API budget made to wait 4,000 s while the cap allowed it keeps its ``max_wait_s``
    when a reload lowers the cap (600 s by default); its room frees in about 3,660 s, so its
    requests are held before the reload and refused at once after it."""
    gw = await gateway(extra="limits: {max_wait_s: 4000}", clock=FakeClock())
    made = await gw.client.post("/api/client/v1/budgets", headers=admin_auth(), json={
        "name": "slow", "max_tokens_per_hour": 30, "action": "throttle", "max_wait_s": 4000})
    assert made.status == 201, await made.text()
    assert (await gw.chat(max_tokens=10)).status == 200
    await leave([await hold(gw)])

    mock_url = gw.config.current.settings.upstreams[0].base_url.removesuffix("/v1")
    gw.path.write_text(config_text(mock_url, "", lowered))
    assert gw.config.reload()
    started = time.perf_counter()
    denied = await gw.chat(max_tokens=10)
    assert time.perf_counter() - started < 1.0, "refused at once, not after a wait"
    assert denied.status == 429
    assert (await error_of(denied))["code"] == "budget_exceeded"
    assert int(denied.headers["Retry-After"]) >= HOUR.length_s
    assert gate_of(gw).held.total == 0


async def test_held_requests_are_bounded_per_tenant_and_in_all(gateway: MakeHarness) -> None:
    gw, _ = await throttled(gateway)
    gate = gate_of(without_handler_cancellation(gw))
    held = [await hold(gw), await hold(gw)]

    started = time.perf_counter()
    third = await gw.chat(max_tokens=10)
    assert time.perf_counter() - started < 1.0, "refused at once"
    assert third.status == 429
    error = await error_of(third)
    assert (error["type"], error["code"]) == ("rate_limit_exceeded", "too_many_held_requests")
    assert "'acme'" in error["message"] and "limits.held_per_tenant" in error["message"]
    assert int(third.headers["Retry-After"]) >= HOUR.length_s, "when its budget has room"

    held.append(await hold(gw, key="other"))  # globex has room of its own: 3 held in all
    refused = await gw.chat(max_tokens=10, key="other")
    assert refused.status == 429
    error = await error_of(refused)
    assert error["code"] == "too_many_held_requests"
    assert "limits.held_total" in error["message"] and "'globex'" in error["message"]
    assert (gate.held.of("acme"), gate.held.of("globex"), gate.held.total) == (2, 1, 3)

    await leave(held)
    await until(lambda: gate.held.total == 0)
    assert len(gate.held) == 0, "no entry left for a tenant with nothing held"
    await leave([await hold(gw, key="other")])  # room again


async def test_a_held_request_whose_client_leaves_is_dropped_at_once_body_freed(
    gateway: MakeHarness, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """The clock never moves: only the clients leaving can end these holds. The bodies are
    read before the hold; once the clients leave, nothing keeps them."""
    count, size = 20, 200_000
    gw = without_handler_cancellation(
        await gateway(clock=FakeClock(), max_body_bytes=1_000_000))
    body = {"model": "gpt-4o-mini", "max_tokens": 10,
            "messages": [{"role": "user", "content": "hello " * (size // 6)}]}
    runtime = gw.config.current
    price = runtime.router.prices.lookup("gpt-4o-mini")
    assert price is not None
    need = (await estimate_stage.estimate(Endpoint.CHAT, body, price, runtime.defaults)).total
    mock_url = runtime.settings.upstreams[0].base_url.removesuffix("/v1")
    gw.path.write_text(config_text(mock_url, f"""
  - {{name: big, tenant: acme, max_tokens_per_hour: {need * 3 // 2}, action: throttle,
     max_wait_s: 4000}}
""", f"limits: {{max_wait_s: 4000, held_per_tenant: {count}}}", 1_000_000))
    assert gw.config.reload()
    assert (await gw.post("/chat/completions", body)).status == 200  # fills the budget
    gate = gate_of(gw)

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        with caplog.at_level(logging.INFO, logger="gateway.proxy.gate"):
            tasks = [asyncio.ensure_future(gw.post("/chat/completions", body))
                     for _ in range(count)]
            await until(lambda: gate.held.total == count, timeout_s=30)
            peak = tracemalloc.get_traced_memory()[0]
            await leave(tasks)
            tasks.clear()  # a cancelled task's traceback keeps the client's copy of the body
            dropped_s = await until(lambda: gate.held.total == 0)
            await asyncio.sleep(0.05)  # the handlers answer their 499s and end
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    mb = 1 / 1e6
    with capsys.disabled():
        print(f"\n{count} held x {size // 1000} KB: traced memory {before * mb:.1f} MB before, "
              f"{peak * mb:.1f} MB held, {after * mb:.1f} MB after; dropped in {dropped_s:.2f} s")
    assert peak - before > count * size, "the bodies were held while waiting"
    assert after - before < size * 2, "nothing keeps a dropped request's body"
    assert dropped_s < 1.0
    assert len(gate.held) == 0 and len(gate.departures) == 0
    ended = [r.getMessage() for r in caplog.records if "budget hold ended" in r.getMessage()]
    assert len(ended) == count and all("outcome=client-gone" in m for m in ended)
    assert await gw.in_flight() == 0, "nothing was reserved for them"


async def test_one_hold_line_when_it_starts_and_one_when_it_ends(
    gateway: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    gw, clock = await throttled(gateway, "limits: {max_wait_s: 4000}")
    with caplog.at_level(logging.INFO, logger="gateway.proxy.gate"):
        first, second = await hold(gw), await hold(gw)
        for _ in range(20):  # twenty re-checks of the budget: still one line each
            clock.advance(1.0)
            await asyncio.sleep(0.01)
        clock.advance(HOUR.length_s + HOUR.width)  # room for one: the other waits an hour more
        statuses = sorted([(await first).status, (await second).status])
    assert statuses == [200, 429]
    lines = [r.getMessage() for r in caplog.records if "budget hold" in r.getMessage()]
    started = [m for m in lines if m.startswith("budget hold started")]
    ended = sorted(m.split("outcome=")[1].split()[0] for m in lines if "ended" in m)
    assert len(started) == 2 and all("tenant=acme budgets=slow" in m for m in started)
    assert ended == ["admitted", "denied"]
    assert len(lines) == 4


def chat_request(key: str, body: bytes) -> bytes:
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
            f"Authorization: Bearer {KEYS[key]}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


class SlowBody:
    """A request whose headers are sent and whose body is only half sent, until ``finish``."""

    def __init__(self, gw: Harness, key: str) -> None:
        self._gw, self._key = gw, key
        self._body = orjson.dumps({"model": "gpt-4o-mini", "max_tokens": 5,
                                   "messages": [{"role": "user", "content": "hi"}]})

    async def start(self) -> SlowBody:
        server = self._gw.client.server
        self._reader, self._writer = await asyncio.open_connection(server.host, server.port)
        self._writer.write(chat_request(self._key, self._body)[:-10])
        await self._writer.drain()
        return self

    async def finish(self) -> int:
        self._writer.write(self._body[-10:])
        status = int((await self._reader.readline()).split()[1])
        self._writer.close()
        return status


async def test_requests_in_flight_are_bounded_per_tenant_and_in_all(
    gateway: MakeHarness,
) -> None:
    """Counted from admission, before the body is read: a tenant cannot pile up bodies."""
    gw = await gateway(extra="limits: {concurrent_per_tenant: 2, concurrent_total: 3}")
    gate = gate_of(gw)
    slow = [await SlowBody(gw, "ci").start(), await SlowBody(gw, "ci").start()]
    await until(lambda: gate.concurrent.of("acme") == 2)

    started = time.perf_counter()
    refused = await gw.chat()
    assert time.perf_counter() - started < 1.0
    assert refused.status == 429 and refused.headers["Retry-After"] == "1"
    error = await error_of(refused)
    assert (error["type"], error["code"]) == ("rate_limit_exceeded",
                                              "too_many_concurrent_requests")
    assert "'acme'" in error["message"] and "limits.concurrent_per_tenant" in error["message"]
    assert (await gw.chat(key="other")).status == 200, "another tenant is still served"

    slow.append(await SlowBody(gw, "other").start())
    await until(lambda: gate.concurrent.total == 3)
    refused = await gw.chat(key="other")
    assert refused.status == 429
    assert "limits.concurrent_total" in (await error_of(refused))["message"]

    assert [await s.finish() for s in slow] == [200, 200, 200]
    await until(lambda: gate.concurrent.total == 0)
    assert len(gate.concurrent) == 0, "no entry left for a tenant with nothing in flight"


async def test_a_stream_counts_in_flight_until_its_end(gateway: MakeHarness) -> None:
    gw = await gateway(extra="limits: {concurrent_per_tenant: 1}")
    gate = gate_of(gw)
    stream = await gw.chat(max_tokens=10, stream=True,
                           metadata={"mock_fault": "slow_stream:0.02"})
    assert stream.status == 200
    await stream.content.readline()  # the first frame is out; the rest is still coming
    assert gate.concurrent.of("acme") == 1
    assert (await gw.chat()).status == 429
    await stream.read()
    await until(lambda: gate.concurrent.total == 0)
    assert (await gw.chat()).status == 200


def test_a_counter_keeps_no_entry_for_a_tenant_at_zero() -> None:
    counter = Counter()
    for tenant in ("a", "b", "a"):
        counter.add(tenant)
    assert (counter.of("a"), counter.of("b"), counter.total, len(counter)) == (2, 1, 3, 2)
    for tenant in ("a", "b", "a"):
        counter.remove(tenant)
    assert (counter.total, len(counter)) == (0, 0)


async def test_departures_watch_with_one_task_that_ends_when_idle() -> None:
    departures = Departures(interval_s=0.01)
    gone = {"x": False, "y": False, "z": False}
    x = departures.watch(lambda: gone["x"])
    y = departures.watch(lambda: gone["y"])
    z = departures.watch(lambda: gone["z"])
    gone["x"] = gone["y"] = True
    await asyncio.wait_for(asyncio.gather(x, y), 1)
    assert not z.done() and len(departures) == 1
    departures.forget(z)
    await until(lambda: departures._task is None or departures._task.done(), timeout_s=1)
    await departures.close()
