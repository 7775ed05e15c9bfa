"""Throttle pile-up and concurrency bounds against a real gateway process (issue 13).

Held requests are bounded per tenant and in all, requests in flight too (a 429 at once past
them, another tenant still served), a budget's ``max_wait_s`` is capped by ``limits.max_wait_s``,
and a held request whose client leaves is dropped at once with its body: 300 x 500 KB held
requests whose clients close give their memory back within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests import leaks
from tests.procs import Proc, gateway_process, mock_upstream, rss_mb

TENANTS = ("a", "b", "c")
SECRETS = {t: f"sk-e2e-holds-{t}-0123456789" for t in TENANTS}
ADMIN = "sk-e2e-holds-a-admin-0123456789"  # tenant a's admin key
leaks.SECRETS.update([*SECRETS.values(), ADMIN])
MAX_TOKENS = 10
HOUR_S = 3600


def chat(content: str = "count to ten", **fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "max_tokens": MAX_TOKENS,
            "messages": [{"role": "user", "content": content}], **fields}


def sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def config(mock: Proc, limits: str, per_request: int | None) -> str:
    """Each tenant's throttle budget has room for one request (``per_request`` tokens) an
    hour; without ``per_request`` there are no budgets in the file."""
    keys = {t: [f"{{name: app, sha256: \"{sha(s)}\"}}"] for t, s in SECRETS.items()}
    keys["a"].append(f"{{name: admin, sha256: \"{sha(ADMIN)}\", role: admin}}")
    tenants = "\n".join(f"  {t}:\n    keys:\n" + "\n".join(f"      - {k}" for k in listed)
                        for t, listed in keys.items())
    budgets = "\n".join(
        f"  - {{name: hourly-{t}, tenant: {t}, max_tokens_per_hour: {per_request * 3 // 2}, "
        f"action: throttle, max_wait_s: 7200}}" for t in TENANTS) if per_request else "  []"
    return f"""
max_body_bytes: 1048576
upstreams:
  mock: {{base_url: "{mock.url}/v1", api_key: "k", timeout_s: 30}}
limits: {limits}
tenants:
{tenants}
budgets:
{budgets}
"""


def tokens_of(mock: Proc, body: dict[str, Any]) -> int:
    """One request's size as the gateway counts it (the mock reports the gateway's count)."""
    asked = urllib.request.Request(f"{mock.url}/v1/chat/completions", data=orjson.dumps(body),
                                   headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(asked, timeout=30) as resp:
        usage = orjson.loads(resp.read())["usage"]
    return int(usage["prompt_tokens"]) + MAX_TOKENS


@dataclass
class Rig:
    gateway: Proc
    config: Path
    mock: Proc
    per_request: int  # tokens one ``chat()`` reserves, about


@contextlib.contextmanager
def rig(tmp: Path, limits: str, body: dict[str, Any] | None = None,
        file_budgets: bool = True) -> Iterator[Rig]:
    """A mock upstream and a gateway; throttle budgets in the file sized to ``body``."""
    with mock_upstream(tmp) as mock:
        per_request = tokens_of(mock, body or chat())
        path = tmp / "gateway.yaml"
        path.write_text(config(mock, limits, per_request if body and file_budgets else None))
        with gateway_process(path, tmp / "gateway.log") as gateway:
            yield Rig(gateway, path, mock, per_request)


@contextlib.asynccontextmanager
async def session_of(tenant: str) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {SECRETS[tenant]}"}
    async with aiohttp.ClientSession(headers=headers,
                                     connector=aiohttp.TCPConnector(limit=0)) as session:
        yield session


async def post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]
               ) -> tuple[int, dict[str, Any], float, dict[str, str]]:
    """Status, error (if any), seconds taken and headers of one request."""
    started = time.perf_counter()
    async with session.post(url + "/v1/chat/completions", json=body) as resp:
        data = await resp.json()
        error = data.get("error") or {}
        return resp.status, error, time.perf_counter() - started, dict(resp.headers)


def hold_lines(gateway: Proc, kind: str) -> list[str]:
    """The gateway's "budget hold started|ended" log lines."""
    out = []
    for line in gateway.output().splitlines():
        if line.startswith("{"):
            msg = orjson.loads(line).get("msg", "")
            if msg.startswith(f"budget hold {kind}"):
                out.append(msg)
    return out


