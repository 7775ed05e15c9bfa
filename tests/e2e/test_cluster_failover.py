"""Failover drills on a 3-primary Redis Cluster: the primary serving the tenant's slot is killed
(SIGKILL) in the middle of a run of 200 requests in flight over two gateways, and either
- ``restart``: started again on its own data (AOF, fsync always) a few seconds later, or
- ``replica``: its replica is promoted by the cluster (3 primaries with a replica each, no
  persistence; ``cluster-node-timeout`` 1 s).

Meanwhile the gateway with ``on_store_error: reject`` answers 503 ``budget_store_unavailable``
and the one with ``allow`` forwards unreserved; requests already upstream when the node died
settle into the gateways' buffers. Afterwards nothing is charged twice (a settlement the node
applied before dying and that is retried from a buffer is not: settling is idempotent per
reservation). With the restart on its AOF the store holds exactly what the upstream served;
with a replica promoted, Redis's replication being asynchronous, the writes the primary
acknowledged in its last instant may be missing (counted and printed; at most 1 %).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.cost.model import Filter, Summary
from gateway.store.redis import RedisStore
from tests.e2e.test_redis_store import BODY, OPS_TOKEN, SECRET, mock_stats, write_config
from tests.procs import Proc, gateway_process, mock_upstream
from tests.servers import Cluster, cluster_nodes

IN_FLIGHT = 200  # over the two gateways
UPSTREAM_S = "0.5"  # each request's time upstream: many are there when the node dies
BEFORE_KILL_S = 2.0
OUTAGE_S = 2.0
AFTER_RETURN_S = 2.0
SETTLE_TIMEOUT_S = 30.0
PROMOTION_TIMEOUT_S = 30.0
TIMEOUT = ("--cluster-node-timeout", "1000")
LAYOUTS = {  # drill -> (nodes, replicas per primary, node options)
    "restart": (3, 0, ("--appendonly", "yes", "--appendfsync", "always", *TIMEOUT)),
    "replica": (6, 1, TIMEOUT),
}
SLOW = {**BODY, "metadata": {"mock_delay_s": UPSTREAM_S}}


@contextlib.contextmanager
def drill_stack(tmp: Path, drill: str) -> Iterator[tuple[Cluster, Proc, list[Proc]]]:
    nodes, replicas, options = LAYOUTS[drill]
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(cluster_nodes(tmp, nodes, *options, replicas=replicas))
        mock = stack.enter_context(mock_upstream(tmp))
        procs = []
        for policy in ("reject", "allow"):
            config = write_config(tmp / f"{policy}.yaml", mock.url, cluster.seeds_url, 10**12,
                                  policy)
            procs.append(stack.enter_context(
                gateway_process(config, tmp / f"gateway-{policy}.log")))
        yield cluster, mock, procs


async def run_load(urls: list[str], stop: asyncio.Event) -> dict[str, collections.Counter[int]]:
    """``IN_FLIGHT`` clients, half on each gateway, each sending one request after another
    until ``stop``; statuses per gateway (0: a transport error)."""
    statuses: dict[str, collections.Counter[int]] = {u: collections.Counter() for u in urls}
    connector = aiohttp.TCPConnector(limit=IN_FLIGHT)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {SECRET}"},
                                     connector=connector, timeout=timeout) as session:

        async def client(url: str) -> None:
            while not stop.is_set():
                try:
                    async with session.post(f"{url}/v1/chat/completions", json=SLOW) as resp:
                        body = await resp.read()
                        if resp.status == 503:
                            assert b"budget_store_unavailable" in body, body
                        statuses[url][resp.status] += 1
                except aiohttp.ClientError:
                    statuses[url][0] += 1
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(client(urls[i % len(urls)]) for i in range(IN_FLIGHT)))
    return statuses


async def metrics(gateway: Proc) -> dict[str, float]:
    """Sample name with labels -> value, from the gateway's /metrics."""
    headers = {"Authorization": f"Bearer {OPS_TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session, session.get(
            f"{gateway.url}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    return {name: float(value) for name, _, value in
            (line.rpartition(" ") for line in text.splitlines() if not line.startswith("#"))}


