"""Graceful shutdown of real gateway processes: SIGTERM lets the streams in flight finish and
records every one of them; ``--workers 2`` on Redis shares the port and stops as one."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from gateway.cost.model import Filter
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SqliteStore
from tests import leaks
from tests.procs import Proc, free_port, mock_upstream, running
from tests.servers import redis_server


async def saved_store(state: Path) -> SqliteStore:
    """What a stopped gateway kept on ``memory://?persist=STATE`` (its SQLite alias)."""
    saved = SqliteStore(f"sqlite://{state.with_suffix('.db')}", read_only=True)
    await saved.connect()
    return saved

SECRET = "sk-e2e-shutdown-tenant"
leaks.SECRETS.add(SECRET)
AUTH = {"Authorization": f"Bearer {SECRET}"}
TENANT = "drain"
CONFIG = """
store: "{store}"
upstreams:
  mock: {{base_url: "{mock}/v1", api_key: "k", timeout_s: 30}}
tenants:
  {tenant}:
    keys: [{{name: app, sha256: "{sha}"}}]
budgets:
  - {{name: roomy, tenant: {tenant}, max_tokens_per_day: 100000000}}
"""
STREAMS = 50
SLOW = {"mock_fault": "slow_stream:0.05"}  # ~2 s for 30 tokens
STREAM_BODY = {"model": "gpt-4o-mini", "stream": True, "max_tokens": 30, "metadata": SLOW,
               "messages": [{"role": "user", "content": "tell me a story"}]}
PLAIN_BODY = {"model": "gpt-4o-mini", "max_tokens": 5,
              "messages": [{"role": "user", "content": "hi"}]}
WAIT_S = 30.0  # every bounded wait below; the happy paths take a few seconds
T = TypeVar("T")
LISTENING = re.compile(r"gateway listening on \S+ \(worker (\d+)/(\d+), pid (\d+)")


def write_config(tmp: Path, mock: str, store: str) -> Path:
    path = tmp / "gateway.yaml"
    path.write_text(CONFIG.format(store=store, mock=mock, tenant=TENANT,
                                  sha=hashlib.sha256(SECRET.encode()).hexdigest()))
    return path


async def mock_stats(mock: Proc) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{mock.url}/v1/mock/stats") as r:
        stats: dict[str, Any] = await r.json()
        return stats


def wait_for(what: str, check: Callable[[], T], proc: Proc, timeout_s: float = WAIT_S) -> T:
    """Polls ``check`` until it returns something truthy, which it returns."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"{what}: not within {timeout_s}s\n{proc.output()[-4000:]}")


async def exit_status(proc: Proc, timeout_s: float = WAIT_S) -> int:
    return await asyncio.to_thread(proc.popen.wait, timeout_s)


def alive(pid: int) -> bool:
    """Exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def connect_refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


@dataclass
class Streams:
    """Concurrent streaming requests, watched: how many have begun and finished receiving."""

    url: str
    began: int = 0
    finished: int = 0
    all_began: asyncio.Event = field(default_factory=asyncio.Event)

    async def one(self, session: aiohttp.ClientSession, count: int) -> bytes:
        body = b""
        async with session.post(f"{self.url}/v1/chat/completions", json=STREAM_BODY,
                                headers=AUTH) as resp:
            assert resp.status == 200, await resp.text()
            async for chunk in resp.content.iter_any():
                if not body:
                    self.began += 1
                    if self.began == count:
                        self.all_began.set()
                body += chunk
        self.finished += 1
        return body


