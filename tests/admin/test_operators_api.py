"""The admin API for the platform team (issue 20): an operator's key names the tenant it asks
about, or all of them; a viewer reads, an editor also changes budgets; a tenant key keeps
seeing its own tenant only. Who may do what on every route, then what "all" answers."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pytest

from gateway.clock import FakeClock
from gateway.cost.model import NANO_PER_USD
from tests.proxy.conftest import KEYS, OPERATOR_KEYS, OPERATORS, Harness, MakeHarness

API = "/api/client/v1"
FILE_BUDGETS = """
  - {name: acme-daily, tenant: acme, max_cost_per_day: 1.0, max_tokens_per_hour: 100000}
  - {name: globex-daily, tenant: globex, max_cost_per_day: 0.0001}
"""
SECRETS = {**KEYS, **OPERATOR_KEYS}


@dataclass(frozen=True)
class Who:
    """A caller, and the ``tenant`` it names on every request (None: names none)."""

    key: str
    tenant: str | None = None


VIEWER, EDITOR = Who("viewer", "acme"), Who("editor", "acme")
MEMBER, ADMIN = Who("ci"), Who("admin")
OWN, OTHER = Who("admin", "acme"), Who("admin", "globex")  # a tenant key naming a tenant
ALL = Who("admin", "all")
NAMES_NONE, NAMES_ALL = Who("editor"), Who("editor", "all")
NAMES_NOBODY = Who("viewer", "nobody")
CALLERS = [VIEWER, EDITOR, MEMBER, ADMIN, OWN, OTHER, ALL, NAMES_NONE, NAMES_ALL, NAMES_NOBODY]
IDS = ["viewer", "editor", "member", "admin", "admin-own", "admin-other", "admin-all",
       "operator-none", "operator-all", "operator-unknown"]

# route -> the status each caller gets, in CALLERS' order. A write needs an editor, or an admin
# or owner key of the tenant; "all" is for reading; an operator names a tenant (400), one that
# exists (404); a tenant key names its own or none (403). /me names nobody.
R, W = (200, 200, 200, 200, 200, 403, 403, 400, 200, 404), None
TABLE: dict[tuple[str, str], tuple[int, ...]] = {
    ("GET", "/me"): (200,) * 10,
    ("GET", "/spend/report"): R,
    ("GET", "/spend/end_users"): R,
    ("GET", "/budgets"): R,
    ("GET", "/budgets/status"): R,
    ("GET", "/budgets/{id}"): R,
    ("GET", "/batches/running"): R,
    ("GET", "/audit"): R,
    ("GET", "/denials"): R,
    ("POST", "/budgets"): (403, 201, 403, 201, 201, 403, 403, 400, 400, 404),
    ("PATCH", "/budgets/{id}"): (403, 200, 403, 200, 200, 403, 403, 400, 400, 404),
    ("DELETE", "/budgets/{id}"): (403, 204, 403, 204, 204, 403, 403, 400, 400, 404),
}


async def call(gw: Harness, who: Who, method: str, path: str,
               params: dict[str, str] | None = None, **kw: Any) -> Any:
    params = {**(params or {}), **({} if who.tenant is None else {"tenant": who.tenant})}
    return await gw.client.request(method, API + path, params=params, headers={
        "Authorization": f"Bearer {SECRETS[who.key]}"}, **kw)


async def ok(resp: Any, status: int = 200) -> Any:
    assert resp.status == status, await resp.text()
    return await resp.json()


async def _budget(gw: Harness) -> str:
    """A new API budget of acme's, made by its admin key."""
    made = await ok(await call(gw, ADMIN, "POST", "/budgets", json={"max_cost_per_day": 2}), 201)
    return str(made["id"])


async def test_the_table_has_every_admin_route(gateway: MakeHarness) -> None:
    """A new admin route gets its row here: who may call it is a decision, not a default."""
    gw = await gateway()
    served = {(route.method, route.resource.canonical.removeprefix(API))
              for route in gw.app.router.routes()
              if route.resource is not None and route.resource.canonical.startswith(API)
              and route.method != "HEAD"}
    assert served == set(TABLE)


