"""GET /api/client/v1/denials: the requests a budget refused lately, newest first: a tenant
key its own tenant's, an operator any tenant's or every tenant's (tenant=all); each with the
budget and limit that refused, the model and the request id, never the end user nor a key."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.clock import FakeClock
from tests.proxy.conftest import KEYS, OPERATOR_KEYS, OPERATORS, Harness, MakeHarness

API = "/api/client/v1"
BUDGETS = """
  - {name: acme-hour, tenant: acme, max_tokens_per_hour: 1}
  - {name: globex-day, tenant: globex, max_cost_per_day: 0.000001}
"""
T0 = 1_700_000_000.0


async def denials(gw: Harness, query: str = "", key: str = "ci", operator: bool = False
                  ) -> tuple[int, Any]:
    secret = OPERATOR_KEYS[key] if operator else KEYS[key]
    resp = await gw.client.get(f"{API}/denials{query}",
                               headers={"Authorization": f"Bearer {secret}"})
    return resp.status, await resp.json()


async def refused(gw: Harness, clock: FakeClock, key: str = "ci", **fields: Any) -> str:
    clock.advance(1)
    resp = await gw.chat(key=key, **fields)
    assert resp.status == 429, await resp.text()
    return str(resp.headers["x-request-id"])


async def test_a_tenant_key_reads_its_own_denials_newest_first(gateway: MakeHarness) -> None:
    clock = FakeClock(T0)
    gw = await gateway(BUDGETS, extra=OPERATORS, clock=clock)
    first = await refused(gw, clock, safety_identifier="alice@example.com")
    second = await refused(gw, clock, user="bob")
    other = await refused(gw, clock, key="other")
    status, body = await denials(gw)
    assert status == 200, body
    assert [d["request_id"] for d in body["data"]] == [second, first]
    message = body["data"][1].pop("message")
    assert message.startswith("Budget 'acme-hour' exceeded: max_tokens_per_hour")
    assert body["data"][1] == {
        "at": "2023-11-14T22:13:21.000Z", "tenant": "acme", "budget_id": "acme-hour",
        "budget": "acme-hour", "limit": "max_tokens_per_hour", "action": "reject",
        "model": "gpt-4o-mini", "request_id": first}
    text = str(body)
    assert "alice" not in text and "bob" not in text, "never the end user"
    assert KEYS["ci"] not in text
    status, body = await denials(gw, "?limit=1", key="other")
    assert [(d["request_id"], d["limit"]) for d in body["data"]] == [(other,
                                                                      "max_cost_per_day")]
    status, body = await denials(gw, "?tenant=acme")
    assert status == 200 and len(body["data"]) == 2, "a tenant key may name its own"


@pytest.mark.parametrize("query", ["?tenant=globex", "?tenant=all"])
async def test_a_tenant_key_reads_no_other_tenants(gateway: MakeHarness, query: str) -> None:
    clock = FakeClock(T0)
    gw = await gateway(BUDGETS, clock=clock)
    await refused(gw, clock, key="other")
    status, body = await denials(gw, query)
    assert status == 403, body
    assert "globex-day" not in str(body)


@pytest.mark.parametrize("role", sorted(OPERATOR_KEYS))
async def test_an_operator_reads_one_tenant_or_all(gateway: MakeHarness, role: str) -> None:
    clock = FakeClock(T0)
    gw = await gateway(BUDGETS, extra=OPERATORS, clock=clock)
    acme = await refused(gw, clock)
    globex = await refused(gw, clock, key="other")
    latest = await refused(gw, clock)
    status, body = await denials(gw, "?tenant=all", key=role, operator=True)
    assert status == 200, body
    assert [(d["tenant"], d["request_id"]) for d in body["data"]] == [
        ("acme", latest), ("globex", globex), ("acme", acme)]
    status, body = await denials(gw, "?tenant=globex", key=role, operator=True)
    assert [d["request_id"] for d in body["data"]] == [globex]
    status, body = await denials(gw, "?tenant=all&limit=2", key=role, operator=True)
    assert [d["request_id"] for d in body["data"]] == [latest, globex]
    status, body = await denials(gw, "", key=role, operator=True)
    assert (status, body["error"]["code"]) == (400, "tenant_required")
    status, body = await denials(gw, "?tenant=initech", key=role, operator=True)
    assert (status, body["error"]["code"]) == (404, "tenant_not_found")


@pytest.mark.parametrize("query", ["?limit=0", "?limit=1001", "?limit=ten", "?limt=5"])
async def test_bad_parameters_are_a_400_naming_them(gateway: MakeHarness, query: str) -> None:
    gw = await gateway(BUDGETS)
    status, body = await denials(gw, query)
    assert status == 400, body
    assert body["error"]["param"] == query[1:query.index("=")]