async def until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> float:
    started = time.perf_counter()
    while not predicate():
        if time.perf_counter() - started > timeout_s:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
    return time.perf_counter() - started



async def test_held_requests_are_bounded_per_tenant_and_in_all(tmp_path: Path) -> None:
    limits = "{max_wait_s: 7200, held_per_tenant: 3, held_total: 5}"
    with rig(tmp_path, limits, chat()) as rigged:
        gateway, url = rigged.gateway, rigged.gateway.url
        async with session_of("a") as a, session_of("b") as b, session_of("c") as c:
            for session in (a, b, c):  # each budget is full for the next hour
                assert (await post(session, url, chat()))[0] == 200
            waiting = [asyncio.ensure_future(post(s, url, chat())) for s in (a, a, a, b, b)]
            await until(lambda: len(hold_lines(gateway, "started")) == 5)

            status, error, took, headers = await post(a, url, chat())
            assert (status, error["code"]) == (429, "too_many_held_requests")
            assert "'a'" in error["message"] and "limits.held_per_tenant" in error["message"]
            assert took < 1.0 and int(headers["Retry-After"]) >= HOUR_S
            status, error, took, _ = await post(c, url, chat())
            assert (status, error["code"]) == (429, "too_many_held_requests")
            assert "'c'" in error["message"] and "limits.held_total" in error["message"]
            assert took < 1.0

            for task in waiting:  # the clients leave: their holds end, room for others
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)
            await until(lambda: len(hold_lines(gateway, "ended")) == 5, timeout_s=2)
            assert all("outcome=client-gone" in m for m in hold_lines(gateway, "ended"))
            last = asyncio.ensure_future(post(c, url, chat()))
            await until(lambda: len(hold_lines(gateway, "started")) == 6)
            last.cancel()
            await asyncio.gather(last, return_exceptions=True)
            await until(lambda: len(hold_lines(gateway, "ended")) == 6, timeout_s=2)


async def test_requests_in_flight_are_bounded_per_tenant_and_in_all(tmp_path: Path) -> None:
    """Streams count until their end; past a bound a 429 at once, another tenant served."""
    slow = chat(stream=True, metadata={"mock_fault": "slow_stream:0.3"})
    with rig(tmp_path, "{concurrent_per_tenant: 2, concurrent_total: 3}") as rigged:
        url = rigged.gateway.url
        async with session_of("a") as a, session_of("b") as b:
            streams = []
            for session in (a, a, b):
                resp = await session.post(url + "/v1/chat/completions", json=slow)
                assert resp.status == 200
                await resp.content.readline()  # streaming: in flight until its last frame
                streams.append(resp)
                if len(streams) == 2:
                    status, error, took, headers = await post(a, url, chat())
                    assert (status, error["code"]) == (429, "too_many_concurrent_requests")
                    assert "'a'" in error["message"]
                    assert "limits.concurrent_per_tenant" in error["message"]
                    assert took < 1.0 and headers["Retry-After"] == "1"
                    assert (await post(b, url, chat()))[0] == 200, "another tenant served"
            status, error, took, _ = await post(b, url, chat())
            assert (status, error["code"]) == (429, "too_many_concurrent_requests")
            assert "limits.concurrent_total" in error["message"] and took < 1.0
            for resp in streams:
                assert b"[DONE]" in await resp.read()
                resp.release()
            assert (await post(a, url, chat()))[0] == 200, "counted until the end, no longer"