@pytest.mark.parametrize(("method", "route"), list(TABLE))
async def test_who_may_do_what_on_every_admin_route(gateway: MakeHarness, method: str,
                                                    route: str) -> None:
    gw = await gateway(FILE_BUDGETS, extra=OPERATORS)
    assert (await gw.chat()).status == 200
    for who, expected in zip(CALLERS, TABLE[method, route], strict=True):
        path = route.replace("{id}", await _budget(gw)) if "{id}" in route else route
        body = {"max_cost_per_day": 3} if method in ("POST", "PATCH") else None
        resp = await call(gw, who, method, path, json=body)
        text = await resp.text()
        assert resp.status == expected, (who, text)
        if expected == 403 and who.key in OPERATOR_KEYS:
            assert "role is editor" in text and "'ops-viewer' is a viewer" in text
        elif expected == 403 and who.key == "ci":
            assert "admin or owner key" in text
        elif expected == 403:  # a tenant key naming another tenant, or all
            assert "it reads and changes that tenant only" in text and "globex" not in text
        elif expected == 400:
            assert ("names the tenant it asks about" in text if who.tenant is None
                    else "is for reading" in text)
            assert '"param":"tenant"' in text
        elif expected == 404:
            assert "No tenant named 'nobody'" in text and "acme, globex" in text


async def test_an_operator_reads_a_tenant_as_its_own_keys_do(gateway: MakeHarness) -> None:
    """?tenant=acme answers an operator exactly what acme's admin key is answered."""
    clock = FakeClock(dt.datetime(2026, 11, 3, 12, 30, tzinfo=dt.UTC).timestamp())
    gw = await gateway(FILE_BUDGETS, extra=OPERATORS, clock=clock)
    for key in ("ci", "other"):
        assert (await gw.chat(key=key, user="alice")).status == 200
    await _budget(gw)
    for path in ("/spend/report", "/spend/report?group_by=hour", "/spend/end_users",
                 "/budgets", "/budgets/status", "/budgets/status?end_user=alice",
                 "/budgets/acme-daily", "/batches/running", "/audit"):
        own = await ok(await call(gw, ADMIN, "GET", path))
        for who in (VIEWER, EDITOR, OWN):
            assert await ok(await call(gw, who, "GET", path)) == own, (who, path)


async def test_an_editor_changes_any_tenants_budgets_and_is_audited(gateway: MakeHarness
                                                                    ) -> None:
    gw = await gateway(FILE_BUDGETS, extra=OPERATORS)
    made = await ok(await call(gw, Who("editor"), "POST", "/budgets", json={
        "tenant": "globex", "name": "cap", "monthly_limit_usd": 50}), 201)
    assert made["tenant"] == "globex" and made["source"] == "api"
    globex = Who("editor", "globex")
    changed = await ok(await call(gw, globex, "PATCH", f"/budgets/{made['id']}",
                                  json={"monthly_limit_usd": 80}))
    assert changed["max_cost_per_month"] == 80
    names = await ok(await call(gw, Who("other_admin"), "GET", "/budgets"))
    assert [b["name"] for b in names["data"]] == ["globex-daily", "cap"], "globex sees it"
    wrong = await call(gw, EDITOR, "PATCH", f"/budgets/{made['id']}", json={})
    assert wrong.status == 404, "not acme's"
    assert "tenant=all finds it" in (await wrong.json())["error"]["message"]
    assert (await ok(await call(gw, NAMES_ALL, "GET", f"/budgets/{made['id']}")))["id"] == made[
        "id"]
    yaml = await call(gw, globex, "DELETE", "/budgets/globex-daily")
    assert yaml.status == 409 and "YAML" in await yaml.text()
    assert (await call(gw, globex, "DELETE", f"/budgets/{made['id']}")).status == 204
    audit = await ok(await call(gw, Who("viewer", "globex"), "GET", "/audit"))
    assert [(e["action"], e["who"], e["operator"]) for e in audit["data"]] == [
        ("delete", "ops-editor", True), ("update", "ops-editor", True),
        ("create", "ops-editor", True)]
    assert (await ok(await call(gw, ADMIN, "GET", "/audit")))["data"] == [], "not acme's"


