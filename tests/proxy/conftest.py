"""An in-process gateway in front of an in-process mock upstream, with an injectable clock."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.appkeys import CLOCK, STORE
from gateway.clock import Clock
from gateway.mock_upstream import STATS, MockStats, make_app
from gateway.runtime import Runtime
from gateway.settings.watch import LiveConfig, load_live
from gateway.store.base import Store
from tests import leaks

KEYS = {"ci": "sk-test-acme-ci", "admin": "sk-test-acme-admin", "other": "sk-test-globex",
        "other_admin": "sk-test-globex-admin"}
# The platform team's keys, of no tenant: configured by ``extra=OPERATORS``.
OPERATOR_KEYS = {"viewer": "sk-test-ops-viewer", "editor": "sk-test-ops-editor"}
UPSTREAM_KEY = "sk-upstream-secret-0123456789"
leaks.SECRETS.update([*KEYS.values(), *OPERATOR_KEYS.values(), UPSTREAM_KEY])


def sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


OPERATORS = f"""
operators:
  - {{name: ops-viewer, sha256: "{sha(OPERATOR_KEYS['viewer'])}", role: viewer}}
  - {{name: ops-editor, sha256: "{sha(OPERATOR_KEYS['editor'])}", role: editor}}
"""


def config_text(mock_url: str, budgets: str = "", extra: str = "",
                max_body_bytes: int = 4096) -> str:
    return f"""
store: "memory://"
max_body_bytes: {max_body_bytes}
upstreams:
  mock:
    base_url: "{mock_url}/v1"
    api_key: "{UPSTREAM_KEY}"
    timeout_s: 2
pricing:
  gpt-4o-mini: {{input: 0.15, cached_input: 0.075, output: 0.60}}
  "gpt-4o-2024-*": {{input: 2.5, cached_input: 1.25, output: 10.0}}
  unpriced-*: null
tenants:
  acme:
    models: ["gpt-4o-mini", "text-embedding-*", "gpt-4o"]
    keys:
      - {{name: acme-ci, sha256: "{sha(KEYS['ci'])}"}}
      - {{name: acme-admin, sha256: "{sha(KEYS['admin'])}", role: admin}}
  globex:
    keys:
      - {{name: globex-app, sha256: "{sha(KEYS['other'])}"}}
      - {{name: globex-admin, sha256: "{sha(KEYS['other_admin'])}", role: owner}}
{extra}
budgets:
{budgets or "  []"}
""".replace("  unpriced-*: null\n", "")


@dataclass
class Harness:
    client: TestClient[web.Request, web.Application]
    app: web.Application
    mock: web.Application
    config: LiveConfig[Runtime]
    path: Path

    @property
    def store(self) -> Store:
        return self.app[STORE]

    @property
    def stats(self) -> MockStats:
        return self.mock[STATS]

    async def in_flight(self) -> int:
        return await self.store.in_flight(self.app[CLOCK].now())

    async def post(self, path: str, body: Any, key: str = "ci", **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {KEYS[key]}", **kw.pop("headers", {})}
        return await self.client.post(f"/v1{path}", json=body, headers=headers, **kw)

    async def chat(self, max_tokens: int = 10, key: str = "ci",
                   headers: dict[str, str] | None = None, **fields: Any) -> Any:
        body = {"model": "gpt-4o-mini", "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": "hello there"}], **fields}
        return await self.post("/chat/completions", body, key=key, headers=headers or {})


MakeHarness = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def gateway(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path
) -> MakeHarness:
    async def make(budgets: str = "", extra: str = "", clock: Clock | None = None,
                   watch_interval_s: float | None = None,
                   max_body_bytes: int = 4096, mock_host: str = "127.0.0.1") -> Harness:
        mock_app = make_app()
        mock: TestServer = await aiohttp_server(mock_app)
        path = tmp_path / "gateway.yaml"
        mock_url = str(mock.make_url("").with_host(mock_host)).rstrip("/")
        path.write_text(config_text(mock_url, budgets, extra, max_body_bytes))
        config = load_live(str(path), Runtime.build)
        app = create_app(config, clock=clock, watch_interval_s=watch_interval_s)
        client = await aiohttp_client(app, trace_configs=[leaks.trace_config()])
        return Harness(client, app, mock_app, config, path)

    return make
