"""The Batch API through the gateway: a file is checked and bounded line by line, a batch
reserves its file's bound at batch prices, and is charged what its lines billed when it ends,
never more than was reserved; files and batches are their tenant's alone."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.appkeys import BATCH_SETTLER, CONFIG
from gateway.client import Client
from gateway.cost.model import Filter
from gateway.cost.pricing import Item
from gateway.proxy.batch_file import FileBound
from tests.proxy.conftest import KEYS, Harness, MakeHarness

OUTPUT = 50


def line(i: int, model: str = "gpt-4o-mini", **body: Any) -> dict[str, Any]:
    return {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": f"question {i}"}],
                     "max_tokens": OUTPUT, **body}}


def jsonl(lines: list[Any]) -> bytes:
    return b"".join(orjson.dumps(x) + b"\n" for x in lines)


async def upload(gw: Harness, content: bytes, key: str = "ci", purpose: str = "batch") -> Any:
    form = aiohttp.FormData()
    form.add_field("purpose", purpose)
    form.add_field("file", content, filename="in.jsonl", content_type="application/jsonl")
    return await gw.client.post("/v1/files", data=form,
                                headers={"Authorization": f"Bearer {KEYS[key]}"})


async def create(gw: Harness, file_id: str, key: str = "ci", **metadata: str) -> Any:
    return await gw.post("/batches", {"input_file_id": file_id, "endpoint":
                                      "/v1/chat/completions", "completion_window": "24h",
                                      "metadata": metadata}, key=key)


async def get(gw: Harness, path: str, key: str = "ci") -> Any:
    return await gw.client.get(f"/v1{path}", headers={"Authorization": f"Bearer {KEYS[key]}"})


async def running(gw: Harness, key: str = "ci") -> list[dict[str, Any]]:
    resp = await gw.client.get("/api/client/v1/batches/running",
                               headers={"Authorization": f"Bearer {KEYS[key]}"})
    assert resp.status == 200, await resp.text()
    data: list[dict[str, Any]] = (await resp.json())["data"]
    return data


async def settled(gw: Harness, batch_id: str, key: str = "ci") -> dict[str, Any]:
    """Polls (as the gateway's poller does) until the batch has ended and been settled."""
    for _ in range(200):
        await gw.app[BATCH_SETTLER].poll()
        batch = await (await get(gw, f"/batches/{batch_id}", key)).json()
        if batch["status"] in ("completed", "failed", "expired", "cancelled") and not [
                r for r in await gw.store.batches.pending() if r.batch_id == batch_id]:
            return dict(batch)
        await asyncio.sleep(0.05)
    raise AssertionError(f"batch {batch_id} never settled")


def batch_price(gw: Harness, model: str = "gpt-4o-mini") -> tuple[int, int]:
    """Pico-dollars per input and output token at batch prices."""
    price = gw.app[CONFIG].current.router.prices.lookup(model)
    assert price is not None
    rates = price.rates_for("batch")
    return rates[Item.INPUT].pico, rates[Item.OUTPUT].pico


async def test_a_batch_is_reserved_at_its_bound_and_charged_what_its_lines_billed(
        gateway: MakeHarness) -> None:
    gw = await gateway(max_body_bytes=1 << 20)
    resp = await upload(gw, jsonl([line(i) for i in range(5)]))
    assert resp.status == 200, await resp.text()
    file_id = (await resp.json())["id"]
    owned = await gw.store.objects.get("acme", "file", file_id, 0)
    assert owned is not None and owned.detail is not None
    bound = FileBound.loads(owned.detail)
    assert (bound.lines, bound.output_tokens, bound.model) == (5, 5 * OUTPUT, "gpt-4o-mini")
    created = await create(gw, file_id)
    assert created.status == 200, await created.text()
    batch = await created.json()
    assert float(created.headers["x-budget-usage-ratio"]) == 0.0  # no budget matched
    ended = await settled(gw, batch["id"])
    assert ended["status"] == "completed"
    spent = await gw.store.query(Filter(tenant_id="acme"))
    assert spent.total_output_tokens == 5 * OUTPUT  # the mock bills every line's max_tokens
    assert spent.total_input_tokens <= bound.input_tokens
    pin, pout = batch_price(gw)
    cost = (spent.total_input_tokens * pin + spent.total_output_tokens * pout) / 1e12
    assert spent.total_cost == pytest.approx(cost, abs=1e-9)
    assert (await gw.chat()).status == 200  # and one request on its own
    report = await (await gw.client.get("/api/client/v1/spend/report", headers={
        "Authorization": f"Bearer {KEYS['ci']}"})).json()
    assert report["batch"] == {"cost": pytest.approx(cost, abs=1e-9), "requests": 1,
                               "input_tokens": spent.total_input_tokens,
                               "output_tokens": 5 * OUTPUT}
    assert report["requests"] == 2 and report["total_cost"] > report["batch"]["cost"]
    (today,) = report["timeseries"]
    assert today["batch_cost"] == report["batch"]["cost"]


async def test_a_budget_holds_the_whole_bound_while_the_batch_runs_then_keeps_only_its_usage(
        gateway: MakeHarness) -> None:
    gw = await gateway(max_body_bytes=1 << 20)
    content = jsonl([line(i) for i in range(4)])
    file_id = (await (await upload(gw, content)).json())["id"]
    owned = await gw.store.objects.get("acme", "file", file_id, 0)
    assert owned is not None and owned.detail is not None
    bound = FileBound.loads(owned.detail)
    tokens = bound.input_tokens + bound.output_tokens
    gw = await gateway(f"  - {{name: day, tenant: acme, max_tokens_per_day: {tokens}}}",
                       max_body_bytes=1 << 20)
    file_id = (await (await upload(gw, content)).json())["id"]
    first = await create(gw, file_id, mock_batch_duration_s="0.5")
    assert first.status == 200, await first.text()
    assert float(first.headers["x-budget-usage-ratio"]) == 1.0
    second = await create(gw, file_id)
    assert second.status == 429
    error = (await second.json())["error"]
    assert error["code"] == "budget_exceeded" and "Budget 'day' exceeded" in error["message"]
    chat = await gw.chat(max_tokens=1)
    assert chat.status == 429  # the running batch holds the whole day
    await settled(gw, (await first.json())["id"])
    spent = await gw.store.query(Filter(tenant_id="acme"))
    assert spent.total_input_tokens + spent.total_output_tokens == tokens  # the mock is exact
    assert await gw.in_flight() == 0


async def test_a_cancelled_batch_is_charged_the_lines_done_and_the_rest_is_released(
        gateway: MakeHarness) -> None:
    gw = await gateway("  - {name: day, tenant: acme, max_tokens_per_day: 100000}",
                       max_body_bytes=1 << 20)
    file_id = (await (await upload(gw, jsonl([line(i) for i in range(10)]))).json())["id"]
    batch = await (await create(gw, file_id, mock_batch_duration_s="2")).json()
    for _ in range(200):  # cancelled once some lines are done, however slow the machine
        seen = await (await get(gw, f"/batches/{batch['id']}")).json()
        if seen["request_counts"]["completed"]:
            break
        await asyncio.sleep(0.01)
    cancel = await gw.client.post(f"/v1/batches/{batch['id']}/cancel",
                                  headers={"Authorization": f"Bearer {KEYS['ci']}"})
    assert cancel.status == 200, await cancel.text()
    ended = await settled(gw, batch["id"])
    assert ended["status"] == "cancelled"
    done = ended["request_counts"]["completed"]
    assert 0 < done < 10
    spent = await gw.store.query(Filter(tenant_id="acme"))
    assert (spent.entry_count, spent.total_output_tokens) == (1, done * OUTPUT)
    assert await gw.in_flight() == 0


@pytest.mark.parametrize(("lines", "problem"), [
    ([line(0), {"custom_id": "x", "method": "GET", "url": "/v1/chat/completions", "body": {}}],
     "Line 2 of the file: 'method' must be"),
    ([line(0), line(0)], "Line 2 of the file: custom_id 'req-0' is used by an earlier line"),
    ([line(0), line(1, model="gpt-4o")], "Line 2 of the file: every request of a batch uses "
                                          "one model"),
    ([line(0, model="unknown-model-x")], "Line 1 of the file: The model 'unknown-model-x'"),
    ([line(0, stream=True)], "Line 1 of the file: 'stream' is not available in a batch"),
    ([line(0, messages="hi")], "Line 1 of the file: Invalid type for 'messages'"),
    (["not json"], "Line 1 of the file: The request body must be a JSON object"),
])
async def test_a_bad_line_is_a_400_naming_its_number_and_nothing_is_uploaded(
        gateway: MakeHarness, lines: list[Any], problem: str) -> None:
    gw = await gateway(max_body_bytes=1 << 20)
    resp = await upload(gw, jsonl(lines))
    assert resp.status in (400, 403), await resp.text()
    assert (await resp.json())["error"]["message"].startswith(problem)
    assert not gw.stats.requests


async def test_files_and_batches_are_their_tenants_alone(gateway: MakeHarness) -> None:
    gw = await gateway(max_body_bytes=1 << 20)
    file_id = (await (await upload(gw, jsonl([line(0)]))).json())["id"]
    batch_id = (await (await create(gw, file_id)).json())["id"]
    for path in (f"/files/{file_id}", f"/files/{file_id}/content", f"/batches/{batch_id}"):
        assert (await get(gw, path)).status == 200, path
        other = await get(gw, path, key="other")
        assert other.status == 404, path
        assert (await other.json())["error"]["type"] == "invalid_request_error"
    assert (await create(gw, file_id, key="other")).status == 404
    cancel = await gw.client.post(f"/v1/batches/{batch_id}/cancel",
                                  headers={"Authorization": f"Bearer {KEYS['other']}"})
    assert cancel.status == 404
    mine = await (await get(gw, "/batches")).json()
    theirs = await (await get(gw, "/batches", key="other")).json()
    assert [b["id"] for b in mine["data"]] == [batch_id] and theirs["data"] == []
    ended = await settled(gw, batch_id)
    output = ended["output_file_id"]
    assert (await get(gw, f"/files/{output}/content")).status == 200
    assert (await get(gw, f"/files/{output}/content", key="other")).status == 404


async def test_only_batch_files_are_accepted(gateway: MakeHarness) -> None:
    gw = await gateway(max_body_bytes=1 << 20)
    resp = await upload(gw, jsonl([line(0)]), purpose="fine-tune")
    assert resp.status == 400
    assert (await resp.json())["error"]["param"] == "purpose"
    too_big = await upload(gw, jsonl([line(i) for i in range(20_000)]))
    assert too_big.status == 413
    assert not gw.stats.requests


async def test_running_batches_say_what_they_hold_until_they_end(gateway: MakeHarness) -> None:
    gw = await gateway("  - {name: day, tenant: acme, max_cost_per_day: 10}",
                       max_body_bytes=1 << 20)
    file_id = (await (await upload(gw, jsonl([line(i) for i in range(3)]))).json())["id"]
    owned = await gw.store.objects.get("acme", "file", file_id, 0)
    assert owned is not None and owned.detail is not None
    bound = FileBound.loads(owned.detail)
    batch = await (await create(gw, file_id, mock_batch_duration_s="0.5")).json()
    (held,) = await running(gw)
    assert (held["batch_id"], held["model"], held["endpoint"]) == (
        batch["id"], "gpt-4o-mini", "/v1/chat/completions")
    assert held["reserved_usd"] == pytest.approx(bound.cost_nano / 1e9)
    assert held["reserved_tokens"] == bound.input_tokens + bound.output_tokens
    assert held["deadline"] > held["created_at"]
    assert await running(gw, key="other") == []
    async with Client(str(gw.client.make_url("")).rstrip("/"), KEYS["ci"]) as client:
        assert await client.batches.running() == [held]
    await settled(gw, batch["id"])
    assert await running(gw) == []


async def test_a_tenants_list_pages_through_its_own_batches_only(gateway: MakeHarness) -> None:
    gw = await gateway(max_body_bytes=1 << 20)
    mine_file = (await (await upload(gw, jsonl([line(0)]))).json())["id"]
    theirs_file = (await (await upload(gw, jsonl([line(0)]), key="other")).json())["id"]
    mine = []
    for _ in range(3):
        mine.append((await (await create(gw, mine_file)).json())["id"])
        assert (await create(gw, theirs_file, key="other")).status == 200
    first = await (await get(gw, "/batches?limit=2")).json()
    assert [b["id"] for b in first["data"]] == mine[::-1][:2]  # newest first
    assert first["has_more"] is True
    rest = await (await get(gw, f"/batches?limit=2&after={first['last_id']}")).json()
    assert [b["id"] for b in rest["data"]] == mine[:1] and rest["has_more"] is False
    bad = await get(gw, "/batches?limit=0")
    assert bad.status == 400 and (await bad.json())["error"]["param"] == "limit"
    for batch_id in mine:
        await settled(gw, batch_id)


@pytest.mark.parametrize("budget", [
    "  - {name: slow, tenant: acme, max_tokens_per_day: 100, action: throttle, max_wait_s: 30}",
    "  - {name: slow, tenant: acme, max_tokens_per_day: 100, clamp_max_tokens: true}",
    "  - {name: slow, tenant: acme, max_tokens_per_day: 100, action: downgrade,"
    " fallback_model: gpt-4o}",
])
async def test_a_batch_that_does_not_fit_is_refused_at_once_whatever_the_action(
        gateway: MakeHarness, budget: str) -> None:
    """A batch can neither wait, shrink nor change model: throttle, clamp and downgrade budgets
    refuse it as reject does, at once."""
    gw = await gateway(budget, max_body_bytes=1 << 20)
    file_id = (await (await upload(gw, jsonl([line(i) for i in range(3)]))).json())["id"]
    started = asyncio.get_running_loop().time()
    refused = await create(gw, file_id)
    assert refused.status == 429
    assert "Budget 'slow' exceeded" in (await refused.json())["error"]["message"]
    assert asyncio.get_running_loop().time() - started < 5  # not held for max_wait_s
    assert await running(gw) == [] and await gw.in_flight() == 0


async def test_an_alert_budget_lets_a_batch_through_and_says_so(gateway: MakeHarness) -> None:
    gw = await gateway("  - {name: watch, tenant: acme, max_tokens_per_day: 100, action: alert}",
                       max_body_bytes=1 << 20)
    file_id = (await (await upload(gw, jsonl([line(i) for i in range(3)]))).json())["id"]
    created = await create(gw, file_id)
    assert created.status == 200
    assert created.headers["x-budget-alert"].startswith("watch:max_tokens_per_day:")
    await settled(gw, (await created.json())["id"])


async def test_a_client_seeing_its_batch_end_gets_it_settled_before_the_next_poll(
        gateway: MakeHarness) -> None:
    gw = await gateway(extra="limits: {batch_poll_s: 3600}", max_body_bytes=1 << 20)
    file_id = (await (await upload(gw, jsonl([line(0)]))).json())["id"]
    batch = await (await create(gw, file_id, mock_batch_duration_s="0.2")).json()
    for _ in range(100):  # the client polls, as the SDK's users do
        seen = await (await get(gw, f"/batches/{batch['id']}")).json()
        if seen["status"] == "completed":
            break
        await asyncio.sleep(0.05)
    for _ in range(100):
        if not await gw.store.batches.pending():
            break
        await asyncio.sleep(0.05)
    assert await gw.store.batches.pending() == []  # within seconds, not the hour's poll
    assert (await gw.store.query(Filter(tenant_id="acme"))).total_output_tokens == OUTPUT


async def test_a_line_naming_a_response_the_tenant_does_not_own_is_refused(
        gateway: MakeHarness) -> None:
    """Context the gateway cannot see is bounded or refused in a batch line as in a request:
    another tenant's (or an unknown) previous_response_id is OpenAI's 404, naming the line."""
    gw = await gateway(max_body_bytes=1 << 20)
    line = {"custom_id": "r1", "method": "POST", "url": "/v1/responses",
            "body": {"model": "gpt-4o-mini", "input": "go on", "max_output_tokens": 50,
                     "previous_response_id": "resp_someone_elses"}}
    resp = await upload(gw, jsonl([line]))
    assert resp.status == 404
    assert (await resp.json())["error"]["message"].startswith(
        "Line 1 of the file: Previous response with id 'resp_someone_elses' not found")
    assert not gw.stats.requests


async def test_a_line_with_built_in_tools_is_bounded_with_their_calls(
        gateway: MakeHarness) -> None:
    gw = await gateway(max_body_bytes=1 << 20)
    line = {"custom_id": "s1", "method": "POST", "url": "/v1/responses",
            "body": {"model": "gpt-4o-mini", "input": "news?", "max_output_tokens": 50,
                     "tools": [{"type": "web_search"}]}}
    resp = await upload(gw, jsonl([line]))
    assert resp.status == 200, await resp.text()
    tools_file = (await resp.json())["id"]
    owned = await gw.store.objects.get("acme", "file", tools_file, 0)
    assert owned is not None and owned.detail is not None
    bound = FileBound.loads(owned.detail)
    sent = orjson.loads(await (await get(gw, f"/files/{tools_file}/content")).read())
    assert sent["body"]["max_tool_calls"] == 4  # the gateway's cap, written into the file
    plain = {**line, "body": {k: v for k, v in line["body"].items() if k != "tools"}}
    resp = await upload(gw, jsonl([plain]))
    owned = await gw.store.objects.get("acme", "file", (await resp.json())["id"], 0)
    assert owned is not None and owned.detail is not None
    assert bound.cost_nano > FileBound.loads(owned.detail).cost_nano  # fees and the context
    content = await (await get(gw, f"/files/{(await resp.json())['id']}/content")).read()
    assert orjson.loads(content)["body"]["max_output_tokens"] == 50
