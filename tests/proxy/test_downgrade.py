"""``action: downgrade``: a request a budget would deny is served by a cheaper model instead,
if the tenant may use it and it fits every budget that then matches; else the usual 429."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from gateway.cost.model import Filter
from gateway.log import JsonFormatter
from tests import leaks
from tests.proxy.conftest import KEYS, Harness, MakeHarness

OPS_TOKEN = "ops-downgrade-token-0123456789"
leaks.SECRETS.add(OPS_TOKEN)
API = "/api/client/v1"
HEADER = "x-budget-downgraded-from"

# acme may use gpt-4o, gpt-4o-mini and text-embedding-*; globex any priced model.
DOWNGRADE = """
  - {{name: big, tenant: acme, model: gpt-4o, max_tokens_per_day: {big}, action: downgrade,
     fallback_model: gpt-4o-mini}}
  - {{name: small, tenant: acme, model: gpt-4o-mini, max_tokens_per_day: {small}}}
"""


async def per_request(gateway: MakeHarness, model: str = "gpt-4o", **fields: Any) -> int:
    """Tokens one test request bills (the mock is exact, so also what it reserves)."""
    gw = await gateway()
    resp = await gw.chat(model=model, key="other", **fields)
    usage: dict[str, int] = (await resp.json())["usage"]
    return usage["total_tokens"]


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [orjson.loads(JsonFormatter().format(r)) for r in caplog.records
            if r.name == "gateway.access"]


async def test_a_tenant_past_its_gpt_4o_budget_carries_on_with_the_fallback_until_it_is_spent(
    gateway: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    per = await per_request(gateway)
    gw = await gateway(DOWNGRADE.format(big=2 * per, small=3 * per),
                       extra=f'ops: {{token: "{OPS_TOKEN}"}}')
    served = []
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        for _ in range(5):
            resp = await gw.chat(model="gpt-4o")
            assert resp.status == 200, await resp.text()
            served.append(((await resp.json())["model"], resp.headers.get(HEADER)))
        refused = await gw.chat(model="gpt-4o")
    assert served == [("gpt-4o", None)] * 2 + [("gpt-4o-mini", "gpt-4o")] * 3
    assert refused.status == 429
    error = (await refused.json())["error"]
    assert error["code"] == "budget_exceeded" and "Budget 'big' exceeded" in error["message"]
    assert await gw.in_flight() == 0
    big = await gw.store.query(Filter(tenant_id="acme", model="gpt-4o"))
    small = await gw.store.query(Filter(tenant_id="acme", model="gpt-4o-mini"))
    assert big.entry_count == 2 and small.entry_count == 3
    input_tokens = small.total_input_tokens
    assert small.total_cost == pytest.approx((input_tokens * 0.15 + 30 * 0.60) / 1e6, abs=1e-9)
    assert big.total_cost == pytest.approx((big.total_input_tokens * 2.5 + 20 * 10) / 1e6,
                                           abs=1e-9)
    lines = access_lines(caplog)[-6:]
    assert [line["decision"] for line in lines] == ["allow", "alert"] + ["downgrade"] * 3 + [
        "deny"]  # the second fills 'big' to its limit: an alert
    downgraded = lines[2]
    assert downgraded["model"] == "gpt-4o-mini" and downgraded["downgraded_from"] == "gpt-4o"
    assert "Budget 'big' exceeded" in downgraded["reason"]
    assert "downgraded_from" not in lines[0] and "downgraded_from" not in lines[-1]
    metrics = await gw.client.get("/metrics", headers={"Authorization": f"Bearer {OPS_TOKEN}"})
    text = await metrics.text()
    assert ('gateway_downgrades_total{from_model="gpt-4o",tenant="acme",to_model="gpt-4o-mini"}'
            ' 3.0') in text
    assert ('gateway_budget_decisions_total{action="downgrade",budget="big",outcome="downgrade",'
            'tenant="acme"} 3.0') in text


async def test_a_downgraded_stream_is_served_and_charged_as_the_fallback(
    gateway: MakeHarness,
) -> None:
    gw = await gateway(DOWNGRADE.format(big=1, small=10_000))
    resp = await gw.chat(model="gpt-4o", stream=True, max_tokens=6)
    text = await resp.text()
    assert resp.status == 200 and resp.headers[HEADER] == "gpt-4o"
    assert text.endswith("data: [DONE]\n\n")
    chunks = [orjson.loads(line[6:]) for line in text.splitlines()
              if line.startswith("data: {")]
    assert chunks and {c["model"] for c in chunks} == {"gpt-4o-mini"}
    forwarded = gw.stats.last_request
    assert forwarded is not None and forwarded["body"]["model"] == "gpt-4o-mini"
    assert forwarded["body"]["stream_options"] == {"include_usage": True}
    summary = await gw.store.query(Filter(model="gpt-4o-mini"))
    assert summary.entry_count == 1 and summary.total_output_tokens == 6
    assert await gw.in_flight() == 0


ENDPOINTS = {
    "completions": ("/completions", {"prompt": "hello", "max_tokens": 5}),
    "responses": ("/responses", {"input": "hello", "max_output_tokens": 16}),
    "responses-stream": ("/responses", {"input": "hello", "max_output_tokens": 16,
                                        "stream": True}),
}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_every_llm_endpoint_sends_the_fallback_upstream(
    gateway: MakeHarness, endpoint: str
) -> None:
    gw = await gateway(DOWNGRADE.format(big=1, small=10_000))
    path, body = ENDPOINTS[endpoint]
    resp = await gw.post(path, {"model": "gpt-4o", **body})
    text = await resp.text()
    assert resp.status == 200, text
    assert resp.headers[HEADER] == "gpt-4o" and '"gpt-4o-mini"' in text
    forwarded = gw.stats.last_request
    assert forwarded is not None and forwarded["body"]["model"] == "gpt-4o-mini"
    assert (await gw.store.query(Filter(model="gpt-4o-mini"))).entry_count == 1
    assert await gw.in_flight() == 0


async def test_embeddings_downgrade_too(gateway: MakeHarness) -> None:
    gw = await gateway("""
  - {name: large, tenant: acme, domain: embedding, model: text-embedding-3-large,
     max_tokens_per_day: 1, action: downgrade, fallback_model: text-embedding-3-small}
