"""The spend and budgets API as finance and ops use it, and as another tenant must not."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest

from gateway.clock import FakeClock
from gateway.cost.windows import HOUR
from gateway.store.base import StoreError
from tests.proxy.conftest import KEYS, Harness, MakeHarness

API = "/api/client/v1"
FILE_BUDGET = """
  - {name: acme-daily, tenant: acme, max_cost_per_day: 1.0}
  - {name: globex-daily, tenant: globex, max_cost_per_day: 1.0}
"""


async def call(gw: Harness, method: str, path: str, key: str = "admin", **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {KEYS[key]}"}
    return await gw.client.request(method, API + path, headers=headers, **kw)


async def test_budget_crud_round_trip_and_yaml_budgets_read_only(gateway: MakeHarness) -> None:
    gw = await gateway(FILE_BUDGET)
    listed = await (await call(gw, "GET", "/budgets")).json()
    assert [(b["name"], b["source"]) for b in listed["data"]] == [("acme-daily", "file")]
    created = await call(gw, "POST", "/budgets",
                         json={"name": "cap", "monthly_limit_usd": 250, "alert_threshold": 0.5})
    assert created.status == 201
    budget = await created.json()
    assert budget["source"] == "api" and budget["id"].startswith("bud_")
    assert budget["max_cost_per_month"] == budget["monthly_limit_usd"] == 250
    updated = await call(gw, "PATCH", f"/budgets/{budget['id']}", json={"monthly_limit_usd": 500})
    assert updated.status == 200 and (await updated.json())["monthly_limit_usd"] == 500
    assert (await updated.json())["alert_threshold"] == 0.5, "PATCH keeps what it does not set"
    for method in ("PATCH", "DELETE"):
        refused = await call(gw, method, "/budgets/acme-daily", json={"daily_limit_usd": 2})
        assert refused.status == 409
        assert "YAML" in (await refused.json())["error"]["message"]
    assert (await call(gw, "DELETE", f"/budgets/{budget['id']}")).status == 204
    assert (await call(gw, "GET", f"/budgets/{budget['id']}")).status == 404


@pytest.mark.parametrize(("body", "field"), [
    ({}, None),  # no limit at all
    ({"monthly_limit_usd": -1}, "max_cost_per_month"),
    ({"daily_limit_usd": 1, "alert_threshold": 1.5}, "alert_threshold"),
    ({"daily_limit_usd": 1, "action": "explode"}, "action"),
    ({"daily_limit_usd": 1, "key": "nobody"}, "key"),
    ({"daily_limit_usd": 1, "max_tokens_per_hour": "ten"}, "max_tokens_per_hour"),
    ({"daily_limit_usd": 1, "max_cost_per_dya": 1}, "max_cost_per_dya"),
    ({"daily_limit_usd": 1, "tenant": "globex"}, "tenant"),
    ({"daily_limit_usd": 1, "max_cost_per_day": 2}, "daily_limit_usd"),
])
async def test_invalid_budgets_are_refused_naming_the_field(
    gateway: MakeHarness, body: dict[str, Any], field: str | None
) -> None:
    gw = await gateway(FILE_BUDGET)
    resp = await call(gw, "POST", "/budgets", json=body)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["param"] == field
    assert (field or "no limit") in error["message"]


async def test_a_name_already_used_is_a_conflict(gateway: MakeHarness) -> None:
    """A clash with a budget that exists (YAML or API) is a 409 naming the field, as the
    client's ``ConflictError``; the budget is not created."""
    gw = await gateway(FILE_BUDGET)
    assert (await call(gw, "POST", "/budgets", json={"name": "cap", "daily_limit_usd": 1})
            ).status == 201
    for name in ("acme-daily", "cap"):
        resp = await call(gw, "POST", "/budgets", json={"name": name, "daily_limit_usd": 1})
        assert resp.status == 409
        error = (await resp.json())["error"]
        assert (error["param"], error["code"]) == ("name", "budget_name_taken")
        assert f"'{name}' is already used" in error["message"]
    listed = await (await call(gw, "GET", "/budgets")).json()
    assert [b["name"] for b in listed["data"]] == ["acme-daily", "cap"]


