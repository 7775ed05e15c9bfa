"""A throttle that throttles, against real processes (issue 15).

The upstream answers late (``metadata.mock_delay_s``) and writes about half the output it was
allowed (``metadata.mock_output_tokens``), as real models mostly do: room held by reservations
in flight is the common case, and a held request must wait for it, in arrival order, woken by
the settlement (on Redis, another instance's), and be told truly when to come back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.cost.model import Filter
from gateway.proxy.endpoints import Endpoint
from gateway.proxy.estimate import count_input_tokens
from gateway.store.redis import RedisStore
from tests import leaks
from tests.procs import Proc, gateway_process, mock_upstream
from tests.servers import redis_cluster, redis_server

CAP, WRITTEN = 40, 20  # output allowed, output the upstream writes
UPSTREAM_S = 1.0
IN_FLIGHT = 60
ROOM = 10  # requests the budget fits at their reserved size
MAX_WAIT_S = 20
SECRETS = {name: f"sk-e2e-throttle-{name}-0123456789" for name in ("app", "spare")}
leaks.SECRETS.update(SECRETS.values())


def body(delay_s: float = UPSTREAM_S) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "max_tokens": CAP,
            "messages": [{"role": "user", "content": "throttle me"}],
            "metadata": {"mock_delay_s": f"{delay_s:g}", "mock_output_tokens": str(WRITTEN)}}


INPUT = count_input_tokens(Endpoint.CHAT, body())[0]
RESERVED = INPUT + CAP  # what one request reserves
CHARGED = INPUT + WRITTEN  # what it is charged


def config(store: str, mock: str, budgets: str, tenants: int = 1) -> str:
    keys = "\n".join(
        f"  t{i}:\n    keys:\n"
        + "".join(f"      - {{name: {name}, sha256: \"{_sha(secret, i)}\"}}\n"
                  for name, secret in SECRETS.items())
        for i in range(tenants))
    return (f'store: "{store}"\nupstreams:\n  mock: {{base_url: "{mock}/v1", api_key: k, '
            f"timeout_s: 30}}\nlimits: {{max_wait_s: 600}}\ntenants:\n{keys}\n"
            f"budgets:\n{budgets}")


def _sha(secret: str, tenant: int) -> str:
    return hashlib.sha256(secret_of(secret, tenant).encode()).hexdigest()


def secret_of(secret: str, tenant: int) -> str:
    return secret if tenant == 0 else f"{secret}-t{tenant}"


def auth(tenant: int = 0, key: str = "app") -> dict[str, str]:
    return {"Authorization": f"Bearer {secret_of(SECRETS[key], tenant)}"}


def throttle(tenant: int, limit: int, name: str = "cap", wait: float = MAX_WAIT_S,
             extra: str = "") -> str:
    return (f"  - {{name: {name}, tenant: t{tenant}, max_tokens_per_hour: {limit}, "
            f"action: throttle, max_wait_s: {wait:g}{extra}}}\n")


@contextlib.contextmanager
def stack(tmp: Path, kind: str, budgets: str, tenants: int = 1,
          instances: int = 1) -> Iterator[tuple[Proc, list[Proc], str, Path]]:
    """A mock and ``instances`` gateways on one store (``memory``: one gateway)."""
    with contextlib.ExitStack() as stack:
        mock = stack.enter_context(mock_upstream(tmp))
        servers = {"redis": redis_server, "redis-cluster": redis_cluster}
        store = (stack.enter_context(servers[kind](tmp)) if kind in servers
                 else f"memory://?persist={tmp / 'spend.json'}")
        path = tmp / "gateway.yaml"
        path.write_text(config(store, mock.url, budgets, tenants))
        gateways = [stack.enter_context(gateway_process(path, tmp / f"gateway-{i}.log"))
                    for i in range(instances if kind in servers else 1)]
        yield mock, gateways, store, path


def served(stats: dict[str, Any]) -> int:
    """Requests the mock answered: answered late counts as a fault there."""
    return sum(stats["requests"].values()) + sum(stats["faulted"].values())


@dataclass(frozen=True)
class Answer:
    index: int
    status: int
    sent_s: float
    done_s: float
    headers: dict[str, str]


async def post(session: aiohttp.ClientSession, url: str, index: int, started: float,
               headers: dict[str, str], payload: dict[str, Any]) -> Answer:
    sent = time.monotonic() - started
    async with session.post(f"{url}/v1/chat/completions", json=payload,
                            headers=headers) as resp:
        await resp.read()
        return Answer(index, resp.status, sent, time.monotonic() - started, dict(resp.headers))


async def spent(store: str, tenant: str) -> Any:
    if store.startswith("redis"):  # (the cluster's URL too)
        reader = RedisStore.from_url(store)
        try:
            return await reader.query(Filter(tenant_id=tenant))
        finally:
            await reader.close()
    return None


@pytest.mark.parametrize("kind", ["memory", "redis", "redis-cluster"])
async def test_sixty_in_flight_are_held_and_admitted_in_arrival_order(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Room for 10 at their reserved size, each charged about half: more than 10 admitted as
    settlements free room, on each instance in the order they arrived; the rest refused once
    room can no longer come within their wait; the budget never exceeded."""
    limit = ROOM * RESERVED
    with stack(tmp_path, kind, throttle(0, limit), instances=2) as (mock, gateways, store, _):
        started = time.monotonic()
        timeout = aiohttp.ClientTimeout(total=MAX_WAIT_S + 30)
        async with aiohttp.ClientSession(timeout=timeout,
                                         connector=aiohttp.TCPConnector(limit=0)) as session:
            tasks = []
            for i in range(IN_FLIGHT):  # arrival order known: one every 5 ms
                url = gateways[i % len(gateways)].url
                tasks.append(asyncio.ensure_future(
                    post(session, url, i, started, auth(), body())))
                await asyncio.sleep(0.005)
            answers = await asyncio.gather(*tasks)
        async with aiohttp.ClientSession() as session, session.get(
                f"{mock.url}/v1/mock/stats") as resp:
            stats = await resp.json()
        used = await spent(store, "t0")
    admitted = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status == 429]
    statuses = collections.Counter(a.status for a in answers)
    charged = len(admitted) * CHARGED
    with capsys.disabled():
        print(f"\n[throttle {kind}, {len(gateways)} instance(s)] {IN_FLIGHT} in flight, room for "
              f"{ROOM} x {RESERVED} tokens reserved, {CHARGED} charged each, upstream "
              f"{UPSTREAM_S:g} s: {statuses[200]} admitted (last after "
              f"{max(a.done_s for a in admitted):.1f} s), {statuses[429]} refused after "
              f"{min(a.done_s - a.sent_s for a in refused):.1f}-"
              f"{max(a.done_s - a.sent_s for a in refused):.1f} s with Retry-After "
              f"{sorted({a.headers.get('Retry-After') for a in refused})}; charged "
              f"{charged} of {limit} tokens")
    assert set(statuses) == {200, 429}
    assert len(admitted) > ROOM
    assert charged <= limit
    assert served(stats) == len(admitted)
    if used is not None:
        assert used.total_input_tokens + used.total_output_tokens == charged
    for a in refused:  # refused once the room in flight had come back, not at once
        assert a.done_s - a.sent_s >= UPSTREAM_S * 0.9, a
        assert int(a.headers["Retry-After"]) > MAX_WAIT_S  # the window, truly
    for g in range(len(gateways)):  # each instance admitted a prefix of its arrivals
        mine = [a for a in answers if a.index % len(gateways) == g]
        first_refused = min((a.index for a in mine if a.status == 429), default=IN_FLIGHT)
        assert all(a.status == 200 for a in mine if a.index < first_refused), mine