async def test_sigterm_lets_fifty_streams_finish_and_records_each(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    port = free_port()
    with mock_upstream(tmp_path) as mock:
        config = write_config(tmp_path, mock.url, f"memory://?persist={state}")
        args = ["serve", "--config", str(config), "--port", str(port)]
        with running(args, port, "/healthz", tmp_path / "gateway.log") as gateway:
            streams = Streams(gateway.url)
            connector = aiohttp.TCPConnector(limit=STREAMS)
            timeout = aiohttp.ClientTimeout(total=WAIT_S)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                tasks = [asyncio.ensure_future(streams.one(session, STREAMS))
                         for _ in range(STREAMS)]
                await asyncio.wait_for(streams.all_began.wait(), WAIT_S)
                gateway.popen.send_signal(signal.SIGTERM)
                finished_at_sigterm = streams.finished
                await asyncio.to_thread(wait_for, "stopped accepting", lambda: (
                    "stopped accepting connections" in gateway.output()), gateway)
                refused = connect_refused(port)
                bodies = await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)
            status = await exit_status(gateway)
        stats = await mock_stats(mock)
    assert finished_at_sigterm == 0
    assert f"waiting up to 30s for {STREAMS} requests in flight" in gateway.output()
    assert refused, "a new connection after SIGTERM is refused"
    assert all(body.rstrip().endswith(b"data: [DONE]") for body in bodies)
    assert status == 0, gateway.output()[-4000:]
    assert stats["faulted"] == {"/chat/completions": STREAMS}, "nothing else was proxied"
    saved = await saved_store(state)
    spent = await saved.query(Filter(tenant_id=TENANT))
    assert spent.entry_count == STREAMS
    assert spent.total_output_tokens == stats["output_tokens"] == STREAMS * 30
    assert spent.total_input_tokens == stats["input_tokens"]
    assert "every request finished" in gateway.output()


async def test_idle_keep_alive_connections_do_not_hold_the_shutdown(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, "http://127.0.0.1:9", "memory://")
    args = ["serve", "--config", str(config), "--port", str(port)]
    with running(args, port, "/healthz", tmp_path / "gateway.log") as gateway:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{gateway.url}/healthz") as resp:  # stays kept alive
                assert resp.status == 200
            silent = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)  # no request
            started = time.monotonic()
            gateway.popen.send_signal(signal.SIGTERM)
            status = await exit_status(gateway)
            took = time.monotonic() - started
            closed = silent.recv(1) == b""
            silent.close()
    assert status == 0 and took < 5, "not held for the 30 s grace period"
    assert closed
    assert "closed 2 idle ones; waiting up to 30s for 0 requests in flight" in gateway.output()


async def test_streams_past_the_grace_period_are_cut_off_and_still_charged(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.json"
    port = free_port()
    long_body = {**STREAM_BODY, "max_tokens": 400}  # ~20 s: far past the grace period
    with mock_upstream(tmp_path) as mock:
        config = write_config(tmp_path, mock.url, f"memory://?persist={state}")
        args = ["serve", "--config", str(config), "--port", str(port), "--grace-s", "0.5"]
        with running(args, port, "/healthz", tmp_path / "gateway.log") as gateway:
            async with aiohttp.ClientSession(headers=AUTH) as session:

                async def one() -> bytes:
                    body = b""
                    with contextlib.suppress(aiohttp.ClientPayloadError):
                        async with session.post(f"{gateway.url}/v1/chat/completions",
                                                json=long_body) as resp:
                            async for chunk in resp.content.iter_any():
                                body += chunk
                    return body

                tasks = [asyncio.ensure_future(one()) for _ in range(5)]
                await asyncio.sleep(1.0)
                started = time.monotonic()
                gateway.popen.send_signal(signal.SIGTERM)
                status = await exit_status(gateway)
                took = time.monotonic() - started
                bodies = await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)
        stats = await mock_stats(mock)
    assert status == 0, gateway.output()[-4000:]
    assert took < 10, "cut off at the grace period, not at the streams' end"
    assert all(body and b"[DONE]" not in body for body in bodies)
    assert "grace period of 0.5s over: cutting off 5" in gateway.output()
    saved = await saved_store(state)
    spent = await saved.query(Filter(tenant_id=TENANT))
    assert spent.entry_count == 5, "every cut-off stream is charged"
    # what the upstream billed for a stream cut off mid-way is unknown: its reservation is
    # charged (never less than what was produced), marked as an estimate
    assert spent.total_output_tokens == 5 * long_body["max_tokens"]
    assert spent.total_output_tokens >= stats["produced_output_tokens"]
    assert all(u.estimated for u in await saved.entries(TENANT))