@pytest.mark.parametrize(("body", "query", "param", "words"), [
    ({"tenant": 5}, None, "tenant", "the name of a tenant"),
    ({"tenant": "acme"}, "globex", "tenant", "name different tenants"),
    ({"tenant": "all"}, None, "tenant", "is for reading"),
    ({}, None, "tenant", "names the tenant it asks about"),
])
async def test_a_new_budgets_tenant_is_named_once_and_plainly(
        gateway: MakeHarness, body: dict[str, Any], query: str | None, param: str,
        words: str) -> None:
    gw = await gateway(extra=OPERATORS)
    resp = await call(gw, Who("editor", query), "POST", "/budgets",
                      json={"max_cost_per_day": 1, **body})
    error = (await ok(resp, 400))["error"]
    assert error["param"] == param and words in error["message"]


async def test_a_tenant_key_naming_its_own_tenant_changes_nothing(gateway: MakeHarness) -> None:
    gw = await gateway(FILE_BUDGETS, extra=OPERATORS)
    made = await ok(await call(gw, OWN, "POST", "/budgets", json={"max_cost_per_day": 1}), 201)
    assert made["tenant"] == "acme"
    body = await ok(await call(gw, ADMIN, "POST", "/budgets", json={
        "max_cost_per_day": 1, "tenant": "acme"}), 400)
    assert body["error"]["param"] == "tenant", "a field a tenant key does not set, as ever"


async def test_me_says_what_an_operator_is(gateway: MakeHarness) -> None:
    gw = await gateway(extra=OPERATORS)
    assert await ok(await call(gw, Who("viewer"), "GET", "/me")) == {
        "operator": True, "name": "ops-viewer", "role": "viewer",
        "tenants": ["acme", "globex"], "may_change_budgets": False}
    assert (await ok(await call(gw, Who("editor"), "GET", "/me")))["may_change_budgets"]
    tenant = await ok(await call(gw, MEMBER, "GET", "/me"))
    assert tenant == {"tenant": "acme", "key_name": "acme-ci", "role": "member",
                      "may_change_budgets": False}


# -- every tenant at once ------------------------------------------------------------------

def nano(usd: float) -> int:
    return round(usd * NANO_PER_USD)


async def _spend_in_both_tenants(gw: Harness, clock: FakeClock) -> None:
    """Both tenants spend, on several models and end users, over three days' hours."""
    for step in range(9):
        for key, model, tokens in (("ci", "gpt-4o-mini", 7), ("other", "gpt-4o-mini", 13),
                                   ("ci", "gpt-4o", 5)):
            assert (await gw.chat(max_tokens=tokens + step, key=key, model=model,
                                  user=f"user-{step % 3}")).status in (200, 429)
        clock.advance(7 * 3_600 + 11 * 60)


@pytest.mark.parametrize("query", [
    {"group_by": "day"}, {"group_by": "hour"}, {"group_by": "month"},
    {"from": "2026-11-02T05:17:00Z", "to": "2026-11-03T21:40:00Z", "group_by": "hour"},
    {"model": "gpt-4o-mini"},
])
async def test_the_all_tenants_report_is_the_sum_of_theirs_to_the_nano_dollar(
        gateway: MakeHarness, query: dict[str, str]) -> None:
    clock = FakeClock(dt.datetime(2026, 11, 1, 20, 50, tzinfo=dt.UTC).timestamp())
    gw = await gateway(extra=OPERATORS, clock=clock)
    await _spend_in_both_tenants(gw, clock)
    every = await ok(await call(gw, Who("viewer", "all"), "GET", "/spend/report", query))
    each = {t: await ok(await call(gw, Who("viewer", t), "GET", "/spend/report", query))
            for t in ("acme", "globex")}
    assert every["requests"] > 0 and all(r["requests"] for r in each.values())
    assert nano(every["total_cost"]) == sum(nano(r["total_cost"]) for r in each.values())
    for field in ("total_input_tokens", "total_output_tokens", "requests"):
        assert every[field] == sum(r[field] for r in each.values())
    assert {t["tenant"]: t for t in every["by_tenant"]} == {
        tenant: {"tenant": tenant, "cost": r["total_cost"], "input_tokens": r[
            "total_input_tokens"], "output_tokens": r["total_output_tokens"],
                 "requests": r["requests"]} for tenant, r in each.items()}
    costs = [t["cost"] for t in every["by_tenant"]]
    assert costs == sorted(costs, reverse=True), "the tenant that spent most first"
    periods = {p["period"]: p for r in each.values() for p in r["timeseries"]}
    for item in every["timeseries"]:
        parts = [p for r in each.values() for p in r["timeseries"] if p["period"] == item[
            "period"]]
        assert nano(item["cost"]) == sum(nano(p["cost"]) for p in parts)
        assert item["requests"] == sum(p["requests"] for p in parts)
    assert {p["period"] for p in every["timeseries"]} == set(periods)
    for model in every["by_model"]:
        parts = [m for r in each.values() for m in r["by_model"]
                 if m["model_key"] == model["model_key"]]
        assert nano(model["cost"]) == sum(nano(m["cost"]) for m in parts)
    assert "by_tenant" not in each["acme"], "one tenant's report is as it was"