@pytest.mark.parametrize("kind", ["redis", "redis-cluster"])
async def test_a_hold_is_woken_by_another_instances_settlement(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Room for one request in flight: one on the first instance, then one on the second,
    held; it is admitted as soon as the first settles (a published settlement, not a poll)."""
    rounds = 20
    budgets = "".join(throttle(i, RESERVED + CHARGED, name=f"cap{i}") for i in range(rounds))
    with stack(tmp_path, kind, budgets, tenants=rounds, instances=2) as (_, gateways, _, _):
        first, second = (g.url for g in gateways)
        delays = []
        async with aiohttp.ClientSession() as session:
            for tenant in range(rounds):
                started = time.monotonic()
                holding = asyncio.ensure_future(
                    post(session, first, 0, started, auth(tenant), body(0.5)))
                await asyncio.sleep(0.1)
                held = await post(session, second, 1, started, auth(tenant), body(0.0))
                ahead = await holding
                assert (ahead.status, held.status) == (200, 200)
                delays.append(held.done_s - ahead.done_s)
    delays.sort()
    with capsys.disabled():
        print(f"\n[throttle wake-up, {kind}, 2 instances] a hold admitted after another "
              f"instance's settlement: p50 {delays[len(delays) // 2] * 1000:.1f} ms, max "
              f"{delays[-1] * 1000:.1f} ms over {rounds} rounds (the poll fallback is 1 s)")
    assert delays[-1] < 0.25, delays


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_retry_after_says_when_room_held_in_flight_comes_back(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A request that cannot wait as long as the room in flight needs is refused at once with
    the time that room is expected back: the upstream's usual duration, learnt."""
    slow = 3.0
    budgets = throttle(0, RESERVED + CHARGED, wait=1)
    with stack(tmp_path, kind, budgets, tenants=2) as (_, (gateway,), _, _):
        async with aiohttp.ClientSession() as session:
            started = time.monotonic()
            warm = [post(session, gateway.url, 0, started, auth(1), body(slow)) for _ in range(2)]
            assert {a.status for a in await asyncio.gather(*warm)} == {200}  # learnt: ~3 s
            started = time.monotonic()
            holding = asyncio.ensure_future(
                post(session, gateway.url, 0, started, auth(), body(slow)))
            await asyncio.sleep(0.2)
            refused = await post(session, gateway.url, 1, started, auth(), body(0.0))
            ahead = await holding
            retried = await post(session, gateway.url, 2, started, auth(), body(0.0))
    assert (ahead.status, refused.status, retried.status) == (200, 429, 200)
    told = int(refused.headers["Retry-After"])
    freed = ahead.done_s - refused.done_s
    with capsys.disabled():
        print(f"\n[throttle Retry-After, {kind}] refused {refused.done_s:.1f} s in with "
              f"Retry-After {told}; the room came back {freed:.1f} s later")
    assert freed / 2 <= told <= freed * 2


async def wait_for_log(path: Path, text: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in path.read_text():
        assert time.monotonic() < deadline, f"{text!r} not logged"
        await asyncio.sleep(0.05)


EDITS = {
    "raised": lambda text: text.replace(f"max_tokens_per_hour: {RESERVED}",
                                        "max_tokens_per_hour: 100000"),
    "removed": lambda text: text.split("budgets:\n")[0] + "budgets: []\n",
    "key revoked": lambda text: "\n".join(
        line for line in text.splitlines() if "name: spare" not in line) + "\n",
}


@pytest.mark.parametrize("kind", ["memory", "redis"])
@pytest.mark.parametrize("edit", sorted(EDITS))
async def test_held_requests_meet_a_reload_at_once(tmp_path: Path, kind: str, edit: str) -> None:
    """Two requests held behind one in flight (5 s upstream); the YAML edited (limit raised,
    budget removed, key revoked) and reloaded: the held ones are answered by the new
    configuration at once, long before the one in flight ends."""
    with stack(tmp_path, kind, throttle(0, RESERVED, wait=60)) as (_, (gateway,), _, path):
        async with aiohttp.ClientSession() as session:
            started = time.monotonic()
            ahead = asyncio.ensure_future(
                post(session, gateway.url, 0, started, auth(), body(5.0)))
            await asyncio.sleep(0.3)
            held = [asyncio.ensure_future(post(session, gateway.url, i, started,
                                               auth(key="spare"), body(0.0)))
                    for i in (1, 2)]
            await wait_for_log(gateway.log, "held=2/2")
            path.write_text(EDITS[edit](path.read_text()))
            gateway.popen.send_signal(1)  # SIGHUP: reload now
            answers = await asyncio.gather(*held)
            first = await ahead
    expected = 401 if edit == "key revoked" else 200
    assert [a.status for a in answers] == [expected, expected]
    assert all(a.done_s < first.done_s - 2 for a in answers), (answers, first)


@pytest.mark.parametrize("kind", ["memory", "redis"])
@pytest.mark.parametrize("with_id", [False, True])
async def test_a_renamed_budget_keeps_its_usage_only_with_an_id(
    tmp_path: Path, kind: str, with_id: bool
) -> None:
    extra = ", id: team-cap" if with_id else ""
    budget = (f"  - {{name: cap, tenant: t0, max_tokens_per_hour: {RESERVED + CHARGED // 2}"
              f"{extra}}}\n")
    with stack(tmp_path, kind, budget) as (_, (gateway,), _, path):
        async with aiohttp.ClientSession() as session:
            started = time.monotonic()
            assert (await post(session, gateway.url, 0, started, auth(), body(0))).status == 200
            assert (await post(session, gateway.url, 1, started, auth(), body(0))).status == 429
            path.write_text(path.read_text().replace("name: cap,", "name: team-budget,"))
            gateway.popen.send_signal(1)
            await wait_for_log(gateway.log, "configuration reloaded")
            again = await post(session, gateway.url, 2, started, auth(), body(0))
    log = gateway.log.read_text()
    if with_id:
        assert again.status == 429, "its usage followed its id"
        assert "replaced by" not in log
    else:
        assert again.status == 200, "a new name without an id starts afresh"
        assert "budget 'cap' of tenant 't0' replaced by 'team-budget'" in log


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_a_yaml_budget_cannot_take_an_api_budgets_name(tmp_path: Path, kind: str) -> None:
    admin_key = "sk-e2e-throttle-admin-0123456789"
    leaks.SECRETS.add(admin_key)
    with stack(tmp_path, kind, throttle(0, 10**6)) as (_, (gateway,), _, path):
        text = path.read_text().replace(
            "  t0:\n    keys:\n",
            f"  t0:\n    keys:\n      - {{name: ops, role: admin, sha256: "
            f"\"{hashlib.sha256(admin_key.encode()).hexdigest()}\"}}\n")
        path.write_text(text)
        gateway.popen.send_signal(1)
        await wait_for_log(gateway.log, "configuration reloaded")
        admin = {"Authorization": f"Bearer {admin_key}"}
        async with aiohttp.ClientSession(headers=admin) as session:
            async with session.post(f"{gateway.url}/api/client/v1/budgets",
                                    json={"name": "shared", "max_tokens_per_hour": 5}) as resp:
                assert resp.status == 201, await resp.text()
                api_id = (await resp.json())["id"]
            path.write_text(path.read_text().replace("name: cap,", "name: shared,"))
            gateway.popen.send_signal(1)
            await wait_for_log(gateway.log, "config reload refused")
            async with session.patch(f"{gateway.url}/api/client/v1/budgets/{api_id}",
                                     json={"max_tokens_per_hour": 6}) as resp:
                assert resp.status == 200, await resp.text()
    assert f"API budget {api_id}" in gateway.log.read_text()