# -- --workers 2 on Redis ------------------------------------------------------------------------


def worker_pids(gateway: Proc, count: int) -> dict[int, int]:
    """Worker index -> pid, from the startup lines, once all ``count`` are listening."""
    def found() -> dict[int, int] | None:
        pids = {int(m[1]): int(m[3]) for m in LISTENING.finditer(gateway.output())}
        return pids if len(pids) == count else None

    pids = wait_for(f"{count} workers listening", found, gateway)
    assert pids is not None
    return pids


def pids_that_served(gateway: Proc) -> set[int]:
    """The pid on each worker's access-log line of a proxied request."""
    served = set()
    for line in gateway.output().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("logger") == "gateway.access" and entry.get("decision") != "-":
                served.add(entry["pid"])
    return served


async def post_each_on_its_own_connection(url: str, count: int) -> list[int]:
    connector = aiohttp.TCPConnector(force_close=True)  # the kernel picks a worker per connection
    async with aiohttp.ClientSession(connector=connector, headers=AUTH) as session:

        async def one() -> int:
            async with session.post(f"{url}/v1/chat/completions", json=PLAIN_BODY) as resp:
                await resp.read()
                return resp.status

        return list(await asyncio.gather(*(one() for _ in range(count))))


@contextlib.contextmanager
def two_workers(tmp: Path) -> Iterator[tuple[Proc, dict[int, int], str]]:
    port = free_port()
    with mock_upstream(tmp) as mock, redis_server(tmp) as store:
        config = write_config(tmp, mock.url, store)
        args = ["serve", "--config", str(config), "--port", str(port), "--workers", "2"]
        with running(args, port, "/healthz", tmp / "gateway.log") as gateway:
            yield gateway, worker_pids(gateway, 2), store


async def test_two_workers_share_the_port_and_stop_together_on_sigterm(tmp_path: Path) -> None:
    with two_workers(tmp_path) as (gateway, pids, store):
        assert all(alive(pid) for pid in pids.values())
        statuses = await post_each_on_its_own_connection(gateway.url, 40)
        redis_store = RedisStore.from_url(store)
        spent = await redis_store.query(Filter(tenant_id=TENANT))
        await redis_store.close()
        gateway.popen.send_signal(signal.SIGTERM)
        status = await exit_status(gateway)
        output = gateway.output()
    assert statuses == [200] * 40
    assert spent.entry_count == 40, "both workers record into the one store"
    assert pids_that_served(gateway) == set(pids.values()), "both workers served"
    assert status == 0, output[-4000:]
    assert not any(alive(pid) for pid in pids.values())
    assert "all 2 workers stopped cleanly" in output


async def test_a_worker_that_dies_stops_the_gateway_with_status_1(tmp_path: Path) -> None:
    with two_workers(tmp_path) as (gateway, pids, _):
        os.kill(pids[1], signal.SIGKILL)
        status = await exit_status(gateway)
        output = gateway.output()
    assert status == 1
    assert f"worker 1/2 (pid {pids[1]}) was killed by SIGKILL unexpectedly" in output
    assert not alive(pids[2]), "the other worker was stopped"


async def test_workers_stop_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    with two_workers(tmp_path) as (gateway, pids, _):
        gateway.popen.send_signal(signal.SIGKILL)
        await exit_status(gateway)
        await asyncio.to_thread(wait_for, "orphaned workers gone", lambda: not any(
            alive(pid) for pid in pids.values()), gateway, 15.0)
        output = gateway.output()
    assert output.count("the supervisor (pid") == 2

