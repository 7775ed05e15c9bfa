"""The headline promise with real processes: 200 requests at once, a budget for exactly 20."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import aiohttp

from tests import leaks
from tests.procs import gateway_process, mock_upstream

SECRET = "sk-e2e-concurrency-tenant"
leaks.SECRETS.add(SECRET)
BODY = {"model": "gpt-4o-mini", "max_tokens": 10,
        "messages": [{"role": "user", "content": "count to ten"}]}

CONFIG = """
upstreams:
  mock: {{base_url: "{mock}/v1", api_key: "k"}}
tenants:
  busy:
    keys: [{{name: app, sha256: "{sha}"}}]
budgets:
  - {{name: twenty, tenant: busy, max_tokens_per_hour: {limit}}}
"""


async def _post_all(url: str, count: int) -> list[int]:
    headers = {"Authorization": f"Bearer {SECRET}"}
    connector = aiohttp.TCPConnector(limit=count)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:

        async def one() -> int:
            async with session.post(f"{url}/v1/chat/completions", json=BODY) as resp:
                await resp.read()
                return resp.status

        return await asyncio.gather(*(one() for _ in range(count)))


async def test_two_hundred_at_once_exactly_twenty_succeed(tmp_path: Path) -> None:
    with mock_upstream(tmp_path) as mock:
        # one request's exact size: the mock reports the gateway's own input count
        per_request = 0
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{mock.url}/v1/chat/completions", json=BODY) as resp:
                per_request = (await resp.json())["usage"]["total_tokens"]
            await session.post(f"{mock.url}/v1/mock/reset")
        config = tmp_path / "gateway.yaml"
        config.write_text(CONFIG.format(mock=mock.url, limit=20 * per_request,
                                        sha=hashlib.sha256(SECRET.encode()).hexdigest()))
        with gateway_process(config, tmp_path / "gateway.log") as gateway:
            statuses = await _post_all(gateway.url, 200)
            async with aiohttp.ClientSession() as session, session.get(
                f"{mock.url}/v1/mock/stats"
            ) as resp:
                stats = await resp.json()
    assert statuses.count(200) == 20
    assert statuses.count(429) == 180
    assert stats["requests"] == {"/chat/completions": 20}
    assert stats["input_tokens"] + stats["output_tokens"] == 20 * per_request
