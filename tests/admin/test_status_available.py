"""The budget status says what each limit still admits (issue 18): ``available``, what one more
request may reserve now, so a budget that refuses requests below 100% says so."""

from __future__ import annotations

from typing import Any

from tests.proxy.conftest import KEYS, Harness, MakeHarness

API = "/api/client/v1"


async def _call(gw: Harness, method: str, path: str, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {KEYS['admin']}"}
    return await gw.client.request(method, API + path, headers=headers, **kw)


async def _limits(gw: Harness) -> dict[str, dict[str, Any]]:
    status = await (await _call(gw, "GET", "/budgets/status")).json()
    return {limit["limit"]: limit for b in status["budgets"] for limit in b["limits"]}


async def test_available_is_what_the_next_request_may_reserve(gateway: MakeHarness) -> None:
    gw = await gateway()
    used = await gw.chat(max_tokens=10)
    assert used.status == 200
    usage = (await used.json())["usage"]
    tokens = usage["prompt_tokens"] + usage["completion_tokens"]
    limit = -(-tokens * 100 // 91)  # after one more such request: 91% used
    created = await _call(gw, "POST", "/budgets", json={
        "max_tokens_per_hour": limit, "max_cost_per_day": 1, "alert_threshold": 0.8})
    assert created.status == 201

    before = await _limits(gw)
    assert before["max_tokens_per_hour"]["available"] == limit
    assert before["max_cost_per_day"]["available"] == 1

    assert (await gw.chat(max_tokens=10)).status == 200
    after = await _limits(gw)
    hour = after["max_tokens_per_hour"]
    assert hour["available"] == limit - hour["used"] > 0
    assert 0.8 <= hour["ratio"] < 1  # amber, not full...
    assert hour["available"] < tokens  # ...yet less than such a request reserves:
    assert (await gw.chat(max_tokens=10)).status == 429  # refused
    day = after["max_cost_per_day"]
    assert day["available"] == round(1 - day["used"], 9)


async def test_a_limit_past_its_maximum_has_nothing_available(gateway: MakeHarness) -> None:
    gw = await gateway()
    assert (await _call(gw, "POST", "/budgets", json={"max_tokens_per_hour": 100,
                                                      "action": "alert"})).status == 201
    assert (await gw.chat(max_tokens=200)).status == 200  # an alert budget lets it through
    (limit,) = (await _limits(gw)).values()
    assert limit["used"] > limit["max"] and limit["available"] == 0