async def test_tenant_isolation_on_every_route(gateway: MakeHarness) -> None:
    gw = await gateway(FILE_BUDGET)
    await gw.chat(max_tokens=5)  # acme spends
    mine = await (await call(gw, "POST", "/budgets", json={"daily_limit_usd": 3})).json()
    # globex's owner: acme's budgets are not theirs to see or touch
    for method, path in [("GET", f"/budgets/{mine['id']}"), ("PATCH", f"/budgets/{mine['id']}"),
                         ("DELETE", f"/budgets/{mine['id']}"), ("PATCH", "/budgets/acme-daily"),
                         ("DELETE", "/budgets/acme-daily")]:
        resp = await call(gw, method, path, key="other_admin", json={"daily_limit_usd": 9})
        assert resp.status == 403, (method, path)
        assert "acme" not in await resp.text()
    # globex's reads show globex only
    for path in ("/budgets", "/budgets/status", "/spend/report", "/spend/report?group_by=hour"):
        resp = await call(gw, "GET", path, key="other_admin")
        assert resp.status == 200
        text = await resp.text()
        assert "acme" not in text and mine["id"] not in text
    report = await (await call(gw, "GET", "/spend/report", key="other_admin")).json()
    assert report["requests"] == 0 and report["by_model"] == []
    # acme's member key may read, not write
    assert (await call(gw, "GET", "/budgets", key="ci")).status == 200
    assert (await call(gw, "GET", "/spend/report", key="ci")).status == 200
    for method, path in [("POST", "/budgets"), ("PATCH", f"/budgets/{mine['id']}"),
                         ("DELETE", f"/budgets/{mine['id']}")]:
        resp = await call(gw, method, path, key="ci", json={"daily_limit_usd": 9})
        assert resp.status == 403 and "admin or owner" in (await resp.json())["error"]["message"]
    no_key = await gw.client.get(API + "/budgets")
    assert no_key.status == 401


async def test_report_totals_equal_upstream_usage_across_days_and_months(
    gateway: MakeHarness,
) -> None:
    start = dt.datetime(2026, 10, 30, 22, 30, tzinfo=dt.UTC).timestamp()
    clock = FakeClock(start)
    gw = await gateway(clock=clock)
    plan = [("gpt-4o-mini", 7), ("gpt-4o", 11), ("gpt-4o-mini", 3)]
    days: list[str] = []
    for step in range(6):  # Oct 30, 31, Nov 1, 2, 3, 4: across a month boundary
        for model, max_tokens in plan:
            assert (await gw.chat(max_tokens=max_tokens, model=model)).status == 200
        embed = {"model": "text-embedding-3-small", "input": f"day {step}"}
        assert (await gw.post("/embeddings", embed)).status == 200
        days.append(dt.datetime.fromtimestamp(clock.now(), dt.UTC).strftime("%Y-%m-%d"))
        clock.advance(86_400)
    stats = gw.stats
    for group_by, periods in (("day", days), ("month", ["2026-10", "2026-11"])):
        report = await (await call(gw, "GET", f"/spend/report?group_by={group_by}")).json()
        assert report["total_input_tokens"] == stats.input_tokens
        assert report["total_output_tokens"] == stats.output_tokens
        assert report["requests"] == 24
        assert [p["period"] for p in report["timeseries"]] == periods
        assert sum(p["requests"] for p in report["timeseries"]) == 24
        assert sum(m["input_tokens"] for m in report["by_model"]) == stats.input_tokens
        assert round(sum(p["cost"] for p in report["timeseries"]), 9) == round(
            report["total_cost"], 9)
        for item in report["timeseries"]:  # each period split by model, summing to it
            split = item["by_model"]
            assert [m["model_key"] for m in split] == sorted(m["model_key"] for m in split)
            for figure in ("input_tokens", "output_tokens", "requests"):
                assert sum(m[figure] for m in split) == item[figure]
            assert round(sum(m["cost"] for m in split), 9) == round(item["cost"], 9)
    by_model = {m["model_key"]: m for m in report["by_model"]}
    for model, totals in by_model.items():  # the periods' splits add up to the per-model table
        periods = [m for p in report["timeseries"] for m in p["by_model"]
                   if m["model_key"] == model]
        assert sum(m["requests"] for m in periods) == totals["requests"]
        assert sum(m["input_tokens"] for m in periods) == totals["input_tokens"]
    assert by_model["gpt-4o"]["output_tokens"] == 6 * 11
    assert by_model["text-embedding-3-small"]["output_tokens"] == 0
    ranged = await (await call(gw, "GET", "/spend/report?from=2026-11-01&to=2026-11-02")).json()
    assert ranged["requests"] == 8 and [p["period"] for p in ranged["timeseries"]] == [
        "2026-11-01", "2026-11-02"]
    one_model = await (await call(gw, "GET", "/spend/report?model=gpt-4o")).json()
    assert one_model["requests"] == 6 and one_model["total_output_tokens"] == 66