async def test_a_stored_budgets_wait_is_capped_by_the_gateway(tmp_path: Path) -> None:
    """An API budget made to wait up to 7,200 s while the cap was 7,200 s keeps that
    ``max_wait_s`` when a reload lowers the cap to its default (600 s). Its room frees in about
    an hour: held before the reload, refused at once after it."""
    with rig(tmp_path, "{max_wait_s: 7200}", chat(), file_budgets=False) as rigged:
        gateway, url = rigged.gateway, rigged.gateway.url
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN}"}) as admin:
            budget = {"name": "slow", "max_tokens_per_hour": rigged.per_request * 3 // 2,
                      "action": "throttle", "max_wait_s": 7200}
            async with admin.post(url + "/api/client/v1/budgets", json=budget) as made:
                assert made.status == 201, await made.text()
        async with session_of("a") as a:
            assert (await post(a, url, chat()))[0] == 200
            held = asyncio.ensure_future(post(a, url, chat()))
            await until(lambda: len(hold_lines(gateway, "started")) == 1)
            held.cancel()
            await asyncio.gather(held, return_exceptions=True)

            rigged.config.write_text(config(rigged.mock, "{}", None))
            await until(lambda: "configuration reloaded" in gateway.output())
            status, error, took, headers = await post(a, url, chat())
    assert (status, error["code"]) == (429, "budget_exceeded")
    assert took < 1.0 and int(headers["Retry-After"]) >= HOUR_S
    assert len(hold_lines(gateway, "started")) == 1


async def send_and_stay(url: str, body: bytes) -> asyncio.StreamWriter:
    """A client that sends its whole request, then waits for an answer it will not read."""
    host, port = url.removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        (f"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
         f"Authorization: Bearer {SECRETS['a']}\r\nContent-Type: application/json\r\n"
         f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
    await writer.drain()
    return writer


async def test_held_requests_whose_clients_close_are_dropped_with_their_bodies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """300 x 500 KB requests held (each read whole before its hold), then their clients close
    at once: every hold ends within a second or two and RSS returns near where it started."""
    count, size = 300, 500_000
    big = chat("hello " * (size // 6))
    data = orjson.dumps(big)
    limits = f"{{max_wait_s: 7200, held_per_tenant: {count}, held_total: {count}}}"
    with rig(tmp_path, limits, big) as rigged:
        gateway = rigged.gateway
        pid = gateway.popen.pid
        async with session_of("a") as a:
            assert (await post(a, gateway.url, big))[0] == 200  # fills the hour
        await asyncio.sleep(0.5)
        before = rss_mb(pid)
        clients = await asyncio.gather(*(send_and_stay(gateway.url, data) for _ in range(count)))
        held_s = await until(lambda: len(hold_lines(gateway, "started")) == count, 120)
        peak = rss_mb(pid)
        for writer in clients:
            writer.close()
        dropped_s = await until(lambda: len(hold_lines(gateway, "ended")) == count, 10)
        after, settled_s = rss_mb(pid), 0.0
        while after - before > (peak - before) * 0.2 and settled_s < 5:
            await asyncio.sleep(0.25)
            settled_s += 0.25
            after = rss_mb(pid)
    with capsys.disabled():
        print(f"\n{count} x {size // 1000} KB held (in {held_s:.1f} s): gateway RSS "
              f"{before:.0f} MB before, {peak:.0f} MB held, {after:.0f} MB "
              f"{dropped_s + settled_s:.1f} s after the clients closed "
              f"(all {count} holds ended in {dropped_s:.2f} s)")
    assert peak - before > count * size / 2**20, "the bodies were held while waiting"
    assert all("outcome=client-gone" in m for m in hold_lines(gateway, "ended"))
    assert len(hold_lines(gateway, "started")) == count, "one line per hold, not per poll"
    assert dropped_s < 3.0
    assert after - before < (peak - before) * 0.2, "the dropped bodies' memory came back"
