"""Budgets per end user with real processes and the official openai SDK (issue 19): 1,000 end
users, 20 requests each at once, against "$X each": every end user is admitted exactly N times;
and a tenant-wide limit still binds the sum. On the embedded store and on Redis."""

from __future__ import annotations

import asyncio
import collections
import hashlib
from pathlib import Path

import aiohttp
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests import leaks
from tests.procs import gateway_process, mock_upstream
from tests.servers import store_url

pytestmark = pytest.mark.slow

EACH_KEY = "sk-e2e-end-users-each"
CAPPED_KEY = "sk-e2e-end-users-capped"
leaks.SECRETS.update([EACH_KEY, CAPPED_KEY])
USERS = 1_000
REQUESTS = 20  # per end user, all at once
N = 5  # what "$X each" admits
CAPPED_USERS = 100
CAPPED_SUM = 300  # what the capped tenant's own budget admits in all: less than 100 x N
IN_FLIGHT = 200
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "count to ten"}]
BODY = {"model": "gpt-4o-mini", "max_tokens": 10, "messages": MESSAGES}
NANO_PER_TOKEN = {"input": 150, "output": 600}  # the prices below, per token

CONFIG = """
store: "{store}"
upstreams:
  mock: {{base_url: "{mock}/v1", api_key: "k"}}
pricing:
  gpt-4o-mini: {{input: 0.15, output: 0.60}}
tenants:
  saas:
    keys: [{{name: backend, sha256: "{each_sha}"}}]
  capped:
    keys: [{{name: backend, sha256: "{capped_sha}"}}]
budgets:
  - {{name: each, tenant: saas, per: end_user, end_user_required: true,
     max_cost_per_day: {each}}}
  - {{name: each-capped, tenant: capped, per: end_user, max_cost_per_day: {each}}}
  - {{name: whole, tenant: capped, max_cost_per_day: {whole}}}
"""


def usd(nano: int) -> str:
    return f"{nano / 1e9:.9f}"


async def request_cost(mock: str) -> int:
    """One request's exact cost in nano-dollars: the mock answers max_tokens of output and the
    gateway's own input count, so what is reserved is what is charged."""
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{mock}/v1/chat/completions", json=BODY) as resp:
            usage = (await resp.json())["usage"]
        await session.post(f"{mock}/v1/mock/reset")
    return int(usage["prompt_tokens"] * NANO_PER_TOKEN["input"]
               + usage["completion_tokens"] * NANO_PER_TOKEN["output"])


async def admitted(base_url: str, key: str, users: int) -> collections.Counter[int]:
    """Each end user's requests, all at once (IN_FLIGHT at most in all): how many were
    admitted per end user. Half name theirs by safety_identifier, half by user."""
    gate = asyncio.Semaphore(IN_FLIGHT)
    counts: collections.Counter[int] = collections.Counter()
    async with openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0,
                                  timeout=30) as client:

        async def one(user: int) -> None:
            name, by_field = f"customer-{user}", user % 2 == 1
            async with gate:
                try:
                    await client.chat.completions.create(
                        model="gpt-4o-mini", max_tokens=10, messages=MESSAGES,
                        safety_identifier=name if by_field else openai.omit,
                        user=openai.omit if by_field else name)
                except openai.RateLimitError as refused:
                    assert refused.code == "budget_exceeded"
                    return
            counts[user] += 1

        await asyncio.gather(*(one(u) for u in range(users) for _ in range(REQUESTS)))
    return counts




@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_every_end_user_gets_exactly_their_share(kind: str, tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    with mock_upstream(tmp_path) as mock, store_url(kind, tmp_path) as store:
        cost = await request_cost(mock.url)
        config = tmp_path / "gateway.yaml"
        config.write_text(CONFIG.format(
            store=store, mock=mock.url, each=usd(N * cost), whole=usd(CAPPED_SUM * cost),
            each_sha=hashlib.sha256(EACH_KEY.encode()).hexdigest(),
            capped_sha=hashlib.sha256(CAPPED_KEY.encode()).hexdigest()))
        with gateway_process(config, tmp_path / "gateway.log") as gateway:
            base = f"{gateway.url}/v1"
            each = await admitted(base, EACH_KEY, USERS)
            capped = await admitted(base, CAPPED_KEY, CAPPED_USERS)
            async with openai.AsyncOpenAI(base_url=base, api_key=EACH_KEY,
                                          max_retries=0) as client:
                with pytest.raises(openai.BadRequestError) as nobody:
                    await client.chat.completions.create(
                        model="gpt-4o-mini", max_tokens=10, messages=MESSAGES)
            async with aiohttp.ClientSession() as session, session.get(
                    f"{mock.url}/v1/mock/stats") as resp:
                stats = await resp.json()
    assert sorted(set(each.values())) == [N] and len(each) == USERS
    assert sum(capped.values()) == CAPPED_SUM  # the tenant-wide budget binds the sum
    assert max(capped.values()) <= N
    assert nobody.value.code == "end_user_required"
    assert stats["requests"] == {"/chat/completions": USERS * N + CAPPED_SUM}
