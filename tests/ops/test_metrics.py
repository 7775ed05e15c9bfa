"""/metrics after a scripted run: every figure moved as the run says it should; budgets are told
apart by tenant, and the budget series a tenant can make through the admin API are bounded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.appkeys import BUFFER
from gateway.store.base import StoreError
from tests import leaks
from tests.proxy.conftest import KEYS, Harness, MakeHarness, config_text

OPS_TOKEN = "ops-metrics-token-0123456789abcdef"
leaks.SECRETS.add(OPS_TOKEN)
OPS = f'ops: {{token: "{OPS_TOKEN}"}}'
SCRAPER = {"Authorization": f"Bearer {OPS_TOKEN}"}

BUDGETS = """
  - {name: daily, tenant: acme, max_tokens_per_day: 100000, alert_threshold: 0.0001}
  - {name: tiny, tenant: acme, model: "gpt-4o", max_tokens_per_hour: 5}
"""


async def scrape(gw: Harness) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await gw.client.get("/metrics", headers=SCRAPER)
    assert resp.status == 200 and resp.content_type == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_every_metric_moves_after_a_scripted_run(gateway: MakeHarness) -> None:
    gw = await gateway(BUDGETS, OPS, watch_interval_s=0.02)
    assert (await gw.chat(max_tokens=10)).status == 200
    stream = await gw.chat(max_tokens=6, stream=True)
    await stream.read()
    assert (await gw.chat(max_tokens=10, model="gpt-4o")).status == 429
    assert (await gw.client.post("/v1/chat/completions", json={})).status == 401
    embed = await gw.post("/embeddings", {"model": "text-embedding-3-small", "input": "hi"})
    assert embed.status == 200

    samples = await scrape(gw)
    chat = "/v1/chat/completions"
    assert value(samples, "gateway_requests_total", tenant="acme", model="gpt-4o-mini",
                 route=chat, status="200") == 2
    assert value(samples, "gateway_requests_total", tenant="acme", model="gpt-4o",
                 route=chat, status="429") == 1
    assert value(samples, "gateway_requests_total", tenant="-", model="other", route=chat,
                 status="401") == 1
    tokens_in = sum(v for (n, labels), v in samples.items()
                    if n == "gateway_tokens_total" and ("direction", "input") in labels)
    tokens_out = sum(v for (n, labels), v in samples.items()
                     if n == "gateway_tokens_total" and ("direction", "output") in labels)
    assert (tokens_in, tokens_out) == (gw.stats.input_tokens, gw.stats.output_tokens)
    assert value(samples, "gateway_cost_usd_total", tenant="acme", model="gpt-4o-mini") > 0
    assert value(samples, "gateway_budget_decisions_total", tenant="acme", budget="daily",
                 action="reject", outcome="alert") == 3
    assert value(samples, "gateway_budget_decisions_total", tenant="acme", budget="tiny",
                 action="reject", outcome="deny") == 1
    assert 0 < value(samples, "gateway_budget_usage_ratio", tenant="acme", budget="daily",
                     limit="max_tokens_per_day") < 1
    assert value(samples, "gateway_upstream_latency_seconds_count", route=chat) == 2
    assert value(samples, "gateway_overhead_seconds_count", route=chat) == 2
    assert value(samples, "gateway_overhead_seconds_sum", route=chat) > 0
    assert value(samples, "gateway_reservations_in_flight") == 0
    assert value(samples, "gateway_buffered_settlements") == 0

    # a reload, a refused reload, a store that fails and a buffered settlement
    mock_url = gw.config.current.settings.upstreams[0].base_url.removesuffix("/v1")
    gw.path.write_text(config_text(mock_url, BUDGETS + "  - {name: x, tenant: acme}\n", OPS))
    for _ in range(200):
        if gw.config.reload_failures:
            break
        await asyncio.sleep(0.02)
    real_settle = gw.store.settle

    async def failing_settle(*args: Any, **kwargs: Any) -> Any:
        gw.store.failures["settle", "ConnectionError"] += 1
        raise StoreError("connection refused")

    gw.store.settle = failing_settle  # type: ignore[method-assign]
    assert (await gw.chat(max_tokens=3)).status == 200
    samples = await scrape(gw)
    assert value(samples, "gateway_config_reload_failures_total") == 1
    assert value(samples, "gateway_store_errors_total", operation="settle",
                 kind="ConnectionError") == 1
    assert value(samples, "gateway_buffered_settlements") == 1
    gw.store.settle = real_settle  # type: ignore[method-assign]
    assert await gw.app[BUFFER].flush() == 1
    samples = await scrape(gw)
    assert value(samples, "gateway_buffered_settlements") == 0
    assert value(samples, "gateway_buffer_written_back_total") == 1


async def test_metrics_say_nothing_secret(gateway: MakeHarness) -> None:
    gw = await gateway(extra=OPS)
    await gw.chat(max_tokens=3)
    text = await (await gw.client.get("/metrics", headers=SCRAPER)).text()
    assert all(secret not in text for secret in [*KEYS.values(), OPS_TOKEN])


async def test_two_tenants_budgets_of_one_name_keep_their_own_series(
    gateway: MakeHarness
) -> None:
    """Names are unique in the file, but each tenant names its API budgets as it likes."""
    gw = await gateway(extra=OPS)
    for key, limit in (("admin", 100000), ("other_admin", 1000)):
        created = await gw.client.post(
            "/api/client/v1/budgets", json={"name": "daily", "max_tokens_per_day": limit},
            headers={"Authorization": f"Bearer {KEYS[key]}"})
        assert created.status == 201, await created.text()
    assert (await gw.chat(max_tokens=10)).status == 200
    assert (await gw.chat(max_tokens=10, key="other")).status == 200
    samples = await scrape(gw)
    ratio = "gateway_budget_usage_ratio"
    acme = value(samples, ratio, tenant="acme", budget="daily", limit="max_tokens_per_day")
    globex = value(samples, ratio, tenant="globex", budget="daily", limit="max_tokens_per_day")
    assert 0 < acme < globex < 1  # one request each, on limits 100 times apart
    assert acme * 100 == pytest.approx(globex)
    for tenant in ("acme", "globex"):
        assert value(samples, "gateway_budget_decisions_total", tenant=tenant, budget="daily",
                     action="reject", outcome="allow") == 1


async def test_budgets_created_and_deleted_through_the_api_keep_metrics_bounded(
    gateway: MakeHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tenant admin creating, using and deleting budgets of new names, over and over: the
    tenant keeps at most its possible budgets' series (file budgets + ``api_budgets_per_tenant``),
    the live ones among them."""
    gw = await gateway("  - {name: daily, tenant: acme, max_tokens_per_day: 100000}\n",
                       f"{OPS}\nlimits: {{api_budgets_per_tenant: 3}}")
    admin = {"Authorization": f"Bearer {KEYS['admin']}"}
    for i in range(40):
        created = await gw.client.post("/api/client/v1/budgets", headers=admin, json={
            "name": f"churn-{i}", "max_tokens_per_day": 100000})
        assert created.status == 201, await created.text()
        assert (await gw.chat(max_tokens=3)).status == 200
        deleted = await gw.client.delete(f"/api/client/v1/budgets/{(await created.json())['id']}",
                                         headers=admin)
        assert deleted.status == 204
    assert (await gw.chat(max_tokens=3)).status == 200  # the file's budget, seen last
    samples = await scrape(gw)
    named = {dict(labels)["budget"] for (name, labels) in samples
             if name.startswith("gateway_budget_") and ("tenant", "acme") in labels}
    assert len(named) <= 1 + 3 and "daily" in named
    with capsys.disabled():
        print(f"\nAPI budget churn: 40 budgets created, used and deleted; acme's budget label "
              f"values in /metrics: {len(named)} (bound 1 file + 3 API)")