async def test_report_and_status_parameters_are_checked(gateway: MakeHarness) -> None:
    """Seed (Cognipeer): "Narrow it with query options such as group_by and a date range" and
    "status() accepts an optional { domain, model, scope } filter (scope is tenant or token)":
    an option the call does not take (``groupBy``) or a range that ends before it starts is a
    400 naming the parameter, never an answer to another question."""
    gw = await gateway()
    for path, param in [("/spend/report?group_by=week", "group_by"),
                        ("/spend/report?from=yesterday", "from"),
                        ("/budgets/status?scope=everyone", "scope"),
                        ("/budgets/status?domain=audio", "domain"),
                        ("/spend/report?groupBy=hour", "groupBy"),
                        ("/spend/report?from=2026-11-05&to=2026-11-01", "from"),
                        ("/budgets/status?scopes=key", "scopes")]:
        resp = await call(gw, "GET", path)
        assert resp.status == 400 and (await resp.json())["error"]["param"] == param, path
    misspelt = await (await call(gw, "GET", "/spend/report?groupBy=hour")).json()
    assert "Did you mean 'group_by'?" in misspelt["error"]["message"]


async def test_an_api_budget_stops_the_next_request_at_once(gateway: MakeHarness) -> None:
    gw = await gateway()
    assert (await gw.chat(max_tokens=10)).status == 200
    created = await call(gw, "POST", "/budgets", json={"max_tokens_per_hour": 5})
    assert created.status == 201
    denied = await gw.chat(max_tokens=10)
    assert denied.status == 429
    assert (await created.json())["name"] in (await denied.json())["error"]["message"]
    budget_id = (await created.json())["id"]
    await call(gw, "PATCH", f"/budgets/{budget_id}", json={"max_tokens_per_hour": 100_000})
    assert (await gw.chat(max_tokens=10)).status == 200
    status = await (await call(gw, "GET", "/budgets/status?scope=tenant")).json()
    (entry,) = status["budgets"]
    assert entry["id"] == budget_id and entry["limits"][0]["used"] > 0
    assert status["per_hour"]["limit_tokens"] == 100_000


async def test_status_filters_and_binding_figures(gateway: MakeHarness) -> None:
    gw = await gateway("""
  - {name: ci-hourly, tenant: acme, key: acme-ci, max_tokens_per_hour: 1000}
  - {name: embed-daily, tenant: acme, domain: embedding, max_cost_per_day: 2.0}
  - {name: monthly, tenant: acme, model: "gpt-4o*", max_cost_per_month: 10.0}
""")
    assert (await gw.chat(max_tokens=10, key="ci")).status == 200
    everything = await (await call(gw, "GET", "/budgets/status", key="ci")).json()
    assert {b["name"] for b in everything["budgets"]} == {"ci-hourly", "embed-daily", "monthly"}
    assert everything["per_hour"]["limit_tokens"] == 1000
    assert everything["per_hour"]["used_tokens"] > 0
    # the day's spend beside the binding daily limit, which has counted nothing of it (an
    # embedding budget; the request was a chat)
    spent = everything["per_day"]["used_usd"]
    assert spent > 0
    assert everything["per_day"] == {"used_usd": spent, "limit_usd": 2.0, "counted_usd": 0.0}
    llm = await (await call(gw, "GET", "/budgets/status?domain=llm", key="ci")).json()
    assert {b["name"] for b in llm["budgets"]} == {"ci-hourly", "monthly"}
    assert llm["per_day"] == {"used_usd": spent, "limit_usd": None, "counted_usd": None}
    token = await (await call(gw, "GET", "/budgets/status?scope=token", key="ci")).json()
    assert [b["name"] for b in token["budgets"]] == ["ci-hourly"]
    tenant = await (await call(gw, "GET", "/budgets/status?scope=tenant", key="ci")).json()
    assert {b["name"] for b in tenant["budgets"]} == {"embed-daily", "monthly"}
    model = await (await call(gw, "GET", "/budgets/status?model=gpt-4.1", key="ci")).json()
    assert {b["name"] for b in model["budgets"]} == {"ci-hourly", "embed-daily"}


