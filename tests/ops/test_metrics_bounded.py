"""Metrics bounded by the configuration, never by what clients send (issue 13): 10,000 requests
with distinct model names, every one matching the price glob ``gpt-4o-2024-*`` (half of them
denied with 429 by a tight budget) and some naming no priced model at all, leave ``/metrics`` and
the gateway's RSS flat, and the only model labels are configured names and ``other``.

Before the fix every distinct name became a permanent label, denied requests included: over this
run ``/metrics`` grew from 0.47 to 4.9 MB (4,508 -> 46,508 series) and the process by 37 MB.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import leaks
from tests.procs import Proc, gateway_process, mock_upstream

REQUESTS = 10_000
WARM_UP = 1_000  # every kind of answer seen once, caches warm: the figures compared start here
CLIENTS = 32
OPS_TOKEN = "ops-bounded-metrics-token-0123456789"
SECRETS = {"roomy": "sk-bounded-roomy-0123456789abcdef",
           "tight": "sk-bounded-tight-0123456789abcdef"}
leaks.SECRETS.update([OPS_TOKEN, *SECRETS.values()])
GLOB = "gpt-4o-2024-*"
CONFIGURED = {GLOB, "gpt-4o-mini"}
METRICS_GROWTH_MAX = 0.02  # of the exposition's bytes: counter values gain digits, nothing more
RSS_GROWTH_MAX_MB = 16.0  # a label per name grew the process by 37 MB over this run

CONFIG = """
store: "memory://"
upstreams:
  mock: {{base_url: "{mock}/v1", api_key: "k", timeout_s: 10}}
pricing:
  gpt-4o-mini: {{input: 0.15, cached_input: 0.075, output: 0.60}}
  "{glob}": {{input: 2.5, cached_input: 1.25, output: 10.0}}
tenants:
{tenants}
budgets:
  - {{name: roomy-day, tenant: roomy, max_tokens_per_day: 1000000000}}
  - {{name: tight-day, tenant: tight, max_tokens_per_day: 500}}
ops: {{token: "{token}"}}
"""


@dataclass(frozen=True, slots=True)
class Figures:
    metrics_bytes: int
    series: frozenset[tuple[str, tuple[tuple[str, str], ...]]]
    model_labels: frozenset[str]
    rss_mb: float


def _config(path: Path, mock: str) -> Path:
    sha = {name: hashlib.sha256(key.encode()).hexdigest() for name, key in SECRETS.items()}
    tenants = "\n".join(f'  {name}:\n    keys: [{{name: app, sha256: "{digest}"}}]'
                        for name, digest in sha.items())
    path.write_text(CONFIG.format(mock=mock, glob=GLOB, tenants=tenants, token=OPS_TOKEN))
    return path


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("bounded")
    with mock_upstream(tmp) as mock:
        config = _config(tmp / "gateway.yaml", mock.url)
        with gateway_process(config, tmp / "gateway.log") as proc:
            yield proc


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


async def _figures(session: aiohttp.ClientSession, gateway: Proc) -> Figures:
    async with session.get(f"{gateway.url}/metrics",
                           headers={"Authorization": f"Bearer {OPS_TOKEN}"}) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.read()
    series, models = set(), set()
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            series.add((sample.name, tuple(sorted(sample.labels.items()))))
            if "model" in sample.labels:
                models.add(sample.labels["model"])
    return Figures(len(body), frozenset(series), frozenset(models), _rss_mb(gateway.popen.pid))


def _request(i: int) -> tuple[str, str]:
    """The i-th request's tenant and model: a new name every time; every tenth one priced by
    nothing (400), the rest by the glob; the tight tenant is denied (429) once its 500 tokens
    are spent."""
    tenant = ("roomy", "tight")[i % 2]
    model = f"no-such-model-{i:06d}" if i % 10 == 0 else f"gpt-4o-2024-{i:06d}"
    return tenant, model


async def _send(session: aiohttp.ClientSession, gateway: Proc, numbers: range) -> dict[int, int]:
    statuses: dict[int, int] = {}
    todo = iter(numbers)

    async def client() -> None:
        for i in todo:
            tenant, model = _request(i)
            body = {"model": model, "max_tokens": 4,
                    "messages": [{"role": "user", "content": "hi"}]}
            async with session.post(f"{gateway.url}/v1/chat/completions", json=body,
                                    headers={"Authorization": f"Bearer {SECRETS[tenant]}"}
                                    ) as resp:
                await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1

    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return statuses


async def test_ten_thousand_model_names_leave_metrics_and_rss_flat(
    gateway: Proc, capsys: pytest.CaptureFixture[str]
) -> None:
    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(connector=connector) as session:
        warm = await _send(session, gateway, range(WARM_UP))
        await _figures(session, gateway)  # the scrape itself is a request: counted from now on
        before = await _figures(session, gateway)
        statuses = await _send(session, gateway, range(WARM_UP, WARM_UP + REQUESTS))
        after = await _figures(session, gateway)
    assert set(warm) == set(statuses) == {200, 400, 429}, (warm, statuses)
    assert statuses[429] > REQUESTS // 3  # the tight tenant, denied all along
    assert after.model_labels <= CONFIGURED | {"other"}, after.model_labels
    assert {GLOB, "other"} <= after.model_labels
    assert after.series == before.series  # not one series more
    growth = after.metrics_bytes / before.metrics_bytes - 1
    assert growth <= METRICS_GROWTH_MAX, (before.metrics_bytes, after.metrics_bytes)
    assert after.rss_mb - before.rss_mb <= RSS_GROWTH_MAX_MB, (before.rss_mb, after.rss_mb)
    with capsys.disabled():
        counts = ", ".join(f"{n} x {s}" for s, n in sorted(statuses.items()))
        print(f"\nbounded metrics: {REQUESTS:,} distinct model names ({counts}) after a "
              f"{WARM_UP:,}-request warm-up: /metrics {before.metrics_bytes:,} -> "
              f"{after.metrics_bytes:,} bytes ({growth:+.2%}), {len(before.series)} -> "
              f"{len(after.series)} series; gateway RSS {before.rss_mb:.1f} -> "
              f"{after.rss_mb:.1f} MB; model labels {sorted(after.model_labels)}")

