"""Each instance remembers the requests a budget refused lately, per tenant (the newest
``limits.denials_per_tenant``): the budget and limit that refused, the model asked for and the
request id, never the end user; a downgrade served by a fallback is no denial."""

from __future__ import annotations

from gateway.appkeys import PIPELINE
from gateway.proxy.denials import Denial, Denials
from tests.proxy.conftest import Harness, MakeHarness
from tests.proxy.test_batches import create, jsonl, line, upload

BUDGETS = """
  - {name: acme-hour, tenant: acme, max_tokens_per_hour: 1}
  - {name: globex-hour, tenant: globex, max_tokens_per_hour: 1}
"""


def recent(gw: Harness, tenant: str | None, limit: int = 100) -> list[Denial]:
    denials: Denials = gw.app[PIPELINE].denials
    return denials.recent(tenant, limit)


async def test_a_refused_request_is_remembered_with_its_budget_limit_and_request_id(
        gateway: MakeHarness) -> None:
    gw = await gateway(BUDGETS)
    resp = await gw.chat(safety_identifier="alice@example.com")
    assert resp.status == 429
    (denial,) = recent(gw, "acme")
    assert denial.request_id == resp.headers["x-request-id"]
    assert (denial.tenant, denial.budget, denial.budget_id, denial.limit, denial.action,
            denial.model) == ("acme", "acme-hour", "acme-hour", "max_tokens_per_hour",
                              "reject", "gpt-4o-mini")
    assert denial.message == (await resp.json())["error"]["message"]
    assert "alice" not in repr(denial), "the end user is not kept"
    assert recent(gw, "globex") == []


async def test_each_tenant_keeps_its_newest_and_all_of_them_read_newest_first(
        gateway: MakeHarness) -> None:
    gw = await gateway(BUDGETS, extra="limits: {denials_per_tenant: 3}")
    ids = []
    for _ in range(5):
        resp = await gw.chat()
        assert resp.status == 429
        ids.append(resp.headers["x-request-id"])
    other = await gw.chat(key="other")
    assert other.status == 429
    assert [d.request_id for d in recent(gw, "acme")] == ids[:-4:-1]  # the newest 3
    assert [d.request_id for d in recent(gw, "acme", 2)] == ids[:-3:-1]
    everyone = recent(gw, None)
    assert [d.tenant for d in everyone] == ["globex", "acme", "acme", "acme"]
    assert [d.at for d in everyone] == sorted((d.at for d in everyone), reverse=True)


async def test_a_downgrade_served_by_its_fallback_is_no_denial(gateway: MakeHarness) -> None:
    gw = await gateway("""
  - {name: big, tenant: acme, model: gpt-4o, max_tokens_per_hour: 1, action: downgrade,
     fallback_model: gpt-4o-mini}
""")
    assert (await gw.chat(model="gpt-4o")).status == 200
    assert recent(gw, "acme") == []
    gw = await gateway("""
  - {name: big, tenant: acme, model: gpt-4o, max_tokens_per_hour: 1, action: downgrade,
     fallback_model: gpt-4o-mini}
  - {name: small, tenant: acme, model: gpt-4o-mini, max_tokens_per_hour: 1}
""")
    assert (await gw.chat(model="gpt-4o")).status == 429
    (denial,) = recent(gw, "acme")
    assert (denial.budget, denial.action, denial.model) == ("big", "downgrade", "gpt-4o")


async def test_a_refused_batch_is_remembered(gateway: MakeHarness) -> None:
    gw = await gateway(BUDGETS, max_body_bytes=1 << 20)
    file_id = (await (await upload(gw, jsonl([line(i) for i in range(2)]))).json())["id"]
    resp = await create(gw, file_id)
    assert resp.status == 429
    (denial,) = recent(gw, "acme")
    assert (denial.budget, denial.model) == ("acme-hour", "gpt-4o-mini")
    assert denial.request_id == resp.headers["x-request-id"]
