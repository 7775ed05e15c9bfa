"""Budgets per end user (issue 19): the end user from the request, each with their own
counters under a ``per: end_user`` budget, the tenant-wide budgets still on top."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.clock import FakeClock
from gateway.cost.model import Budget, Per, usd_to_nano
from gateway.cost.rollup import OTHER, day_of
from gateway.errors import ConfigErrors, InvalidRequest
from gateway.proxy.end_user import UNNAMED, end_user_of
from gateway.settings.load import parse_settings
from gateway.settings.schema import LimitSettings, Settings
from tests.proxy.conftest import KEYS, Harness, MakeHarness

SETTINGS = Settings()


def test_safety_identifier_then_user_then_the_header() -> None:
    both = end_user_of({"safety_identifier": "a", "user": "b"}, {"x-end-user": "c"}, SETTINGS)
    assert both.id == "a" and both.param == "safety_identifier"
    assert end_user_of({"user": "b"}, {"x-end-user": "c"}, SETTINGS).id == "b"
    assert end_user_of({"user": ""}, {"x-end-user": "c"}, SETTINGS).id == "c"
    assert end_user_of({}, {}, SETTINGS) == UNNAMED
    assert not UNNAMED.named()


def test_the_digest_is_fixed_size_and_per_id() -> None:
    long_id = end_user_of({"user": "u" * 256}, {}, SETTINGS)
    short = end_user_of({"user": "u"}, {}, SETTINGS)
    assert len(long_id.digest) == len(short.digest) == 24
    assert long_id.digest != short.digest


@pytest.mark.parametrize(("body", "headers", "message"), [
    ({"user": 7}, {}, "Invalid end user in the 'user' field: expected a string."),
    ({"safety_identifier": "x" * 257}, {},
     "Invalid end user in the 'safety_identifier' field: at most 256 characters "
     "(limits.end_user_max), got 257."),
    ({"user": "bob\n"}, {}, "Invalid end user in the 'user' field: must be printable: U+000A"),
    ({}, {"x-end-user": "bob\u202e"}, "Invalid end user in the 'x-end-user' header: must be "
                                      "printable: U+202E"),
])
def test_a_malformed_end_user_is_refused_where_it_is_used(
    body: dict[str, Any], headers: dict[str, str], message: str
) -> None:
    end_user = end_user_of(body, headers, SETTINGS)
    with pytest.raises(InvalidRequest) as refused:
        end_user.named()
    assert refused.value.message.startswith(message)
    assert refused.value.code == "invalid_end_user"


def test_the_settings_read_per_end_user_required_and_the_header() -> None:
    text = """
upstreams: {mock: {base_url: "http://127.0.0.1:9/v1", api_key: k}}
tenants: {saas: {keys: []}}
end_user_header: X-Customer
limits: {end_user_max: 64, budget_counters_max: 1000, end_users_reported_max: 50}
budgets:
  - {name: each, tenant: saas, per: end_user, end_user_required: true, max_cost_per_day: 2}
