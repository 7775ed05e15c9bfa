"""A zero limit means no limit, the seed's meaning, in the library, the YAML and the admin API
alike (one rule: ``Budget`` keeps a zero as ``None``)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.cost import Budget, BudgetChecker, InMemoryTracker, Usage
from gateway.errors import ConfigErrors
from gateway.settings.load import parse_settings
from tests.proxy.conftest import KEYS, Harness, MakeHarness

API = "/api/client/v1/budgets"


async def test_the_library_reads_a_zero_limit_as_none() -> None:
    """Seed: "MaxTokensPerHour int64 // rolling 1-hour token limit; 0 means no limit" and
    "MaxCostPerDay float64 // rolling 24-hour USD limit; 0 means no limit"."""
    budget = Budget(tenant="t", max_tokens_per_hour=0, max_cost_per_day=0.0,
                    max_cost_per_month=2.0)
    assert (budget.max_tokens_per_hour, budget.max_cost_per_day) == (None, None)
    assert [limit.value for limit, _ in budget.limits()] == ["max_cost_per_month"]
    tracker = InMemoryTracker()
    await tracker.record(Usage(input_tokens=10**9, cost=1.0, tenant_id="t"))
    decision = await BudgetChecker(tracker).check(budget, Usage(total_tokens=10**9, cost=0.5))
    assert decision.allowed and decision.usage_ratio == 0.75


def budgets_yaml(limits: str) -> str:
    return f"""
upstreams:
  u: {{base_url: "http://127.0.0.1:9/v1", api_key: "k"}}
tenants:
  acme:
    keys: [{{name: k, sha256: "{'a' * 64}"}}]
budgets:
  - {{name: b, tenant: acme, {limits}}}
"""


def test_a_zero_limit_in_the_yaml_is_no_limit() -> None:
    """Seed: "MaxCostPerDay float64 // rolling 24-hour USD limit; 0 means no limit"."""
    (budget,) = parse_settings(budgets_yaml("max_cost_per_day: 0, max_tokens_per_hour: 5"),
                               "g.yaml", env={}).budgets
    assert budget.max_cost_per_day is None
    assert [limit.value for limit, _ in budget.limits()] == ["max_tokens_per_hour"]


def test_a_yaml_budget_whose_limits_are_all_zero_is_an_error_saying_why() -> None:
    """Seed: "0 means no limit"; and a budget with no limit at all is a configuration error
    (the contract), so one whose every limit is 0 is one, saying why."""
    with pytest.raises(ConfigErrors) as caught:
        parse_settings(budgets_yaml("max_cost_per_day: 0, max_tokens_per_hour: 0"), "g.yaml",
                       env={})
    (error,) = caught.value.errors
    assert "g.yaml:8" in str(error)
    assert "0 means no limit" in str(error) and "remove its keys" in str(error)


async def call(gw: Harness, method: str, path: str = "", **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {KEYS['admin']}"}
    return await gw.client.request(method, API + path, headers=headers, **kw)


async def test_a_zero_limit_through_the_api_is_no_limit(gateway: MakeHarness) -> None:
    """Seed: "MaxCostPerDay float64 // rolling 24-hour USD limit; 0 means no limit". Created
    with a zero limit: that limit is null, the budget has the others; changed to
    zero: that limit goes; changed so no limit is left: a 400 naming the rule."""
    gw = await gateway()
    made = await call(gw, "POST", json={"name": "cap", "monthly_limit_usd": 0,
                                        "max_tokens_per_day": 1000})
    assert made.status == 201, await made.text()
    budget = await made.json()
    assert (budget["max_cost_per_month"], budget["max_tokens_per_day"]) == (None, 1000)
    # a request far over nothing-at-all passes: the zero blocks nothing
    assert (await gw.chat(max_tokens=5)).status == 200
    changed = await call(gw, "PATCH", f"/{budget['id']}",
                         json={"daily_limit_usd": 3, "max_tokens_per_day": 0})
    assert changed.status == 200
    assert ((await changed.json())["max_tokens_per_day"],
            (await changed.json())["max_cost_per_day"]) == (None, 3.0)
    emptied = await call(gw, "PATCH", f"/{budget['id']}", json={"daily_limit_usd": 0})
    assert emptied.status == 400
    assert "0 means no limit" in (await emptied.json())["error"]["message"]
