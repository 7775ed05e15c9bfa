"""What the admin API tells of a tenant's end users (issue 19): one end user's budget status,
the spend report of one end user, and the end users by spend; never another tenant's."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from gateway.clock import FakeClock
from tests.admin.test_admin_api import call
from tests.proxy.conftest import Harness, MakeHarness

BUDGETS = """
  - {name: each, tenant: acme, per: end_user, max_tokens_per_hour: 100000, max_cost_per_day: 5}
  - {name: whole, tenant: acme, max_tokens_per_hour: 1000000}
"""
START = dt.datetime(2026, 11, 10, 12, 0, 0, tzinfo=dt.UTC).timestamp()


async def get(gw: Harness, path: str, key: str = "ci") -> Any:
    resp = await call(gw, "GET", path, key=key)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def spend(gw: Harness, plan: list[tuple[str | None, int]]) -> dict[str | None, int]:
    """One request per (end user, max_tokens); the tokens each end user was charged."""
    tokens: dict[str | None, int] = {}
    for end_user, max_tokens in plan:
        fields = {} if end_user is None else {"safety_identifier": end_user}
        answer = await gw.chat(max_tokens=max_tokens, **fields)
        assert answer.status == 200
        tokens[end_user] = tokens.get(end_user, 0) + (await answer.json())["usage"][
            "total_tokens"]
    return tokens


async def test_status_of_one_end_user(gateway: MakeHarness) -> None:
    gw = await gateway(BUDGETS, clock=FakeClock(START))
    tokens = await spend(gw, [("alice", 10), ("alice", 20), ("bob", 5), (None, 7)])
    alice = await get(gw, "/budgets/status?end_user=alice")
    assert alice["end_user"] == "alice"
    limits = {(b["name"], lim["limit"]): lim for b in alice["budgets"] for lim in b["limits"]}
    assert limits["each", "max_tokens_per_hour"]["used"] == tokens["alice"]
    assert limits["whole", "max_tokens_per_hour"]["used"] == sum(tokens.values())
    assert [b["per"] for b in alice["budgets"]] == ["end_user", None]
    assert alice["per_hour"] == {"used_tokens": tokens["alice"], "limit_tokens": 100000,
                                 "counted_tokens": tokens["alice"]}
    alice_usd = alice["per_day"]["used_usd"]
    assert alice_usd == limits["each", "max_cost_per_day"]["used"] > 0
    assert alice["per_month"]["used_usd"] == alice_usd
    bob = await get(gw, "/budgets/status?end_user=bob")
    assert bob["per_hour"]["used_tokens"] == tokens["bob"]
    nobody = await get(gw, "/budgets/status?end_user=nobody")
    assert nobody["per_hour"]["used_tokens"] == 0 and nobody["per_month"]["used_usd"] == 0
    tenant = await get(gw, "/budgets/status")  # the tenant's, as before: no end user's
    assert "end_user" not in tenant
    assert tenant["per_hour"]["used_tokens"] == sum(tokens.values())


@pytest.mark.parametrize(("path", "param"), [
    ("/budgets/status?end_user=" + "x" * 257, "end_user"),
    ("/budgets/status?end_user=bob%0A", "end_user"),
    ("/spend/report?end_user=bob%E2%80%AE", "end_user"),
    ("/spend/report?end_user=bob&group_by=hour", "group_by"),
    ("/spend/report?end_user=bob&model=gpt-4o-mini", "model"),
    ("/spend/end_users?limit=0", "limit"),
    ("/spend/end_users?limit=1001", "limit"),
    ("/spend/end_users?limit=ten", "limit"),
    ("/spend/end_users?from=2026-11-05&to=2026-11-01", "from"),
    ("/spend/end_users?end_user=bob", "end_user"),
])
async def test_what_cannot_be_asked_is_a_400_naming_the_parameter(
    gateway: MakeHarness, path: str, param: str
) -> None:
    gw = await gateway()
    resp = await call(gw, "GET", path)
    assert resp.status == 400, path
    error = (await resp.json())["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert "x" * 20 not in error["message"]  # an id is never echoed


async def test_the_report_of_one_end_user_by_day_and_month(gateway: MakeHarness) -> None:
    clock = FakeClock(START)
    gw = await gateway(clock=clock)
    first = await spend(gw, [("alice", 10), ("bob", 5)])
    clock.advance(86400)
    second = await spend(gw, [("alice", 20), ("alice", 30)])
    days = await get(gw, "/spend/report?end_user=alice")
    assert days["end_user"] == "alice" and "by_model" not in days
    assert days["requests"] == 3
    assert days["total_input_tokens"] + days["total_output_tokens"] == (
        first["alice"] + second["alice"])
    assert [(p["period"], p["requests"]) for p in days["timeseries"]] == [
        ("2026-11-10", 1), ("2026-11-11", 2)]
    assert all("by_model" not in p for p in days["timeseries"])
    month = await get(gw, "/spend/report?end_user=alice&group_by=month&from=2026-11-11")
    assert [(p["period"], p["requests"]) for p in month["timeseries"]] == [("2026-11", 2)]
    # the tenant's own report is as before, end users and all
    whole = await get(gw, "/spend/report")
    assert whole["requests"] == 4 and "end_user" not in whole and whole["by_model"]


async def test_a_range_of_moments_reads_the_partial_days_from_the_log(
    gateway: MakeHarness
) -> None:
    clock = FakeClock(START)  # 12:00
    gw = await gateway(clock=clock)
    await spend(gw, [("alice", 10)])
    clock.advance(3 * 3600)  # 15:00
    later = await spend(gw, [("alice", 20)])
    afternoon = await get(gw, "/spend/report?end_user=alice&from=2026-11-10T14:00:00Z"
                              "&to=2026-11-10T16:00:00Z")
    assert afternoon["requests"] == 1
    assert afternoon["total_input_tokens"] + afternoon["total_output_tokens"] == later["alice"]
    ranked = await get(gw, "/spend/end_users?from=2026-11-10T14:00:00Z")
    assert [(u["end_user"], u["requests"]) for u in ranked["data"]] == [("alice", 1)]


async def test_end_users_by_spend_largest_first(gateway: MakeHarness) -> None:
    clock = FakeClock(START)
    gw = await gateway(clock=clock)
    await spend(gw, [("carol", 5), ("alice", 40), ("bob", 20), ("alice", 40), (None, 50),
                     ("dave", 5)])
    clock.advance(86400)
    await spend(gw, [("bob", 30)])
    ranked = await get(gw, "/spend/end_users")
    assert [u["end_user"] for u in ranked["data"]] == ["alice", "bob", "carol", "dave"]
    assert ranked["end_users"] == 4 and ranked["requests"] == 6  # none for nobody's request
    assert ranked["other"] == {"cost": 0.0, "input_tokens": 0, "output_tokens": 0,
                               "requests": 0}
    assert round(sum(u["cost"] for u in ranked["data"]), 9) == round(ranked["total_cost"], 9)
    assert ranked["data"][2]["cost"] == ranked["data"][3]["cost"]  # a tie: by id
    top = await get(gw, "/spend/end_users?limit=1&from=2026-11-11&to=2026-11-11")
    assert [(u["end_user"], u["requests"]) for u in top["data"]] == [("bob", 1)]
    assert top["end_users"] == 1
    first_day = await get(gw, "/spend/end_users?limit=2&to=2026-11-10")
    assert [u["end_user"] for u in first_day["data"]] == ["alice", "bob"]
    assert first_day["end_users"] == 4


async def test_past_the_days_cap_end_users_share_the_other_row(gateway: MakeHarness) -> None:
    gw = await gateway(extra="limits: {end_users_reported_max: 2}", clock=FakeClock(START))
    await spend(gw, [("alice", 10), ("bob", 10), ("carol", 30), ("dave", 10), ("alice", 10)])
    ranked = await get(gw, "/spend/end_users")
    assert [(u["end_user"], u["requests"]) for u in ranked["data"]] == [("alice", 2),
                                                                       ("bob", 1)]
    assert ranked["other"]["requests"] == 2 and ranked["requests"] == 5
    assert round(sum(u["cost"] for u in ranked["data"]) + ranked["other"]["cost"], 9) == round(
        ranked["total_cost"], 9)
    carol = await get(gw, "/spend/report?end_user=carol")
    assert carol["requests"] == 0  # counted in the other row only


async def test_another_tenant_sees_none_of_its_end_users(gateway: MakeHarness) -> None:
    gw = await gateway(BUDGETS, clock=FakeClock(START))
    await spend(gw, [("alice", 10)])
    theirs = await get(gw, "/spend/end_users", key="other_admin")
    assert theirs["data"] == [] and theirs["requests"] == 0
    report = await get(gw, "/spend/report?end_user=alice", key="other_admin")
    assert report["requests"] == 0
    status = await get(gw, "/budgets/status?end_user=alice", key="other_admin")
    assert status["per_hour"]["used_tokens"] == 0 and status["budgets"] == []