"""
    settings = parse_settings(text, "gateway.yaml")
    assert settings.end_user_header == "x-customer"
    assert settings.limits == LimitSettings(end_user_max=64, budget_counters_max=1000,
                                            end_users_reported_max=50)
    budget = settings.budgets[0]
    assert (budget.per, budget.end_user_required) == (Per.END_USER, True)
    assert Budget.from_dict(budget.to_dict()) == budget
    bad = text.replace("per: end_user", "per: user").replace("X-Customer", "x customer")
    with pytest.raises(ConfigErrors) as errors:
        parse_settings(bad, "gateway.yaml")
    found = {(e.field, e.message.split(";")[0].split(",")[0]) for e in errors.value.errors}
    assert ("end_user_header", "expected an HTTP header name (letters") in found
    assert any(field == "budgets[0].per" for field, _ in found), found


EACH = 3  # requests each end user may make
TENANT = 5  # requests the whole tenant may make


async def per_request(gateway: MakeHarness) -> int:
    """One request's exact size: the mock answers max_tokens and the gateway's input count."""
    gw = await gateway()
    resp = await gw.chat()
    assert resp.status == 200
    tokens: int = (await resp.json())["usage"]["total_tokens"]
    return tokens


def budgets(size: int, each: str = "", tenant: bool = False) -> str:
    text = f"  - {{name: each, tenant: acme, per: end_user, max_tokens_per_hour: {EACH * size}"
    text += f"{', ' + each if each else ''}}}\n"
    if tenant:
        text += f"  - {{name: whole, tenant: acme, max_tokens_per_hour: {TENANT * size}}}\n"
    return text


async def statuses(gw: Harness, count: int, **fields: Any) -> list[int]:
    return [(await gw.chat(**fields)).status for _ in range(count)]


async def test_each_end_user_has_their_own_limit(gateway: MakeHarness) -> None:
    size = await per_request(gateway)
    gw = await gateway(budgets(size))
    assert await statuses(gw, EACH + 1, user="alice") == [200] * EACH + [429]
    assert await statuses(gw, EACH + 1, safety_identifier="bob") == [200] * EACH + [429]
    refused = await gw.chat(user="alice")
    error = (await refused.json())["error"]
    assert error["code"] == "budget_exceeded" and "Budget 'each' exceeded" in error["message"]
    # the header names an end user too: carol is a third one
    header = {"x-end-user": "carol"}
    assert await statuses(gw, EACH + 1, headers=header) == [200] * EACH + [429]
    # no end user: only the tenant's budgets apply (none here), never another user's counters
    assert await statuses(gw, EACH + 1) == [200] * (EACH + 1)


async def test_the_tenant_wide_budget_still_binds_the_sum(gateway: MakeHarness) -> None:
    size = await per_request(gateway)
    gw = await gateway(budgets(size, tenant=True))
    assert await statuses(gw, EACH + 1, user="alice") == [200] * EACH + [429]
    assert await statuses(gw, EACH, user="bob") == [200] * (TENANT - EACH) + [429]
    error = (await (await gw.chat(user="dave")).json())["error"]
    assert "Budget 'whole' exceeded" in error["message"]


async def test_a_configured_header_names_the_end_user(gateway: MakeHarness) -> None:
    size = await per_request(gateway)
    gw = await gateway(budgets(size), extra="end_user_header: x-customer")
    assert await statuses(gw, EACH + 1, headers={"x-customer": "erin"}) == [200] * EACH + [429]
    assert (await gw.chat(headers={"x-customer": "frank"})).status == 200
    assert (await gw.chat(headers={"x-end-user": "erin"})).status == 200  # not the header now


async def test_end_user_required_refuses_a_request_naming_none(gateway: MakeHarness) -> None:
    size = await per_request(gateway)
    gw = await gateway(budgets(size, each="end_user_required: true"))
    refused = await gw.chat()
    assert refused.status == 400
    error = (await refused.json())["error"]
    assert error == {
        "message": "Budget 'each' requires an end user: set 'safety_identifier' (or 'user') in "
                   "the request body, or the 'x-end-user' header.",
        "type": "invalid_request_error", "param": "safety_identifier",
        "code": "end_user_required"}
    assert gw.stats.requests == {}  # never forwarded
    assert (await gw.chat(user="alice")).status == 200
    # a budget other than per end user may require one too
    tenant_wide = "  - {name: whole, tenant: acme, end_user_required: true, max_cost_per_day: 9}"
    gw = await gateway(tenant_wide)
    assert (await gw.chat()).status == 400
    assert (await gw.chat(headers={"x-end-user": "alice"})).status == 200


async def test_a_malformed_end_user_is_a_400_only_where_a_budget_uses_it(
    gateway: MakeHarness
) -> None:
    size = await per_request(gateway)
    plain = await gateway(f"  - {{name: whole, tenant: acme, max_tokens_per_hour: {size * 9}}}")
    assert (await plain.chat(user="x" * 300)).status == 200  # as before issue 19
    gw = await gateway(budgets(size))
    refused = await gw.chat(user="x" * 300)
    assert refused.status == 400
    error = (await refused.json())["error"]
    assert (error["code"], error["param"]) == ("invalid_end_user", "user")
    assert "x" * 20 not in error["message"]  # never echoed
    assert (await gw.chat(max_tokens=10, headers={"x-end-user": "caf\u00e9"})).status == 200


async def test_an_api_budget_per_end_user(gateway: MakeHarness) -> None:
    size = await per_request(gateway)
    gw = await gateway()
    headers = {"Authorization": f"Bearer {KEYS['admin']}"}
    made = await gw.client.post("/api/client/v1/budgets", headers=headers, json={
        "name": "each", "per": "end_user", "max_tokens_per_hour": EACH * size})
    assert made.status == 201, await made.text()
    body = await made.json()
    assert (body["per"], body["end_user_required"]) == ("end_user", False)
    assert await statuses(gw, EACH + 1, user="alice") == [200] * EACH + [429]
    assert (await gw.chat(user="bob")).status == 200
    wrong = await gw.client.post("/api/client/v1/budgets", headers=headers, json={
        "name": "bad", "per": "tenant", "max_tokens_per_hour": 5})
    assert wrong.status == 400
    assert (await wrong.json())["error"]["param"] == "per"


async def test_past_the_counters_bound_a_new_end_user_is_a_503(gateway: MakeHarness) -> None:
    size = await per_request(gateway)
    clock = FakeClock()
    gw = await gateway(budgets(size), extra="limits: {budget_counters_max: 2}", clock=clock)
    assert (await gw.chat(user="alice")).status == 200
    assert (await gw.chat(user="bob")).status == 200
    full = await gw.chat(user="carol")
    assert full.status == 503
    error = (await full.json())["error"]
    assert error["code"] == "budget_counters_full"
    assert 0 < int(full.headers["Retry-After"]) <= 3600 + 120
    assert (await gw.chat(user="alice")).status == 200  # known end users go on
    clock.advance(2 * 3600)  # alice's and bob's hours are over: their counters are dropped
    assert (await gw.chat(user="carol")).status == 200


async def test_the_end_user_is_recorded_with_the_usage(gateway: MakeHarness) -> None:
    """Whatever the budgets (none here): the settled usage names its end user, and adds to
    their day's row; past limits.end_users_reported_max a day's end users share one row."""
    gw = await gateway(extra="limits: {end_users_reported_max: 1}")
    assert (await gw.chat(user="alice")).status == 200
    assert (await gw.chat(headers={"x-end-user": "bob"})).status == 200
    assert (await gw.chat(user="x" * 300)).status == 200  # malformed: used by no budget here
    assert (await gw.chat()).status == 200
    entries = await gw.store.entries("acme")
    assert [u.end_user for u in entries] == ["alice", "bob", None, None]
    day = day_of(entries[0].timestamp)
    rows = {r.end_user: r for r in await gw.store.end_user_days("acme", day, day)}
    assert set(rows) == {"alice", OTHER}
    assert rows["alice"].cost_nano == usd_to_nano(entries[0].cost)
    assert rows[OTHER].requests == 1
