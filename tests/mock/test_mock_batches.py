"""The mock upstream's Files and Batch APIs, driven by the official openai SDK: each line
answered and billed as the request alone is, late, line by line; cancelled, expired, failed,
flaky; bounded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import openai
import orjson
import pytest
from aiohttp.test_utils import TestClient
from openai import AsyncOpenAI
from openai.types import Batch

from gateway.cost.price_data import shipped_table
from gateway.cost.pricing import Billed
from gateway.mock.batches import Batches, Reply
from gateway.mock.files import FileStore
from gateway.mock_upstream import make_app
from gateway.proxy.endpoints import Endpoint

PROMPT = 11  # what the stub counter says every request's input is
FAST = 0.05  # the tests' default batch duration, seconds
ENDED = ("completed", "failed", "expired", "cancelled")
CHAT = "/v1/chat/completions"
JSON = dict[str, Any]
MockClient = TestClient[Any, Any]
ClientFactory = Callable[..., Awaitable[MockClient]]


def stub_tokens(path: str, body: Mapping[str, Any]) -> int:
    return PROMPT


@dataclass
class Mock:
    http: MockClient
    sdk: AsyncOpenAI

    async def stats(self) -> JSON:
        resp = await self.http.get("/v1/mock/stats")
        stats: JSON = await resp.json()
        return stats

    async def batch_entries(self, batch_id: str) -> list[JSON]:
        entries: list[JSON] = (await self.stats())["ledger"]["entries"]
        return [e for e in entries if e["batch_id"] == batch_id]


async def start(aiohttp_client: ClientFactory, **options: Any) -> AsyncIterator[Mock]:
    app = make_app(tokens=stub_tokens, **{"batch_duration_s": FAST, **options})
    http = await aiohttp_client(app)
    async with AsyncOpenAI(base_url=str(http.make_url("/v1")), api_key="k", max_retries=0) as sdk:
        yield Mock(http, sdk)


@pytest.fixture
async def mock(aiohttp_client: ClientFactory) -> AsyncIterator[Mock]:
    async for started in start(aiohttp_client, worst=True):
        yield started


def chat(**extra: Any) -> JSON:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], **extra}


def line(custom_id: str, body: JSON, url: str = CHAT) -> JSON:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


async def upload(sdk: AsyncOpenAI, lines: list[JSON | bytes], purpose: Any = "batch") -> str:
    content = b"".join((x if isinstance(x, bytes) else orjson.dumps(x)) + b"\n" for x in lines)
    return (await sdk.files.create(file=("in.jsonl", content), purpose=purpose)).id


async def create(
    sdk: AsyncOpenAI, lines: list[JSON | bytes], endpoint: Any = CHAT, **metadata: str
) -> Batch:
    return await sdk.batches.create(input_file_id=await upload(sdk, lines), endpoint=endpoint,
                                    completion_window="24h", metadata=metadata or None)


async def settle(sdk: AsyncOpenAI, batch_id: str, until: tuple[str, ...] = ENDED) -> Batch:
    for _ in range(500):
        batch = await sdk.batches.retrieve(batch_id)
        if batch.status in until:
            return batch
        await asyncio.sleep(0.01)
    raise AssertionError(f"{batch_id} still {batch.status}")


async def jsonl(sdk: AsyncOpenAI, file_id: str | None) -> list[JSON]:
    assert file_id is not None
    content = (await sdk.files.content(file_id)).content
    return [orjson.loads(raw) for raw in content.splitlines()]


# -- answers and bills -------------------------------------------------------------------------


async def test_each_line_bills_its_worst_case_at_the_batch_tier(mock: Mock) -> None:
    lines: list[JSON | bytes] = [
        line("capped", chat(max_tokens=7)),
        line("two", chat(max_completion_tokens=5, n=2)),
        line("reasoning", chat(model="o4-mini", max_completion_tokens=50)),
        line("uncapped", chat()),
    ]
    batch = await settle(mock.sdk, (await create(mock.sdk, lines)).id)
    assert batch.status == "completed" and batch.error_file_id is None
    assert batch.model == "gpt-4o-mini" and batch.expires_at == batch.created_at + 86_400
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at
    output = await jsonl(mock.sdk, batch.output_file_id)
    assert [o["custom_id"] for o in output] == ["uncapped", "reasoning", "two", "capped"]
    usage = {o["custom_id"]: o["response"]["body"]["usage"] for o in output}
    assert {k: u["completion_tokens"] for k, u in usage.items()} == {
        "capped": 7, "two": 10, "reasoning": 50, "uncapped": 16_384}
    assert usage["reasoning"]["completion_tokens_details"]["reasoning_tokens"] == 50 - 16
    assert all(o["response"]["status_code"] == 200 and o["error"] is None for o in output)
    assert all(o["id"].startswith("batch_req_") and o["response"]["request_id"] for o in output)
    assert batch.request_counts is not None
    assert batch.request_counts.model_dump() == {"total": 4, "completed": 4, "failed": 0}
    assert batch.usage is not None and batch.usage.output_tokens == 7 + 10 + 50 + 16_384
    assert batch.usage.input_tokens == 4 * PROMPT
    assert batch.usage.output_tokens_details.reasoning_tokens == 34
    entries = await mock.batch_entries(batch.id)
    assert [(e["state"], e["tier"], e["delivered"]) for e in entries] == [
        ("billed", "batch", True)] * 4
    assert sum(e["billed"]["output_tokens"] for e in entries) == batch.usage.output_tokens
    table = shipped_table({})

    def nano(entry: JSON, tier: str) -> int:
        price = table.lookup(entry["model"])
        assert price is not None
        billed = entry["billed"]
        return price.charge_nano(Billed(billed["input_tokens"], billed["output_tokens"]), tier)

    # what a gateway's charge is compared with: the batch tier's prices, below the standard's
    assert all(nano(e, e["tier"]) < nano(e, "default") for e in entries)


BODIES = {
    Endpoint.CHAT: chat(max_tokens=9, n=2),
    Endpoint.COMPLETIONS: {"model": "gpt-3.5-turbo-instruct", "prompt": "hi", "max_tokens": 9},
    Endpoint.RESPONSES: {"model": "o4-mini", "input": "hi", "max_output_tokens": 9,
                         "tools": [{"type": "web_search"}], "max_tool_calls": 2},
    Endpoint.EMBEDDINGS: {"model": "text-embedding-3-small", "input": ["a", "b"]},
}


@pytest.mark.parametrize("endpoint", list(BODIES))
async def test_a_line_is_answered_as_the_same_request_alone(mock: Mock, endpoint: Endpoint) -> None:
    body = BODIES[endpoint]
    alone = await (await mock.http.post(f"/v1{endpoint.value}", json=body)).json()
    url = f"/v1{endpoint.value}"
    batch = await settle(mock.sdk, (await create(mock.sdk, [line("a", body, url)], url)).id)
    [answer] = await jsonl(mock.sdk, batch.output_file_id)
    lined = answer["response"]["body"]
    assert lined["usage"] == alone["usage"]
    assert lined.get("output", lined.get("choices", lined.get("data"))) is not None
    [entry] = await mock.batch_entries(batch.id)
    assert entry["path"] == endpoint.value and entry["billed"] is not None


async def test_failed_lines_go_to_the_error_file(mock: Mock) -> None:
    lines: list[JSON | bytes] = [
        line("ok", chat(max_tokens=3)),
        line("bad_n", chat(n=0)),
        line("fault", chat(metadata={"mock_fault": "500"})),
        line("stream", chat(stream=True)),
        line("no_model", {"messages": []}),
    ]
    batch = await settle(mock.sdk, (await create(mock.sdk, lines)).id)
    assert batch.status == "completed"
    assert batch.request_counts is not None
    assert batch.request_counts.model_dump() == {"total": 5, "completed": 1, "failed": 4}
    [ok] = await jsonl(mock.sdk, batch.output_file_id)
    assert ok["custom_id"] == "ok"
    errors = {e["custom_id"]: e for e in await jsonl(mock.sdk, batch.error_file_id)}
    assert {k: e["response"]["status_code"] for k, e in errors.items()} == {
        "bad_n": 400, "fault": 500, "stream": 400, "no_model": 400}
    assert errors["stream"]["response"]["body"]["error"]["param"] == "stream"
    assert errors["fault"]["response"]["body"]["error"]["type"] == "server_error"
    assert all(e["error"] is None and e["id"].startswith("batch_req_") for e in errors.values())
    entries = await mock.batch_entries(batch.id)
    assert sorted((e["state"], e["billed"] is None) for e in entries) == [
        ("billed", False), ("failed", True), ("refused", True)]
    assert batch.usage is not None and batch.usage.output_tokens == 3


# -- late answers ------------------------------------------------------------------------------


async def test_lines_complete_over_time_and_a_cancel_keeps_those_done(mock: Mock) -> None:
    lines: list[JSON | bytes] = [line(f"r{i}", chat(max_tokens=4)) for i in range(10)]
    created = await create(mock.sdk, lines, mock_batch_duration_s="2")
    assert created.status == "validating" and created.request_counts is not None
    assert created.request_counts.total == 0
    seen: set[int] = set()
    while not seen or max(seen) < 3:
        running = await mock.sdk.batches.retrieve(created.id)
        assert running.status in ("validating", "in_progress") and running.request_counts
        seen.add(running.request_counts.completed)
        await asyncio.sleep(0.01)
    assert len(seen) >= 3  # one line at a time
    cancelling = await mock.sdk.batches.cancel(created.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    assert cancelling.request_counts is not None
    done = cancelling.request_counts.completed
    assert 3 <= done < 10
    assert (await mock.sdk.batches.cancel(created.id)).status == "cancelling"  # no change
    batch = await settle(mock.sdk, created.id)
    assert batch.status == "cancelled" and batch.cancelled_at is not None
    assert batch.request_counts is not None
    assert batch.request_counts.model_dump() == {"total": 10, "completed": done,
                                                 "failed": 10 - done}
    assert len(await jsonl(mock.sdk, batch.output_file_id)) == done
    not_run = await jsonl(mock.sdk, batch.error_file_id)
    assert [e["error"]["code"] for e in not_run] == ["batch_cancelled"] * (10 - done)
    assert all(e["response"] is None for e in not_run)
    assert len(await mock.batch_entries(batch.id)) == done  # the rest never ran, never billed
    assert batch.usage is not None and batch.usage.output_tokens == 4 * done


async def test_expiry_keeps_and_bills_the_lines_done(mock: Mock) -> None:
    lines: list[JSON | bytes] = [line(f"r{i}", chat(max_tokens=2)) for i in range(5)]
    batch = await settle(mock.sdk, (await create(mock.sdk, lines,
                                                 mock_expire_after_lines="2")).id)
    assert batch.status == "expired" and batch.expired_at is not None
    assert batch.request_counts is not None
    assert batch.request_counts.model_dump() == {"total": 5, "completed": 2, "failed": 3}
    assert {o["custom_id"] for o in await jsonl(mock.sdk, batch.output_file_id)} == {"r0", "r1"}
    expired = await jsonl(mock.sdk, batch.error_file_id)
    assert [(e["custom_id"], e["error"]["code"]) for e in expired] == [
        ("r2", "batch_expired"), ("r3", "batch_expired"), ("r4", "batch_expired")]
    assert [e["state"] for e in await mock.batch_entries(batch.id)] == ["billed"] * 2


async def test_a_failed_batch_bills_nothing(mock: Mock) -> None:
    batch = await settle(mock.sdk, (await create(mock.sdk, [line("a", chat())],
                                                 mock_fail="true")).id)
    assert batch.status == "failed" and batch.failed_at is not None
    assert batch.errors is not None and batch.errors.data is not None
    assert [e.code for e in batch.errors.data] == ["token_limit_exceeded"]
    assert (batch.output_file_id, batch.error_file_id, batch.in_progress_at) == (None, None, None)
    assert await mock.batch_entries(batch.id) == []


async def test_a_file_that_is_not_requests_fails_validation(mock: Mock) -> None:
    lines: list[JSON | bytes] = [
        b"not json",
        line("a", {"model": "text-embedding-3-small", "input": "x"}, "/v1/embeddings"),
        line("b", chat()),
        line("b", chat()),
        {**line("c", chat()), "method": "GET"},
        {"custom_id": "d", "method": "POST", "url": CHAT},
    ]
    batch = await settle(mock.sdk, (await create(mock.sdk, lines)).id)
    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data is not None
    assert [(e.line, e.code) for e in batch.errors.data] == [
        (1, "invalid_json_line"), (2, "invalid_url"), (4, "duplicate_custom_id"),
        (5, "invalid_method"), (6, "missing_required_parameter")]
    assert await mock.batch_entries(batch.id) == []
    assert (await mock.stats())["requests"].get("/chat/completions") is None
    empty = await settle(mock.sdk, (await create(mock.sdk, [])).id)
    assert empty.errors is not None and empty.errors.data is not None
    assert [e.code for e in empty.errors.data] == ["empty_file"]


async def test_flaky_retrievals(mock: Mock) -> None:
    created = await create(mock.sdk, [line("a", chat(max_tokens=1))], mock_flaky_gets="2")
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            await mock.sdk.batches.retrieve(created.id)
    assert (await settle(mock.sdk, created.id)).status == "completed"
    assert (await mock.stats())["faulted"]["/batches"] == 2


# -- refusals, lists and bounds ----------------------------------------------------------------


async def test_unknown_ids_are_openais_404(mock: Mock) -> None:
    sdk = mock.sdk
    for call in (sdk.batches.retrieve("batch_nope"), sdk.batches.cancel("batch_nope"),
                 sdk.files.retrieve("file-nope"), sdk.files.content("file-nope"),
                 sdk.files.delete("file-nope"),
                 sdk.batches.create(input_file_id="file-nope", endpoint=CHAT,
                                    completion_window="24h")):
        with pytest.raises(openai.NotFoundError) as caught:
            await call
        assert caught.value.type == "invalid_request_error"


async def test_bad_creates_and_cancels_are_400s(mock: Mock) -> None:
    file_id = await upload(mock.sdk, [line("a", chat())])
    other = await upload(mock.sdk, [line("a", chat())], purpose="user_data")
    good = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h"}
    for change, param in [({"completion_window": "1h"}, "completion_window"),
                          ({"endpoint": "/v1/moderations"}, "endpoint"),
                          ({"metadata": {"k": 1}}, "metadata"),
                          ({"metadata": {"mock_fail": "yes"}}, "metadata.mock_fail"),
                          ({"input_file_id": other}, "input_file_id"),
                          ({"input_file_id": None}, "input_file_id")]:
        resp = await mock.http.post("/v1/batches", json={**good, **change})
        assert resp.status == 400, change
        assert (await resp.json())["error"]["param"] == param
    created = await mock.sdk.batches.create(input_file_id=file_id, endpoint=CHAT,
                                            completion_window="24h")
    done = await settle(mock.sdk, created.id)
    with pytest.raises(openai.BadRequestError):
        await mock.sdk.batches.cancel(done.id)


async def test_files_round_trip_and_lists(mock: Mock) -> None:
    file_id = await upload(mock.sdk, [line("a", chat(max_tokens=1))])
    kept = await mock.sdk.files.retrieve(file_id)
    assert (kept.object, kept.purpose, kept.filename, kept.status) == (
        "file", "batch", "in.jsonl", "processed")
    assert kept.expires_at == kept.created_at + 30 * 86_400
    ids = [(await mock.sdk.batches.create(input_file_id=file_id, endpoint=CHAT,
                                          completion_window="24h")).id for _ in range(3)]
    page = await mock.sdk.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[:0:-1] and page.has_more
    rest = await mock.sdk.batches.list(limit=2, after=ids[1])
    assert [b.id for b in rest.data] == ids[:1] and not rest.has_more
    for batch_id in ids:
        await settle(mock.sdk, batch_id)
    outputs = (await mock.sdk.files.list(purpose="batch_output")).data
    assert len(outputs) == 3 and outputs[0].filename == f"{ids[-1]}_output.jsonl"
    assert (await mock.sdk.files.delete(file_id)).deleted
    with pytest.raises(openai.NotFoundError):
        await mock.sdk.files.content(file_id)


async def test_stored_bytes_are_capped(aiohttp_client: ClientFactory) -> None:
    async for mock in start(aiohttp_client, files_max_bytes=1_000):
        first = await mock.sdk.files.create(file=("a.jsonl", b"x" * 600), purpose="batch")
        with pytest.raises(openai.APIStatusError) as caught:
            await mock.sdk.files.create(file=("b.jsonl", b"x" * 600), purpose="batch")
        assert caught.value.status_code == 413
        assert caught.value.code == "file_storage_limit_exceeded"
        await mock.sdk.files.delete(first.id)
        await mock.sdk.files.create(file=("b.jsonl", b"x" * 600), purpose="batch")


async def test_the_polite_mock_batches_too(aiohttp_client: ClientFactory) -> None:
    async for mock in start(aiohttp_client):
        lines: list[JSON | bytes] = [line(f"r{i}", chat(max_tokens=5)) for i in range(2)]
        batch = await settle(mock.sdk, (await create(mock.sdk, lines)).id)
        output = await jsonl(mock.sdk, batch.output_file_id)
        assert [o["response"]["body"]["usage"]["completion_tokens"] for o in output] == [5, 5]
        stats = await mock.stats()
        assert "ledger" not in stats
        assert (stats["requests"]["/chat/completions"], stats["output_tokens"]) == (2, 10)


async def test_routes_check_the_key(aiohttp_client: ClientFactory) -> None:
    async for mock in start(aiohttp_client, require_key="right"):
        for path in ("/v1/files", "/v1/batches", "/v1/batches/batch_x", "/v1/files/file-x"):
            assert (await mock.http.get(path)).status == 401


async def test_stores_are_bounded_and_runs_stop_with_the_app() -> None:
    files = FileStore(max_bytes=100, limit=2)
    kept = [files.add(f"{i}.jsonl", "batch", b"x" * 10) for i in range(3)]
    assert files.get(kept[0].id) is None and files.room == 80
    answered: list[str] = []

    def answer(endpoint: Endpoint, body: Any, batch_id: str) -> Reply:
        answered.append(batch_id)
        return Reply(400, b"{}")

    batches = Batches(files, answer, duration_s=30.0, limit=2)
    created = [batches.create({"input_file_id": kept[2].id, "endpoint": CHAT,
                               "completion_window": "24h"}) for _ in range(3)]
    assert batches.get(created[0].id) is None and batches.get(created[2].id) is created[2]
    await batches.close()
    assert [b.status for b in created] == ["validating"] * 3 and answered == []
    assert not [t for t in asyncio.all_tasks() if "Batches._run" in repr(t.get_coro())]