async def test_every_tenants_budgets_and_status_highest_ratio_first(gateway: MakeHarness
                                                                     ) -> None:
    gw = await gateway(FILE_BUDGETS, extra=OPERATORS)
    await _budget(gw)
    for key in ("ci", "other", "ci"):
        await gw.chat(key=key)
    listed = await ok(await call(gw, NAMES_ALL, "GET", "/budgets"))
    assert [(b["tenant"], b["name"], b["source"]) for b in listed["data"]] == [
        ("acme", "acme-daily", "file"), ("acme", listed["data"][1]["name"], "api"),
        ("globex", "globex-daily", "file")]
    status = await ok(await call(gw, NAMES_ALL, "GET", "/budgets/status"))
    ratios = [limit["ratio"] for limit in status["limits"]]
    assert ratios == sorted(ratios, reverse=True) and ratios[0] > 0
    assert status["limits"][0]["tenant"] == "globex" and status["limits"][0][
        "budget"] == "globex-daily", "the smallest budget is the closest to its limit"
    assert status["tenant"] == "all" and {b["tenant"] for b in status["budgets"]} == {
        "acme", "globex"}
    for tenant in ("acme", "globex"):  # the same limits as each tenant's own status
        own = await ok(await call(gw, Who("viewer", tenant), "GET", "/budgets/status"))
        mine = [{k: v for k, v in limit.items() if k not in ("tenant", "budget_id", "budget",
                                                             "action")}
                for limit in status["limits"] if limit["tenant"] == tenant]
        theirs = [limit for budget in own["budgets"] for limit in budget["limits"]]
        assert sorted(mine, key=str) == sorted(theirs, key=str)
    day = [await ok(await call(gw, Who("viewer", t), "GET", "/budgets/status"))
           for t in ("acme", "globex")]
    assert nano(status["per_day"]["used_usd"]) == sum(nano(s["per_day"]["used_usd"]) for s in day)
    assert set(status["per_day"]) == {"used_usd"}, "no limit binds every tenant"


async def test_every_tenants_end_users_with_their_tenant(gateway: MakeHarness) -> None:
    gw = await gateway(extra=OPERATORS)
    for key, user in (("ci", "alice"), ("other", "alice"), ("ci", "bob"), ("ci", "alice")):
        assert (await gw.chat(key=key, user=user)).status == 200
    ranked = await ok(await call(gw, NAMES_ALL, "GET", "/spend/end_users"))
    assert [(u["tenant"], u["end_user"], u["requests"]) for u in ranked["data"]] == [
        ("acme", "alice", 2), ("acme", "bob", 1), ("globex", "alice", 1)]
    assert ranked["end_users"] == 3 and ranked["requests"] == 4
    one = await ok(await call(gw, Who("viewer", "acme"), "GET", "/spend/end_users"))
    assert all("tenant" not in u for u in one["data"])
    for path in ("/spend/report", "/budgets/status"):
        resp = await call(gw, NAMES_ALL, "GET", path, {"end_user": "alice"})
        error = (await ok(resp, 400))["error"]
        assert error["param"] == "end_user" and "one tenant's" in error["message"]


async def test_the_access_line_names_the_caller_of_an_admin_route(
        gateway: MakeHarness, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    gw = await gateway(FILE_BUDGETS, extra=OPERATORS)
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        await ok(await call(gw, ADMIN, "GET", "/budgets"))
        await ok(await call(gw, Who("viewer", "all"), "GET", "/budgets"))
    lines = [r.fields for r in caplog.records if r.name == "gateway.access"]  # type: ignore[attr-defined]
    assert [(line["tenant"], line["key"]) for line in lines] == [
        ("acme", "acme-admin"), ("-", "operator:ops-viewer")]