async def test_no_metric_carries_the_end_user(gateway: MakeHarness) -> None:
    """Issue 19: hundreds of end users (by body field and by header; admitted, denied by their
    own budget past its alert threshold, refused for a malformed id; their status and reports
    read) add not one series: no label value is an end user's id."""
    each = "  - {name: each, tenant: acme, per: end_user, max_tokens_per_hour: 300, " \
           "alert_threshold: 0.5}\n"
    gw = await gateway(each, OPS)
    admin = {"Authorization": f"Bearer {KEYS['admin']}"}

    async def end_user(i: int) -> set[int]:
        name = f"end-user-{i:04d}"
        fields: dict[str, Any] = {"user": name} if i % 2 else {"headers": {"x-end-user": name}}
        statuses = {(await gw.chat(max_tokens=100, **fields)).status for _ in range(3)}
        statuses.add((await gw.chat(user=name + "\n")).status)
        for path in (f"/budgets/status?end_user={name}", f"/spend/report?end_user={name}",
                     "/spend/end_users"):
            assert (await gw.client.get(f"/api/client/v1{path}", headers=admin)).status == 200
        return statuses

    for i in range(5):  # every kind of answer once
        assert await end_user(i) == {200, 400, 429}
    await scrape(gw)  # the scrape itself is a request: counted from now on
    before = set(await scrape(gw))
    for i in range(5, 305):
        assert await end_user(i) == {200, 400, 429}
    after = set(await scrape(gw))
    assert after == before, sorted(after - before)[:5]
    values = {value for _, labels in after for _, value in labels}
    assert not [v for v in values if "end-user" in v], "an end user in a label"
