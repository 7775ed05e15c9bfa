"""Every budget change leaves one audit entry, logged and kept in the store: through the API
(who: the key), through a YAML reload (who: "yaml"), once across instances, per tenant."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.appkeys import CONFIG
from gateway.clock import FakeClock
from gateway.log import JsonFormatter
from gateway.runtime import Runtime
from gateway.settings.watch import load_live
from gateway.store.base import StoreError
from gateway.store.memory import MemoryStore
from tests.proxy.conftest import KEYS, Harness, MakeHarness

API = "/api/client/v1"
FILE_BUDGETS = """
  - {name: acme-daily, tenant: acme, max_cost_per_day: 1.0}
  - {name: acme-old, tenant: acme, max_tokens_per_hour: 1000}
  - {name: globex-daily, tenant: globex, max_cost_per_day: 1.0}
"""
EDITED = """
  - {name: acme-daily, tenant: acme, max_cost_per_day: 2.5, alert_threshold: 0.5}
  - {name: acme-new, tenant: acme, max_cost_per_month: 30}
  - {name: globex-daily, tenant: globex, max_cost_per_day: 1.0}
"""
T0 = 1_700_000_000.0


async def call(client: TestClient[Any, Any], method: str, path: str, key: str = "admin",
               **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {KEYS[key]}"}
    return await client.request(method, API + path, headers=headers, **kw)


async def audit(client: TestClient[Any, Any], key: str = "ci", query: str = "") -> Any:
    resp = await call(client, "GET", f"/audit{query}", key)
    assert resp.status == 200, await resp.text()
    return (await resp.json())["data"]


def edit_budgets(gw: Harness, budgets: str) -> None:
    text = gw.path.read_text()
    gw.path.write_text(text[:text.index("budgets:\n")] + "budgets:\n" + budgets)


async def test_create_update_and_delete_through_the_api_each_leave_an_entry(
    gateway: MakeHarness,
) -> None:
    clock = FakeClock(T0)
    gw = await gateway(FILE_BUDGETS, clock=clock)
    created = await (await call(gw.client, "POST", "/budgets",
                                json={"name": "cap", "monthly_limit_usd": 250})).json()
    clock.advance(1)
    updated = await (await call(gw.client, "PATCH", f"/budgets/{created['id']}",
                                json={"monthly_limit_usd": 500})).json()
    clock.advance(1)
    same = await call(gw.client, "PATCH", f"/budgets/{created['id']}",
                      json={"monthly_limit_usd": 500})
    assert same.status == 200, "a change to nothing is no change: no entry"
    clock.advance(1)
    assert (await call(gw.client, "DELETE", f"/budgets/{created['id']}")).status == 204

    entries = await audit(gw.client)  # a member key reads its tenant's changes
    assert [(e["action"], e["at"]) for e in entries] == [
        ("delete", "2023-11-14T22:13:23.000Z"), ("update", "2023-11-14T22:13:21.000Z"),
        ("create", "2023-11-14T22:13:20.000Z")]
    deleted, changed, made = entries
    assert made == {"at": "2023-11-14T22:13:20.000Z", "tenant": "acme",
                    "budget_id": created["id"], "budget_name": "cap", "action": "create",
                    "who": "acme-admin", "operator": False, "source": "api", "before": None,
                    "after": created}
    assert (changed["before"], changed["after"]) == (created, updated)
    assert changed["before"]["monthly_limit_usd"] == 250
    assert changed["after"]["monthly_limit_usd"] == 500
    assert (deleted["before"], deleted["after"]) == (updated, None)
    assert await audit(gw.client, query="?limit=1") == [deleted]
    assert await audit(gw.client, query=f"?budget={created['id']}") == entries
    assert await audit(gw.client, query="?budget=acme-daily") == []


async def test_a_refused_change_leaves_no_entry(gateway: MakeHarness) -> None:
    gw = await gateway(FILE_BUDGETS)
    assert (await call(gw.client, "POST", "/budgets", "ci", json={"daily_limit_usd": 1})
            ).status == 403
    assert (await call(gw.client, "POST", "/budgets", json={"daily_limit_usd": -1})
            ).status == 400
    assert (await call(gw.client, "PATCH", "/budgets/acme-daily", json={"daily_limit_usd": 2})
            ).status == 409
    assert await audit(gw.client) == []


async def test_a_yaml_reload_leaves_an_entry_per_budget_it_created_changed_or_removed(
    gateway: MakeHarness, caplog: pytest.LogCaptureFixture,
) -> None:
    gw = await gateway(FILE_BUDGETS, clock=FakeClock(T0))
    listed = await (await call(gw.client, "GET", "/budgets")).json()
    before = {b["name"]: b for b in listed["data"]}
    edit_budgets(gw, EDITED)
    with caplog.at_level(logging.INFO, logger="gateway.audit"):
        assert await gw.config.reload_checked()
    listed = await (await call(gw.client, "GET", "/budgets")).json()
    after = {b["name"]: b for b in listed["data"]}

    entries = await audit(gw.client)
    assert {(e["action"], e["budget_id"]) for e in entries} == {
        ("update", "acme-daily"), ("create", "acme-new"), ("delete", "acme-old")}
    assert all((e["who"], e["source"], e["operator"]) == ("yaml", "yaml", False)
               for e in entries)
    changed = next(e for e in entries if e["action"] == "update")
    assert changed["before"] == before["acme-daily"]
    assert changed["after"] == after["acme-daily"]
    assert (changed["before"]["max_cost_per_day"], changed["after"]["max_cost_per_day"]) == (
        1.0, 2.5)
    assert next(e for e in entries if e["action"] == "delete")["before"] == before["acme-old"]
    assert await audit(gw.client, "other") == [], "globex's budget did not change"
    assert len([r for r in caplog.records if r.name == "gateway.audit"]) == 3

    assert await gw.config.reload_checked()  # the same file again: nothing changed
    assert len(await audit(gw.client)) == 3


async def test_each_change_is_one_json_log_line_with_who_what_and_when(
    gateway: MakeHarness, caplog: pytest.LogCaptureFixture,
) -> None:
    gw = await gateway(FILE_BUDGETS, clock=FakeClock(T0))
    with caplog.at_level(logging.INFO, logger="gateway.audit"):
        created = await (await call(gw.client, "POST", "/budgets",
                                    json={"name": "cap", "daily_limit_usd": 3})).json()
    [record] = [r for r in caplog.records if r.name == "gateway.audit"]
    line = orjson.loads(JsonFormatter().format(record))
    assert line["level"] == "info" and line["logger"] == "gateway.audit"
    assert line["msg"] == (f"budget 'cap' ({created['id']}) of tenant 'acme': create by "
                           "acme-admin (api)")
    assert {k: line[k] for k in ("at", "tenant", "budget_id", "budget_name", "action", "who",
                                 "operator", "source", "before", "after", "stored")} == {
        "at": "2023-11-14T22:13:20.000Z", "tenant": "acme", "budget_id": created["id"],
        "budget_name": "cap", "action": "create", "who": "acme-admin", "operator": False,
        "source": "api", "before": None, "after": created, "stored": "yes"}


async def test_a_store_failing_to_keep_the_entry_leaves_the_change_and_its_line(
    gateway: MakeHarness, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    gw = await gateway(FILE_BUDGETS)

    async def down(*args: Any, **kwargs: Any) -> bool:
        raise StoreError("redis ConnectionError")

    monkeypatch.setattr(gw.store.audit, "append", down)
    with caplog.at_level(logging.INFO, logger="gateway.audit"):
        resp = await call(gw.client, "POST", "/budgets", json={"daily_limit_usd": 3})
    assert resp.status == 201, "the budget is made: failing now would invite a duplicate"
    error, line = [r for r in caplog.records if r.name == "gateway.audit"]
    assert error.levelno == logging.ERROR and "ConnectionError" in error.getMessage()
    assert line.fields["stored"] == "no"  # type: ignore[attr-defined]


async def test_tenants_see_only_their_own_changes(gateway: MakeHarness) -> None:
    gw = await gateway(FILE_BUDGETS)
    mine = await (await call(gw.client, "POST", "/budgets", json={"daily_limit_usd": 3})).json()
    theirs = await (await call(gw.client, "POST", "/budgets", "other_admin",
                               json={"daily_limit_usd": 4})).json()
    assert [e["after"] for e in await audit(gw.client)] == [mine]
    assert [e["after"] for e in await audit(gw.client, "other")] == [theirs]
    assert await audit(gw.client, "other", f"?budget={mine['id']}") == []


@pytest.mark.parametrize("query", ["?limit=0", "?limit=1001", "?limit=ten", "?tenants=all",
                                   "?budget_id=x"])
async def test_bad_parameters_are_400s_naming_them(gateway: MakeHarness, query: str) -> None:
    gw = await gateway(FILE_BUDGETS)
    resp = await call(gw.client, "GET", f"/audit{query}")
    assert resp.status == 400
    assert (await resp.json())["error"]["param"] == query[1:].partition("=")[0]


async def test_each_tenant_keeps_its_newest_entries_as_the_configuration_bounds(
    gateway: MakeHarness,
) -> None:
    clock = FakeClock(T0)
    gw = await gateway(FILE_BUDGETS, extra="limits: {audit_entries_per_tenant: 3}", clock=clock)
    budget = await (await call(gw.client, "POST", "/budgets", json={"daily_limit_usd": 1})).json()
    for limit in range(2, 7):
        clock.advance(1)
        assert (await call(gw.client, "PATCH", f"/budgets/{budget['id']}",
                           json={"daily_limit_usd": limit})).status == 200
    theirs = await call(gw.client, "POST", "/budgets", "other_admin", json={"daily_limit_usd": 1})
    assert theirs.status == 201
    entries = await audit(gw.client, query="?limit=1000")
    assert [e["after"]["daily_limit_usd"] for e in entries] == [6, 5, 4]
    assert len(await audit(gw.client, "other")) == 1, "another tenant's entries are its own"


async def test_instances_sharing_a_store_keep_a_reloads_change_once_and_each_log_it(
    gateway: MakeHarness, aiohttp_client: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    """Every instance reloads the same file and logs what it changed; the store keeps one
    entry per change, which every instance's API answers."""
    shared = MemoryStore()
    first = await gateway(FILE_BUDGETS)  # its mock upstream and file (its own store unused)
    clock = FakeClock(T0)
    instances = [await aiohttp_client(create_app(load_live(str(first.path), Runtime.build),
                                                 clock=clock, store=shared,
                                                 watch_interval_s=None))
                 for _ in range(2)]
    edit_budgets(first, EDITED)
    with caplog.at_level(logging.INFO, logger="gateway.audit"):
        for client in instances:
            clock.advance(2)  # the second sees the file a little later
            assert await client.app[CONFIG].reload_checked()
    lines = [r.fields for r in caplog.records if r.name == "gateway.audit"]  # type: ignore[attr-defined]
    assert len(lines) == 6, "each instance logs each of the 3 changes"
    assert sorted(line["stored"] for line in lines) == ["already"] * 3 + ["yes"] * 3
    for client in instances:
        entries = await audit(client)
        assert sorted(e["budget_id"] for e in entries) == ["acme-daily", "acme-new", "acme-old"]
        assert {e["at"] for e in entries} == {"2023-11-14T22:13:22.000Z"}, "the first's"

    edit_budgets(first, FILE_BUDGETS)  # and back: new changes, kept again
    for client in instances:
        clock.advance(2)
        assert await client.app[CONFIG].reload_checked()
    assert len(await audit(instances[1])) == 6