""")
    resp = await gw.post("/embeddings", {"model": "text-embedding-3-large",
                                          "input": "hello there, embed me"})
    assert resp.status == 200 and resp.headers[HEADER] == "text-embedding-3-large"
    assert (await resp.json())["model"] == "text-embedding-3-small"
    assert (await gw.store.query(Filter(model="text-embedding-3-small"))).entry_count == 1


async def test_the_fallback_is_bounded_as_itself_its_maximum_output_reserved_and_set(
    gateway: MakeHarness,
) -> None:
    """No cap in the request: the gateway sets (and reserves) the fallback's maximum output,
    16,384 for gpt-4o-mini, not gpt-4.1's 32,768."""
    gw = await gateway("""
  - {name: big, tenant: globex, model: gpt-4.1, max_tokens_per_day: 1, action: downgrade,
     fallback_model: gpt-4o-mini}
  - {name: small, tenant: globex, model: gpt-4o-mini, max_tokens_per_day: 20000}
""")
    body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}
    resp = await gw.post("/chat/completions", body, key="other")
    assert resp.status == 200, await resp.text()
    forwarded = gw.stats.last_request
    assert forwarded is not None and forwarded["body"]["model"] == "gpt-4o-mini"
    assert forwarded["body"]["max_completion_tokens"] == 16_384
    assert "max_completion_tokens" not in body
    assert await gw.in_flight() == 0


async def test_fallbacks_are_tried_in_order_and_all_denied_is_the_original_429(
    gateway: MakeHarness,
) -> None:
    gw = await gateway("""
  - {name: big, tenant: globex, model: gpt-4.1, max_tokens_per_hour: 1, action: downgrade,
     fallback_model: [gpt-4o-mini, gpt-4.1-mini]}
  - {name: mini, tenant: globex, model: gpt-4o-mini, max_tokens_per_day: 1}
  - {name: nano, tenant: globex, model: gpt-4.1-mini, max_tokens_per_day: 100000}
""")
    resp = await gw.chat(model="gpt-4.1", key="other")
    assert resp.status == 200 and (await resp.json())["model"] == "gpt-4.1-mini"
    assert resp.headers[HEADER] == "gpt-4.1"
    await _lower(gw, "nano")
    denied = await gw.chat(model="gpt-4.1", key="other")
    assert denied.status == 429
    message = (await denied.json())["error"]["message"]
    assert "Budget 'big' exceeded" in message and "max_tokens_per_hour" in message
    assert HEADER not in denied.headers
    assert await gw.in_flight() == 0


