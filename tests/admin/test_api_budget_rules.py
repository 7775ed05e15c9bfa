"""The admin API's side of the budget rules: at most ``limits.api_budgets_per_tenant`` API
budgets per tenant, and the YAML's own rules on names, globs and ``max_wait_s`` (one
implementation, ``gateway/settings/checks.py``), on create and on update alike."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.proxy.conftest import KEYS, Harness, MakeHarness

API = "/api/client/v1/budgets"
CAP_3 = "limits: {api_budgets_per_tenant: 3}"


async def call(gw: Harness, method: str, path: str = "", key: str = "admin", **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {KEYS[key]}"}
    return await gw.client.request(method, API + path, headers=headers, **kw)


async def create(gw: Harness, key: str = "admin", **fields: Any) -> Any:
    return await call(gw, "POST", key=key, json={"max_tokens_per_day": 1000, **fields})


async def error_of(resp: Any) -> dict[str, Any]:
    error: dict[str, Any] = (await resp.json())["error"]
    return error


async def test_a_tenant_has_at_most_api_budgets_per_tenant(gateway: MakeHarness) -> None:
    gw = await gateway(extra=CAP_3)
    made = [await (await create(gw)).json() for _ in range(3)]
    refused = await create(gw)
    assert refused.status == 409
    error = await error_of(refused)
    assert error["code"] == "too_many_budgets"
    assert "limits.api_budgets_per_tenant: 3" in error["message"]
    # changing one is still fine; another tenant has its own count; deleting one makes room
    changed = await call(gw, "PATCH", f"/{made[0]['id']}", json={"max_tokens_per_day": 5})
    assert changed.status == 200
    assert (await create(gw, key="other_admin")).status == 201
    assert (await call(gw, "DELETE", f"/{made[1]['id']}")).status == 204
    assert (await create(gw)).status == 201
    assert (await create(gw)).status == 409


async def test_the_cap_holds_for_creates_at_once(
    gateway: MakeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a store that answers later (as Redis does), creates at once still stop at the cap
    (in one process: instances sharing a store may each add one past it)."""
    gw = await gateway(extra=CAP_3)
    definitions = gw.store.definitions
    listed_now = definitions.list

    async def listed_later(tenant: str) -> Any:
        listed = await listed_now(tenant)
        await asyncio.sleep(0.01)  # the answer on its way back, while others create
        return listed

    monkeypatch.setattr(definitions, "list", listed_later)
    answers = await asyncio.gather(*(create(gw, name=f"b{i}") for i in range(12)))
    statuses = sorted(r.status for r in answers)
    assert statuses == [201] * 3 + [409] * 9
    listed = await (await call(gw, "GET")).json()
    assert len(listed["data"]) == 3


async def test_the_default_cap_is_100(gateway: MakeHarness) -> None:
    gw = await gateway()
    assert gw.config.current.settings.limits.api_budgets_per_tenant == 100
    for i in range(100):
        assert (await create(gw, name=f"b{i}")).status == 201
    assert (await create(gw, name="one-more")).status == 409


NAMES = {
    "too long": ("n" * 129, "at most 128 characters"),
    "NUL": ("a\x00b", "U+0000"),
    "newline": ("daily\nX-Evil: 1", "U+000A"),
    "CR": ("daily\r", "U+000D"),
    "bidi override": ("abc\u202egpj.exe", "U+202E"),
    "C1 control": ("c1\x9b", "U+009B"),
}


@pytest.mark.parametrize(("name", "words"), NAMES.values(), ids=NAMES.keys())
async def test_budget_names_are_short_and_printable(
    gateway: MakeHarness, name: str, words: str
) -> None:
    gw = await gateway()
    refused = await create(gw, name=name)
    assert refused.status == 400
    error = await error_of(refused)
    assert error["param"] == "name" and words in error["message"]
    assert name not in error["message"]
    made = await (await create(gw, name="fine")).json()
    renamed = await call(gw, "PATCH", f"/{made['id']}", json={"name": name})
    assert renamed.status == 400 and (await error_of(renamed))["param"] == "name"


async def test_the_name_cap_comes_from_limits(gateway: MakeHarness) -> None:
    gw = await gateway(extra="limits: {budget_name_max: 5}")
    assert (await create(gw, name="fives")).status == 201
    refused = await create(gw, name="sixsix")
    assert "at most 5 characters (limits.budget_name_max)" in (await error_of(refused))["message"]


@pytest.mark.parametrize("glob", ["[[[[", "gpt-4o-[mini", "gpt-4o-\n*"])
async def test_budget_globs_are_well_formed(gateway: MakeHarness, glob: str) -> None:
    gw = await gateway()
    refused = await create(gw, model=glob)
    assert refused.status == 400
    assert (await error_of(refused))["param"] == "model"
    assert (await create(gw, model="gpt-4o-[0-9]*")).status == 201


@pytest.mark.parametrize("wait", [1e300, 600.5, 10**6])
async def test_max_wait_s_is_at_most_limits_max_wait_s(gateway: MakeHarness, wait: float) -> None:
    gw = await gateway()
    refused = await create(gw, action="throttle", max_wait_s=wait)
    assert refused.status == 400
    error = await error_of(refused)
    assert error["param"] == "max_wait_s" and "limits.max_wait_s" in error["message"]
    made = await (await create(gw, action="throttle", max_wait_s=600)).json()
    patched = await call(gw, "PATCH", f"/{made['id']}", json={"max_wait_s": wait})
    assert patched.status == 400 and (await error_of(patched))["param"] == "max_wait_s"


async def test_a_raised_wait_cap_allows_longer_waits(gateway: MakeHarness) -> None:
    gw = await gateway(extra="limits: {max_wait_s: 3600}")
    assert (await create(gw, action="throttle", max_wait_s=3600)).status == 201
    assert (await create(gw, action="throttle", max_wait_s=3601)).status == 400


async def test_a_limit_too_large_to_count_is_a_400_not_a_crash(gateway: MakeHarness) -> None:
    """A cost past MAX_COST_USD whose nano-dollars overflow a float (found by the OpenAPI
    fuzz): refused naming it, not converted."""
    gw = await gateway()
    refused = await call(gw, "POST", "", json={"max_cost_per_hour": 6.1e307,
                                               "max_tokens_per_hour": "ten"})
    assert refused.status == 400
    assert [e["param"] for e in (await error_of(refused))["errors"]] == [
        "max_tokens_per_hour", "max_cost_per_hour"]
