"""One hostile tenant does everything at once while another sends normal traffic.

The hostile tenant, with a member key and nothing else: thousands of distinct model names (each
a would-be metric label), requests held by a throttle budget whose clients then vanish, slow
bodies and slow headers, malformed headers carrying its key, duplicate JSON keys, thousands of
budgets of its own. The quiet tenant's latency stays within 2x of its quiet-run figure, and the
gateway's RSS stays under a stated bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.proxy.endpoints import Endpoint
from gateway.proxy.estimate import count_input_tokens
from tests.procs import Proc, gateway_process, mock_upstream, p99, rss_mb

QUIET = "sk-quiet-tenant-0123456789abcdef"
BENIGN = "sk-benign-tenant-0123456789abcdef"
HOSTILE = "sk-hostile-tenant-0123456789abcdef"
OPS_TOKEN = "ops-token-0123456789abcdef"
QUIET_REQUESTS = 300
HOSTILE_BUDGETS = 2_000  # YAML budgets of the hostile tenant, each scoped to its own model
RSS_BOUND_MB = 400.0
PACE_S = 0.01  # between one loop's requests: abuse, not a CPU flood (a rate limit's job)
P99_FACTOR = 2.0
P99_FLOOR_MS = 5.0  # below this, a 2x bound would measure the VM's scheduler, not the gateway
BODY: dict[str, Any] = {"model": "gpt-4o-mini", "max_tokens": 8,
        "messages": [{"role": "user", "content": "hello"}]}


def sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


HELD_BODY = {**BODY, "messages": [{"role": "user", "content": "x" * 200_000}]}


def config(mock: Proc) -> str:
    """The throttle budget has room for one held-kind request an hour: after the first, every
    one is held (it would fit in an hour, within max_wait_s) until its client leaves."""
    held_room = (count_input_tokens(Endpoint.CHAT, HELD_BODY)[0] + BODY["max_tokens"]) * 3 // 2
    budgets = "\n".join(
        f"  - {{name: h{i}, tenant: hostile, model: \"gpt-4o-2024-{i:05d}\", "
        f"max_tokens_per_day: 1000}}" for i in range(HOSTILE_BUDGETS))
    return f"""
upstreams:
  mock: {{base_url: "{mock.url}/v1", api_key: sk-up, timeout_s: 10}}
pricing:
  "gpt-4o-2024-*": {{input: 2.5, output: 10.0}}
ops: {{token: "{OPS_TOKEN}"}}
limits: {{header_timeout_s: 2, body_timeout_s: 2, held_per_tenant: 50, max_wait_s: 7200}}
tenants:
  quiet:
    keys: [{{name: q, sha256: "{sha(QUIET)}"}}]
  benign:
    keys: [{{name: b, sha256: "{sha(BENIGN)}"}}]
  hostile:
    keys: [{{name: h, sha256: "{sha(HOSTILE)}"}}]
budgets:
  - {{name: held, tenant: hostile, model: "gpt-4o-mini", max_tokens_per_hour: {held_room},
     action: throttle, max_wait_s: 7200}}
{budgets}
"""



async def quiet_latencies(session: aiohttp.ClientSession, url: str) -> list[float]:
    out = []
    for _ in range(QUIET_REQUESTS):
        started = time.perf_counter()
        async with session.post(url + "/v1/chat/completions", json=BODY,
                                headers={"Authorization": f"Bearer {QUIET}"}) as resp:
            await resp.read()
            assert resp.status == 200
        out.append((time.perf_counter() - started) * 1000)
    return out



class Hostile:
    """Every abuse at once, in loops, until told to stop; counts what it sent."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self.stop = asyncio.Event()
        self.counts = {"models": 0, "held": 0, "slow": 0, "malformed": 0, "duplicates": 0}
        self.auth = {"Authorization": f"Bearer {HOSTILE}"}

    async def going(self) -> None:
        """Until every abuse has been sent at least a few times (bounded)."""
        deadline = time.monotonic() + 30
        while min(self.counts.values()) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def run(self) -> dict[str, int]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(
                *(self.models(session) for _ in range(4)),
                *(self.held(session) for _ in range(8)),
                *(self.slow() for _ in range(20)), self.malformed(), self.duplicates(session),
            )
        return self.counts

    async def models(self, session: aiohttp.ClientSession) -> None:
        """Distinct model names matching a price glob: would-be metric labels."""
        i = 0
        while not self.stop.is_set():
            body = {**BODY, "model": f"gpt-4o-2024-x{i}"}
            async with session.post(self.url + "/v1/chat/completions", json=body,
                                    headers=self.auth) as resp:
                await resp.read()
            i += 1
            self.counts["models"] += 1
            await asyncio.sleep(PACE_S)

    async def held(self, session: aiohttp.ClientSession) -> None:
        """200 KB requests a throttle budget holds, whose clients leave at once."""
        body = HELD_BODY
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError, aiohttp.ClientError):
                async with asyncio.timeout(0.2):
                    async with session.post(self.url + "/v1/chat/completions", json=body,
                                            headers=self.auth) as resp:
                        await resp.read()
            self.counts["held"] += 1

    async def slow(self) -> None:
        """A 1 MB body announced, sent a byte at a time."""
        while not self.stop.is_set():
            _, writer = await asyncio.open_connection(self.host, self.port)
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                         b"Authorization: Bearer " + HOSTILE.encode() + b"\r\n"
                         b"Content-Length: 1000000\r\n\r\n{")
            with contextlib.suppress(OSError):
                for _ in range(30):
                    if self.stop.is_set():
                        break
                    writer.write(b" ")
                    await writer.drain()
                    await asyncio.sleep(0.1)
            writer.close()
            self.counts["slow"] += 1

    async def malformed(self) -> None:
        """The tenant's own key with a stray control byte: never echoed, never logged."""
        while not self.stop.is_set():
            with contextlib.suppress(OSError, TimeoutError):
                reader, writer = await asyncio.open_connection(self.host, self.port)
                writer.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                             + HOSTILE.encode() + b"\x0b\r\n\r\n")
                await writer.drain()
                answer = await asyncio.wait_for(reader.read(65536), 5)
                assert HOSTILE.encode() not in answer
                writer.close()
            self.counts["malformed"] += 1
            await asyncio.sleep(0.01)

    async def duplicates(self, session: aiohttp.ClientSession) -> None:
        raw = (b'{"model":"gpt-4o-mini","max_tokens":1,"max_tokens":100000,'
               b'"messages":[{"role":"user","content":"hi"}]}')
        headers = {**self.auth, "Content-Type": "application/json"}
        while not self.stop.is_set():
            async with session.post(self.url + "/v1/chat/completions", data=raw,
                                    headers=headers) as resp:
                await resp.read()
                assert resp.status == 400
            self.counts["duplicates"] += 1
            await asyncio.sleep(PACE_S)