async def _lower(gw: Harness, budget: str) -> None:
    """Lowers the file budget ``budget`` (its 100,000 tokens a day) to 1 token, as ops would."""
    text = gw.path.read_text().replace("max_tokens_per_day: 100000", "max_tokens_per_day: 1")
    gw.path.write_text(text)
    gw.config.reload()
    assert any(b.name == budget and b.max_tokens_per_day == 1
               for b in gw.config.current.settings.budgets)


async def test_a_reject_budget_the_fallback_matches_still_denies(gateway: MakeHarness) -> None:
    """A tenant-wide reject budget binds the fallback too: no way around it."""
    per = await per_request(gateway)
    gw = await gateway(f"""
  - {{name: big, tenant: acme, model: gpt-4o, max_tokens_per_day: 1, action: downgrade,
     fallback_model: gpt-4o-mini}}
  - {{name: all, tenant: acme, max_tokens_per_day: {per}}}
""")
    first = await gw.chat(model="gpt-4o")
    assert first.status == 200 and first.headers[HEADER] == "gpt-4o"
    denied = await gw.chat(model="gpt-4o")
    assert denied.status == 429
    assert "Budget 'big' exceeded" in (await denied.json())["error"]["message"]
    assert await gw.in_flight() == 0


async def test_a_reject_budget_of_the_model_asked_for_does_not_stop_the_downgrade(
    gateway: MakeHarness,
) -> None:
    """Both deny gpt-4o; the downgrade budget decides, and the reject budget's scope (gpt-4o)
    does not cover the fallback."""
    gw = await gateway("""
  - {name: hard, tenant: acme, model: "gpt-4o", max_tokens_per_day: 1}
  - {name: big, tenant: acme, model: "gpt-4o", max_tokens_per_day: 1, action: downgrade,
     fallback_model: gpt-4o-mini}
""")
    resp = await gw.chat(model="gpt-4o")
    assert resp.status == 200 and (await resp.json())["model"] == "gpt-4o-mini"


async def test_a_fallback_the_tenant_may_no_longer_use_is_skipped(
    gateway: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    """An API budget's fallback checked when written; a reload later narrowed the allow-list."""
    gw = await gateway()
    created = await _create(gw, {"name": "big", "model": "gpt-4o", "max_tokens_per_day": 1,
                                 "action": "downgrade", "fallback_model": "gpt-4o-mini"})
    assert created.status == 201, await created.text()
    assert (await created.json())["fallback_model"] == ["gpt-4o-mini"]
    ok = await gw.chat(model="gpt-4o")
    assert ok.status == 200 and ok.headers[HEADER] == "gpt-4o"
    text = gw.path.read_text().replace('models: ["gpt-4o-mini", ', 'models: [')
    gw.path.write_text(text)
    gw.config.reload()
    with caplog.at_level(logging.WARNING, logger="gateway.proxy.downgrade"):
        denied = await gw.chat(model="gpt-4o")
    assert denied.status == 429
    assert any("fallback skipped" in r.getMessage() for r in caplog.records)


async def _create(gw: Harness, body: dict[str, Any]) -> Any:
    headers = {"Authorization": f"Bearer {KEYS['admin']}"}
    return await gw.client.post(f"{API}/budgets", json=body, headers=headers)


@pytest.mark.parametrize(("body", "problem"), [
    ({"action": "downgrade"}, "needs fallback_model"),
    ({"action": "reject", "fallback_model": "gpt-4o-mini"}, "only for action: downgrade"),
    ({"action": "downgrade", "fallback_model": "gpt-4.1"}, "allow-list"),
    ({"action": "downgrade", "fallback_model": ["gpt-4o-mini", "gpt-4o-mini"]}, "twice"),
    ({"action": "downgrade", "fallback_model": "gpt-4o-*"}, "glob"),
    ({"action": "downgrade", "fallback_model": []}, "empty"),
])
async def test_the_admin_api_holds_fallbacks_to_the_files_rules(
    gateway: MakeHarness, body: dict[str, Any], problem: str
) -> None:
    gw = await gateway()
    resp = await _create(gw, {"model": "gpt-4o", "max_tokens_per_day": 10, **body})
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == "invalid_budget" and problem in error["message"]
    assert error["param"] == "fallback_model"