async def test_admin_routes_answer_503_while_the_store_is_down(gateway: MakeHarness) -> None:
    gw = await gateway()

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("connection refused")

    gw.store.definitions.list = down  # type: ignore[method-assign]
    gw.store.rollups = down  # type: ignore[method-assign]
    gw.store.end_user_days = down  # type: ignore[method-assign]
    for path in ("/budgets", "/spend/report", "/budgets/status", "/spend/end_users",
                 "/spend/report?end_user=alice", "/budgets/status?end_user=alice"):
        resp = await call(gw, "GET", path)
        assert resp.status == 503, path
        assert (await resp.json())["error"]["code"] == "budget_store_unavailable"


async def test_a_report_to_the_last_representable_day_is_fine(gateway: MakeHarness) -> None:
    gw = await gateway()
    resp = await call(gw, "GET", "/spend/report?from=0001-01-01&to=9999-12-31")
    assert resp.status == 200


async def test_status_tells_when_each_window_frees_capacity(gateway: MakeHarness) -> None:
    start = dt.datetime(2026, 11, 30, 22, 0, 10, tzinfo=dt.UTC).timestamp()
    clock = FakeClock(start)
    gw = await gateway("""
  - {name: hourly, tenant: acme, max_tokens_per_hour: 100000, max_cost_per_month: 10.0}
  - {name: embed-only, tenant: acme, domain: embedding, max_cost_per_day: 2.0}
""", clock=clock)

    async def resets() -> dict[tuple[str, str], Any]:
        body = await (await call(gw, "GET", "/budgets/status")).json()
        return {(b["name"], lim["limit"]): lim["resets_in_s"]
                for b in body["budgets"] for lim in b["limits"]}

    assert set((await resets()).values()) == {None}, "nothing counted: nothing to free"
    assert (await gw.chat(max_tokens=10)).status == 200
    clock.advance(1200)  # 20 minutes later, a second request: the first one still leaves first
    assert (await gw.chat(max_tokens=10)).status == 200
    found = await resets()
    first_leaves = HOUR.leaves_at(HOUR.bucket(start))
    assert found["hourly", "max_tokens_per_hour"] == math.ceil(first_leaves - clock.now())
    month_ends = dt.datetime(2026, 12, 1, tzinfo=dt.UTC).timestamp()
    assert found["hourly", "max_cost_per_month"] == month_ends - clock.now()
    assert found["embed-only", "max_cost_per_day"] is None
    clock.advance(first_leaves - clock.now())  # the first request has left the hour
    found = await resets()
    assert found["hourly", "max_tokens_per_hour"] == 1200


async def test_status_shows_the_spend_without_a_budget_and_before_one(
        gateway: MakeHarness) -> None:
    """Seed (Cognipeer): "Check current usage ... console.log(status.per_month.used_usd, '/',
    status.per_month.limit_usd)": what was spent, whatever the limits. A tenant without a
    budget sees its spend with null limits; a monthly budget created after spending shows the
    month's spend beside its limit, and counts (``counted_usd``) from its creation."""
    start = dt.datetime(2026, 11, 10, 12, 0, 0, tzinfo=dt.UTC).timestamp()
    clock = FakeClock(start)
    gw = await gateway(clock=clock)
    for _ in range(3):
        assert (await gw.chat(max_tokens=10)).status == 200
    clock.advance(2 * 86400.0)  # out of the rolling hour and day, still in November
    assert (await gw.chat(max_tokens=10)).status == 200
    report = await (await call(gw, "GET", "/spend/report?group_by=month")).json()
    month_usd = report["total_cost"]
    last = (await gw.store.entries("acme"))[-1]
    status = await (await call(gw, "GET", "/budgets/status")).json()
    assert status["per_month"] == {"used_usd": month_usd, "limit_usd": None, "counted_usd": None}
    assert status["per_day"]["used_usd"] == pytest.approx(last.cost)
    assert status["per_hour"]["used_tokens"] == last.input_tokens + last.output_tokens
    assert status["per_hour"]["limit_tokens"] is None and status["budgets"] == []

    made = await call(gw, "POST", "/budgets", json={"name": "cap", "monthly_limit_usd": 250})
    assert made.status == 201
    status = await (await call(gw, "GET", "/budgets/status")).json()
    assert status["per_month"] == {"used_usd": month_usd, "limit_usd": 250.0, "counted_usd": 0.0}
    ((limit,),) = [b["limits"] for b in status["budgets"]]
    assert limit["used"] == 0.0  # enforcement counts from the budget's creation
    # model filter: another model spent nothing
    other = await (await call(gw, "GET", "/budgets/status?model=gpt-4o")).json()
    assert other["per_month"]["used_usd"] == 0.0 and other["per_hour"]["used_tokens"] == 0
