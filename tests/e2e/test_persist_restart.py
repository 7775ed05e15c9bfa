"""``memory://?persist=PATH`` (an alias of ``sqlite://`` on PATH with the suffix ``.db``): a
restarted gateway still knows the day's spend."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from gateway.store.sqlite import SqliteStore
from tests import leaks
from tests.procs import free_port, running, stop

SECRET = "sk-e2e-persist-tenant"
leaks.SECRETS.add(SECRET)
CONFIG = """
store: "memory://?persist={state}"
upstreams:
  mock: {{base_url: "{mock}/v1", api_key: "k"}}
tenants:
  kept:
    keys: [{{name: app, sha256: "{sha}"}}]
budgets:
  - {{name: day, tenant: kept, max_tokens_per_day: 10000}}
"""
BODY = {"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


async def _ratio(url: str) -> float:
    async with aiohttp.ClientSession() as session, session.post(
        f"{url}/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {SECRET}"}
    ) as resp:
        assert resp.status == 200
        await resp.read()
        return float(resp.headers["x-budget-usage-ratio"])


async def test_restart_keeps_the_days_spend(tmp_path: Path) -> None:
    mock_port, gw_port = free_port(), free_port()
    state = tmp_path / "state.json"
    config = tmp_path / "gateway.yaml"
    with running(["mock-upstream", "--port", str(mock_port)], mock_port, "/v1/mock/stats",
                 tmp_path / "mock.log") as mock:
        config.write_text(CONFIG.format(state=state, mock=mock.url,
                                        sha=hashlib.sha256(SECRET.encode()).hexdigest()))
        args = ["serve", "--config", str(config), "--port", str(gw_port)]
        with running(args, gw_port, "/healthz", tmp_path / "first.log") as gateway:
            ratios = [await _ratio(gateway.url) for _ in range(3)]
            stop(gateway.popen, signal.SIGTERM)  # graceful: the state is saved on the way out
        assert gateway.popen.returncode == 0
        saved = SqliteStore(f"sqlite://{state.with_suffix('.db')}", read_only=True)
        await saved.connect()
        assert len(saved.tracker) == 3
        with running(args, gw_port, "/healthz", tmp_path / "second.log") as gateway:
            after_restart = await _ratio(gateway.url)
    per_request = ratios[0]
    assert after_restart > ratios[2]
    assert abs(after_restart - 4 * per_request) < 1e-3, "the 3 requests before the restart count"


async def test_a_corrupt_state_file_stops_the_start(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text("{not json")
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG.format(state=state, mock="http://127.0.0.1:9", sha="0" * 64))
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config),
         "--port", str(free_port())], capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 1
    assert str(state) in result.stderr and "Traceback" not in result.stderr
