"""``action: downgrade`` against real processes with the official openai SDK, on every store: a
tenant exhausts its gpt-5 budget and carries on with gpt-5-mini, charged at gpt-5-mini prices,
streams included, with no request denied until the fallback's own budget is spent too."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from tests import leaks
from tests.procs import gateway_process, mock_upstream
from tests.servers import store_url

SECRET = "sk-e2e-downgrade-0123456789abcdef"
OPS_TOKEN = "e2e-downgrade-ops-token-0123456789"
leaks.SECRETS.update([SECRET, OPS_TOKEN])
OUTPUT = 20  # max_completion_tokens of every request: the mock bills exactly that
PROMPT = [{"role": "user", "content": "Summarise the budget gateway in one line."}]
PRICES = {"gpt-5": (1.25, 10.0), "gpt-5-mini": (0.25, 2.0)}  # USD per 1M input, output

CONFIG = """
store: "{store}"
upstreams:
  mock: {{base_url: "{mock}/v1", api_key: "k", timeout_s: 30}}
tenants:
  team:
    models: ["gpt-5", "gpt-5-mini"]
    keys: [{{name: app, sha256: "{sha}"}}]
budgets:
  - {{name: gpt5-daily, tenant: team, model: gpt-5, max_tokens_per_day: {big},
     action: downgrade, fallback_model: gpt-5-mini}}
  - {{name: mini-daily, tenant: team, model: gpt-5-mini, max_tokens_per_day: {small}}}
ops: {{token: "{ops}"}}
"""




async def per_request_tokens(mock: str) -> int:
    """What one request bills, asked of the mock itself (then forgotten by it)."""
    body = {"model": "gpt-5", "messages": PROMPT, "max_completion_tokens": OUTPUT}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{mock}/v1/chat/completions", json=body) as resp:
            tokens: int = (await resp.json())["usage"]["total_tokens"]
        await session.post(f"{mock}/v1/mock/reset")
    return tokens


def ask(client: openai.AsyncOpenAI, stream: bool) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="gpt-5", messages=PROMPT, max_completion_tokens=OUTPUT, stream=stream)


async def served_by(client: openai.AsyncOpenAI, stream: bool) -> tuple[str, str | None]:
    """The model the answer names (every chunk of a stream) and the downgrade header."""
    raw = await ask(client, stream)
    answer = raw.parse()
    if stream:
        models = {chunk.model async for chunk in answer}
        assert len(models) == 1, models
        model = models.pop()
    else:
        model = answer.model
    return model, raw.headers.get("x-budget-downgraded-from")


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
async def test_a_tenant_past_its_gpt5_budget_carries_on_with_gpt5_mini_until_that_is_spent(
    tmp_path: Path, kind: str
) -> None:
    with mock_upstream(tmp_path) as mock, store_url(kind, tmp_path) as store:
        per = await per_request_tokens(mock.url)
        config = tmp_path / "gateway.yaml"
        config.write_text(CONFIG.format(
            store=store, mock=mock.url, big=2 * per, small=4 * per, ops=OPS_TOKEN,
            sha=hashlib.sha256(SECRET.encode()).hexdigest()))
        with gateway_process(config, tmp_path / "gateway.log") as gateway:
            client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=SECRET,
                                        max_retries=0, timeout=20)
            async with client:
                served = [await served_by(client, stream) for stream in
                          (False, True, False, True, True, False)]
                with pytest.raises(openai.RateLimitError) as refused:
                    await served_by(client, False)
            assert served == [("gpt-5", None)] * 2 + [("gpt-5-mini", "gpt-5")] * 4
            error = refused.value.body
            assert isinstance(error, dict) and error["code"] == "budget_exceeded"
            assert "Budget 'gpt5-daily' exceeded" in error["message"]
            report = await _get(gateway.url + "/api/client/v1/spend/report", SECRET)
            metrics = await _get(gateway.url + "/metrics", OPS_TOKEN)
            lines = [json.loads(line) for line in gateway.output().splitlines()
                     if '"logger": "gateway.access"' in line or '"logger":"gateway.access"' in line]
    by_model = {row["model_key"]: row for row in report["by_model"]}
    assert {m: by_model[m]["requests"] for m in by_model} == {"gpt-5": 2, "gpt-5-mini": 4}
    for model, (input_price, output_price) in PRICES.items():
        row = by_model[model]
        assert row["output_tokens"] == OUTPUT * row["requests"]
        expected = (row["input_tokens"] * input_price + row["output_tokens"] * output_price) / 1e6
        assert row["cost"] == pytest.approx(expected, abs=1e-9), model
    assert report["total_input_tokens"] + report["total_output_tokens"] == 6 * per
    assert ('gateway_downgrades_total{from_model="gpt-5",tenant="team",to_model="gpt-5-mini"} '
            '4.0') in metrics
    assert "gateway_settlements_over_reservation_total 0.0" in metrics
    decisions = [(line["decision"], line["model"], line.get("downgraded_from"))
                 for line in lines if line.get("route", "").endswith("/chat/completions")]
    assert decisions[-5:] == [("downgrade", "gpt-5-mini", "gpt-5")] * 4 + [
        ("deny", "gpt-5", None)]


async def _get(url: str, token: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(
            url, headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200, await resp.text()
        if resp.content_type == "application/json":
            return await resp.json()
        return await resp.text()
