"""``gateway demo``: a mock upstream and a gateway on the embedded store, in one process,
and requests until a budget stops them; then the spend they left behind."""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway import log as gateway_log
from gateway.app import create_app
from gateway.appkeys import STORE
from gateway.cost.model import Filter
from gateway.mock_upstream import make_app as make_mock
from gateway.runtime import Runtime
from gateway.settings.watch import load_live

_SECRET = "sk-demo-acme-ci"
_MAX_REQUESTS = 50

_CONFIG = """\
store: "memory://"
upstreams:
  mock:
    base_url: "{mock}/v1"
    api_key: "demo-upstream-key"
    models: ["*"]
tenants:
  acme:
    keys:
      - name: acme-ci
        sha256: "{sha}"
budgets:
  - name: acme-hourly-tokens
    tenant: acme
    max_tokens_per_hour: 2000
    max_cost_per_day: 1.00
    alert_threshold: 0.8
    action: reject
"""


async def _start(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


async def _demo(workdir: Path) -> int:
    mock_runner, mock_url = await _start(make_mock())
    path = workdir / "gateway.yaml"
    sha = hashlib.sha256(_SECRET.encode()).hexdigest()
    path.write_text(_CONFIG.format(mock=mock_url, sha=sha))
    gateway_app = create_app(load_live(str(path), Runtime.build), watch_interval_s=None)
    gw_runner, gw_url = await _start(gateway_app)
    print(f"mock upstream on {mock_url}/v1, gateway on {gw_url}/v1")
    print("budget 'acme-hourly-tokens': 2000 tokens per rolling hour, $1.00 per day\n")
    headers = {"Authorization": f"Bearer {_SECRET}"}
    body = {"model": "gpt-4o-mini", "max_tokens": 150,
            "messages": [{"role": "user", "content": "Write a haiku about budgets."}]}
    try:
        async with aiohttp.ClientSession(headers=headers) as client:
            for i in range(1, _MAX_REQUESTS + 1):
                async with client.post(f"{gw_url}/v1/chat/completions", json=body) as resp:
                    data = await resp.json()
                    ratio = resp.headers.get("x-budget-usage-ratio", "-")
                    if resp.status != 200:
                        print(f"request {i:2}: HTTP {resp.status} {data['error']['message']}")
                        break
                    usage = data["usage"]
                    alert = resp.headers.get("x-budget-alert")
                    print(f"request {i:2}: HTTP 200, {usage['total_tokens']} tokens, usage ratio "
                          f"{ratio}" + (f"  ALERT {alert}" if alert else ""))
        summary = await gateway_app[STORE].query(Filter(tenant_id="acme"))
        print(f"\nspend for tenant acme: {summary.entry_count} requests, "
              f"{summary.total_input_tokens} input + {summary.total_output_tokens} output tokens, "
              f"${summary.total_cost:.6f}")
    finally:
        await gw_runner.cleanup()
        await mock_runner.cleanup()
    return 0


def run_demo() -> int:
    gateway_log.configure("WARNING", json=False)
    with tempfile.TemporaryDirectory(prefix="gateway-demo-") as workdir:
        return asyncio.run(_demo(Path(workdir)))