def test_a_yaml_budget_is_known_by_its_tenant_and_id_else_its_name() -> None:
    """As its counters are: a rename keeps an id's budget (an update) and replaces a budget
    known by its name (a removal and a creation); so does a move to another tenant."""
    from gateway.admin.audit import file_changes
    from gateway.cost.model import Budget

    old = [Budget(name="a", tenant="t", id="keep", max_cost_per_day=1),
           Budget(name="b", tenant="t", max_cost_per_day=1),
           Budget(name="c", tenant="t", max_cost_per_day=1),
           Budget(name="d", tenant="t", max_cost_per_day=1)]
    new = [Budget(name="a2", tenant="t", id="keep", max_cost_per_day=1),
           Budget(name="b2", tenant="t", max_cost_per_day=1),
           Budget(name="c", tenant="u", max_cost_per_day=1),
           Budget(name="d", tenant="t", max_cost_per_day=1)]
    changes = [(was and (was.tenant, was.name), now and (now.tenant, now.name))
               for was, now in file_changes(old, new)]
    assert changes == [(("t", "a"), ("t", "a2")), (None, ("t", "b2")), (None, ("u", "c")),
                       (("t", "b"), None), (("t", "c"), None)]


async def test_an_operator_reads_one_tenants_changes_or_every_tenants_newest_first(
    gateway: MakeHarness,
) -> None:
    from tests.proxy.conftest import OPERATOR_KEYS, OPERATORS

    clock = FakeClock(T0)
    gw = await gateway(FILE_BUDGETS, extra=OPERATORS, clock=clock)
    for key in ("admin", "other_admin", "admin"):  # acme, globex, acme: a second apart
        assert (await call(gw.client, "POST", "/budgets", key, json={"daily_limit_usd": 1})
                ).status == 201
        clock.advance(1)
    viewer = {"Authorization": f"Bearer {OPERATOR_KEYS['viewer']}"}

    async def read(tenant: str, **query: str) -> list[dict[str, Any]]:
        resp = await gw.client.get(f"{API}/audit", params={"tenant": tenant, **query},
                                   headers=viewer)
        assert resp.status == 200, await resp.text()
        return list((await resp.json())["data"])

    every = await read("all")
    assert [(e["tenant"], e["at"][-7:]) for e in every] == [
        ("acme", "22.000Z"), ("globex", "21.000Z"), ("acme", "20.000Z")]
    assert await read("acme") == [every[0], every[2]] == await audit(gw.client)
    assert await read("all", limit="1") == every[:1]
    assert await read("all", budget=every[1]["budget_id"]) == [every[1]]
    refused = await gw.client.get(f"{API}/audit", params={"tenant": "globex"},
                                  headers={"Authorization": f"Bearer {KEYS['admin']}"})
    assert refused.status == 403, "a tenant key reads its own tenant only"