async def settled(store: str, gateways: list[Proc], served: int) -> Summary:
    """The tenant's spend once every gateway has written its buffer back."""
    reader = RedisStore.from_url(store)
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    try:
        while True:
            spent = await reader.query(Filter(tenant_id="shared"))
            buffered = [(await metrics(g)).get("gateway_buffered_settlements", 0.0)
                        for g in gateways]
            if (spent.entry_count >= served and not any(buffered)) or (
                    time.monotonic() > deadline):
                return spent
            await asyncio.sleep(0.2)
    finally:
        await reader.close()


async def promoted(cluster: Cluster, killed: int) -> None:
    """Until another node serves the killed primary's slots."""
    deadline = time.monotonic() + PROMOTION_TIMEOUT_S
    while await asyncio.to_thread(cluster.owner, "{shared}") == killed:
        assert time.monotonic() < deadline, "no replica was promoted"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("drill", sorted(LAYOUTS))
async def test_a_primary_killed_mid_run_loses_nothing_and_charges_once(
    tmp_path: Path, drill: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with drill_stack(tmp_path, drill) as (cluster, mock, gateways):
        owner = cluster.owner("{shared}")
        stop = asyncio.Event()
        load = asyncio.ensure_future(run_load([g.url for g in gateways], stop))
        await asyncio.sleep(BEFORE_KILL_S)
        killed_at = time.monotonic()
        cluster.kill(owner)
        if drill == "restart":
            await asyncio.sleep(OUTAGE_S)
            cluster.start(owner)
        else:
            await promoted(cluster, owner)
        await asyncio.to_thread(cluster.wait_ok)
        back_s = time.monotonic() - killed_at
        await asyncio.sleep(AFTER_RETURN_S)
        stop.set()
        statuses = await asyncio.wait_for(load, 60)
        stats = await mock_stats(mock.url)
        served = sum(stats["requests"].values()) + sum(stats["faulted"].values())  # late
        spent = await settled(cluster.seeds_url, gateways, served)
        samples = [await metrics(g) for g in gateways]
        assert all(g.popen.poll() is None for g in gateways)

    rejecting, allowing = (statuses[g.url] for g in gateways)
    written_back = sum(s.get("gateway_buffer_written_back_total", 0.0) for s in samples)
    errors = {name: value for s in samples for name, value in s.items()
              if name.startswith("gateway_store_errors_total")}
    with capsys.disabled():
        how = (f"restarted {OUTAGE_S:g} s later" if drill == "restart"
               else "its replica promoted")
        print(f"\n[redis-cluster failover: {drill}] {IN_FLIGHT} in flight over 2 gateways; the "
              f"primary of the tenant's slot killed {BEFORE_KILL_S:g} s in, {how} (cluster ok "
              f"again {back_s:.1f} s after the kill): reject gateway "
              f"{dict(sorted(rejecting.items()))}, allow gateway {dict(sorted(allowing.items()))};"
              f" upstream served {served}, store recorded {spent.entry_count} "
              f"({spent.total_input_tokens:,} in / {spent.total_output_tokens:,} out tokens, "
              f"upstream reported {stats['input_tokens']:,} / {stats['output_tokens']:,}); "
              f"{written_back:g} settlements written back from buffers; "
              f"{served - spent.entry_count} lost; store errors {errors}")
    assert set(rejecting) <= {200, 503} and rejecting[503] > 0, rejecting
    assert set(allowing) == {200}, allowing
    assert written_back > 0, "requests upstream during the outage settled through the buffer"
    assert errors and all("kind=" in name for name in errors), errors
    assert served == rejecting[200] + allowing[200]
    assert spent.total_input_tokens == spent.total_output_tokens == 10 * spent.entry_count
    assert spent.entry_count <= served, "nothing charged twice"
    if drill == "restart":  # the node's AOF (fsync always) has every write it acknowledged
        assert spent.entry_count == served
        assert spent.total_input_tokens == stats["input_tokens"]
        assert spent.total_output_tokens == stats["output_tokens"]
    else:  # Redis replicates asynchronously: the instant before the kill may not have reached
        assert served - spent.entry_count <= served // 100, "the replica, a few writes at most"