class Benign:
    """The same number of loops at the same pace, sending ordinary requests: the load the
    hostile tenant's abuse is compared with (an abuse must cost no more than its volume)."""

    LOOPS = 14  # the hostile tenant's busy loops: 4 models, 8 held, 1 malformed, 1 duplicate

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = asyncio.Event()
        self.sent = 0

    async def run(self) -> int:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            await asyncio.gather(*(self.loop(session) for _ in range(self.LOOPS)))
        return self.sent

    async def loop(self, session: aiohttp.ClientSession) -> None:
        headers = {"Authorization": f"Bearer {BENIGN}"}
        while not self.stop.is_set():
            async with session.post(self.url + "/v1/chat/completions", json=BODY,
                                    headers=headers) as resp:
                await resp.read()
            self.sent += 1
            await asyncio.sleep(PACE_S)


async def under(load: Benign | Hostile, session: aiohttp.ClientSession,
                url: str) -> tuple[list[float], Any]:
    """The quiet tenant's latencies while ``load`` runs, and what the load sent."""
    running = asyncio.ensure_future(load.run())
    if isinstance(load, Hostile):
        await load.going()
    loud = await quiet_latencies(session, url)
    load.stop.set()
    return loud, await asyncio.wait_for(running, 30)


@contextlib.contextmanager
def rig(tmp: Path) -> Iterator[Proc]:
    with mock_upstream(tmp) as mock:
        path = tmp / "gateway.yaml"
        path.write_text(config(mock))
        with gateway_process(path, tmp / "gateway.log") as gateway:
            yield gateway


ROUNDS = 3
"""A p99 of a few hundred requests on a shared 2-core VM is noisy: the bound must hold in one
of this many rounds (a real slowdown, such as an O(n) path per abusive request, fails every
round; a scheduling hiccup fails one)."""


async def test_a_hostile_tenant_cannot_slow_another(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    rounds: list[tuple[list[float], list[float], float]] = []
    with rig(tmp_path) as gateway:
        async with aiohttp.ClientSession() as session:
            await quiet_latencies(session, gateway.url)  # warm up
            quiet = await quiet_latencies(session, gateway.url)
            rss_before = rss_mb(gateway.popen.pid)
            rss_peak = rss_before
            for _ in range(ROUNDS):
                busy, sent = await under(Benign(gateway.url), session, gateway.url)
                loud, counts = await under(Hostile(gateway.url), session, gateway.url)
                rss_peak = max(rss_peak, rss_mb(gateway.popen.pid))
                limit = max(P99_FACTOR * p99(busy), P99_FLOOR_MS)
                rounds.append((busy, loud, limit))
                if p99(loud) <= limit:
                    break
            async with session.get(gateway.url + "/metrics",
                                   headers={"Authorization": f"Bearer {OPS_TOKEN}"}) as resp:
                metrics = await resp.text()
        log = gateway.output()
        assert gateway.popen.poll() is None
    with capsys.disabled():
        print(f"\n[abuse, combined] hostile tenant (last round): {counts}; quiet tenant p50/p99 "
              f"{statistics.median(quiet):.2f}/{p99(quiet):.2f} ms alone; RSS "
              f"{rss_before:.0f} -> {rss_peak:.0f} MB (bound {RSS_BOUND_MB:.0f}); /metrics "
              f"{len(metrics):,} bytes")
        for busy, loud, limit in rounds:
            print(f"  round: {statistics.median(busy):.2f}/{p99(busy):.2f} ms beside the same "
                  f"volume of ordinary requests ({sent}), {statistics.median(loud):.2f}/"
                  f"{p99(loud):.2f} ms under attack (bound {limit:.2f} ms)")
    assert any(p99(loud) <= limit for _, loud, limit in rounds)
    assert rss_peak <= RSS_BOUND_MB
    assert "gpt-4o-2024-x" not in metrics, "a client's model name became a metric label"
    assert HOSTILE not in log and HOSTILE not in metrics
