"""The mock upstream's worst mode: everything the real API may bill, billed; stored and
background responses; the ledger of what each request carried and billed."""

from __future__ import annotations

import asyncio
import dataclasses
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientTimeout
from aiohttp.test_utils import TestClient

from gateway.mock import stored, worst
from gateway.mock.shapes import Plan, Usage, text_of
from gateway.mock.stats import Ledger, LedgerEntry
from gateway.mock_upstream import make_app
from tests import procs

PROMPT = 11  # what the stub counter says a request's input is
MockClient = TestClient[Any, Any]
ClientFactory = Callable[..., Awaitable[MockClient]]
JSON = dict[str, Any]


def stub_tokens(path: str, body: Mapping[str, Any]) -> int:
    """PROMPT for every request; a completions prompt (how the mock counts plain text, such
    as a prediction) is one token per word."""
    prompt = body.get("prompt")
    if path == "/completions" and isinstance(prompt, str):
        return len(prompt.split())
    return PROMPT


@pytest.fixture
async def client(aiohttp_client: ClientFactory) -> MockClient:
    return await aiohttp_client(make_app(tokens=stub_tokens, worst=True))


def chat(model: str = "gpt-4o-mini", **extra: Any) -> JSON:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


def respond(model: str = "gpt-4o-mini", **extra: Any) -> JSON:
    return {"model": model, "input": "Hello", **extra}


async def call(client: MockClient, path: str, body: JSON, status: int = 200, **kw: Any) -> JSON:
    resp = await client.post(f"/v1{path}", data=orjson.dumps(body), **kw)
    assert resp.status == status, await resp.text()
    answer: JSON = await resp.json()
    return answer


async def get(client: MockClient, path: str, status: int = 200) -> JSON:
    resp = await client.get(f"/v1{path}")
    assert resp.status == status, await resp.text()
    answer: JSON = await resp.json()
    return answer


async def events(client: MockClient, path: str, body: JSON) -> list[JSON]:
    """The JSON data of every SSE event of a stream."""
    resp = await client.post(f"/v1{path}", data=orjson.dumps({**body, "stream": True}))
    assert resp.status == 200
    raw = (await resp.read()).decode()
    found = []
    for block in raw.split("\n\n"):
        data = [line[6:] for line in block.split("\n") if line.startswith("data: ")]
        if data and data[0] != "[DONE]":
            found.append(orjson.loads(data[0]))
    return found


async def ledger(client: MockClient) -> JSON:
    result: JSON = (await get(client, "/mock/stats"))["ledger"]
    return result


# -- 1. output as long as allowed ------------------------------------------------------------


async def test_output_is_the_cap_times_every_choice_with_short_text(client: MockClient) -> None:
    body = chat(max_completion_tokens=500, max_tokens=7, n=3)
    answer = await call(client, "/chat/completions", body)
    assert answer["usage"]["completion_tokens"] == 1500  # max_completion_tokens wins
    assert [c["message"]["content"] for c in answer["choices"]] == [text_of(16)] * 3
    assert {c["finish_reason"] for c in answer["choices"]} == {"length"}
    small = await call(client, "/chat/completions", chat(max_tokens=5))
    assert small["choices"][0]["message"]["content"] == text_of(5)
    assert small["usage"]["completion_tokens"] == 5


@pytest.mark.parametrize(
    ("path", "model", "expected"),
    [
        ("/chat/completions", "gpt-4o-mini", 16_384),
        ("/chat/completions", "gpt-4o-2024-08-06", 16_384),
        ("/chat/completions", "gpt-4.1-nano", 32_768),
        ("/chat/completions", "gpt-5.1", 128_000),
        ("/chat/completions", "o4-mini", 100_000),
        ("/chat/completions", "o1", 100_000),
        ("/chat/completions", "some-new-model", 100_000),
        ("/responses", "gpt-5-mini", 128_000),
        ("/responses", "o3", 100_000),
        ("/completions", "gpt-3.5-turbo-instruct", 4_096),
    ],
)
async def test_no_cap_bills_the_models_maximum_output(
    client: MockClient, path: str, model: str, expected: int
) -> None:
    bodies = {"/chat/completions": chat(model), "/responses": respond(model),
              "/completions": {"model": model, "prompt": "x"}}
    body = bodies[path]
    answer = await call(client, path, body)
    usage = answer["usage"]
    assert usage.get("completion_tokens", usage.get("output_tokens")) == expected


async def test_completions_bill_best_of_when_larger_than_n(client: MockClient) -> None:
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": "Once", "max_tokens": 20, "n": 2,
            "best_of": 5}
    answer = await call(client, "/completions", body)
    assert len(answer["choices"]) == 2
    assert answer["usage"]["completion_tokens"] == 100
    assert "service_tier" not in answer


async def test_reasoning_models_report_all_but_the_text_as_reasoning(client: MockClient) -> None:
    answer = await call(client, "/chat/completions", chat("o3", max_completion_tokens=1000, n=2))
    details = answer["usage"]["completion_tokens_details"]
    assert answer["usage"]["completion_tokens"] == 2000
    assert details["reasoning_tokens"] == 2000 - 2 * 16
    response = await call(client, "/responses", respond("gpt-5"))
    assert response["usage"]["output_tokens"] == 128_000
    assert response["usage"]["output_tokens_details"]["reasoning_tokens"] == 128_000 - 16
    plain = await call(client, "/responses", respond("gpt-4.1", max_output_tokens=100))
    assert plain["usage"]["output_tokens_details"]["reasoning_tokens"] == 0
    assert plain["status"] == "incomplete" and plain["max_output_tokens"] == 100


async def test_rejected_prediction_tokens_are_billed_as_output(client: MockClient) -> None:
    prediction = {"type": "content", "content": "one two three four five six"}
    answer = await call(client, "/chat/completions", chat(max_tokens=10, prediction=prediction))
    usage = answer["usage"]
    assert usage["completion_tokens_details"]["rejected_prediction_tokens"] == 6
    assert usage["completion_tokens"] == 16
    parts = {"type": "content", "content": [{"type": "text", "text": "a b"}, {"type": "text",
                                                                            "text": " c"}]}
    answer = await call(client, "/chat/completions", chat(max_tokens=10, prediction=parts))
    assert answer["usage"]["completion_tokens_details"]["rejected_prediction_tokens"] == 3


# -- 2. hidden context -------------------------------------------------------------------------


async def test_previous_response_bills_its_input_and_output_again(client: MockClient) -> None:
    first = await call(client, "/responses", respond(max_output_tokens=100))
    assert first["store"] is True
    assert first["usage"]["input_tokens"] == PROMPT
    second = await call(client, "/responses", respond(max_output_tokens=50,
                                                      previous_response_id=first["id"]))
    assert second["previous_response_id"] == first["id"]
    assert second["usage"]["input_tokens"] == PROMPT + PROMPT + 100
    third = await call(client, "/responses", respond(max_output_tokens=1,
                                                     previous_response_id=second["id"]))
    assert third["usage"]["input_tokens"] == PROMPT + (2 * PROMPT + 100) + 50


async def test_unknown_previous_response_is_openais_404(client: MockClient) -> None:
    answer = await call(client, "/responses", respond(previous_response_id="resp_nope"), 404)
    assert answer == {"error": {
        "message": "Previous response with id 'resp_nope' not found.",
        "type": "invalid_request_error",
        "param": "previous_response_id",
        "code": "previous_response_not_found",
    }}
    unstored = await call(client, "/responses", respond(store=False))
    assert unstored["store"] is False
    await call(client, "/responses", respond(previous_response_id=unstored["id"]), 404)
    entries = (await ledger(client))["entries"]
    assert [e["state"] for e in entries] == ["refused", "billed", "refused"]


@pytest.mark.parametrize(
    "extra",
    [
        {"conversation": "conv_123"},
        {"prompt": {"id": "pmpt_123"}, "input": None},
        {"input": [{"type": "item_reference", "id": "msg_123"}]},
        {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]},
    ],
    ids=["conversation", "prompt", "item_reference", "input_file"],
)
async def test_context_the_request_does_not_carry_fills_the_window(
    client: MockClient, extra: JSON
) -> None:
    body = {k: v for k, v in {**respond("gpt-5", max_output_tokens=1000), **extra}.items()
            if v is not None}
    answer = await call(client, "/responses", body)
    assert answer["usage"]["input_tokens"] == 400_000 - 1000
    uncapped = await call(client, "/responses", {**body, "model": "gpt-4o"} | {
        "max_output_tokens": None})
    assert uncapped["usage"]["input_tokens"] == 128_000 - 16_384


async def test_chat_file_parts_by_id_fill_the_window(client: MockClient) -> None:
    content = [{"type": "text", "text": "read"}, {"type": "file", "file": {"file_id": "file-1"}}]
    body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": content}],
            "max_tokens": 100}
    answer = await call(client, "/chat/completions", body)
    assert answer["usage"]["prompt_tokens"] == 1_047_576 - 100
    inline = [{"type": "file", "file": {"file_data": "data:...", "filename": "a.pdf"}}]
    body["messages"] = [{"role": "user", "content": inline}]
    answer = await call(client, "/chat/completions", body)
    assert answer["usage"]["prompt_tokens"] == PROMPT


# -- 3. tiers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "shown"),
    [(None, "default"), ("auto", "default"), ("default", "default"), ("flex", "flex"),
     ("priority", "priority"), ("fast", "priority")],
)
async def test_service_tier_is_echoed_everywhere(
    client: MockClient, asked: str | None, shown: str
) -> None:
    tier = {} if asked is None else {"service_tier": asked}
    assert (await call(client, "/chat/completions", chat(**tier)))["service_tier"] == shown
    chunks = await events(client, "/chat/completions", chat(**tier, max_tokens=2))
    assert {c["service_tier"] for c in chunks} == {shown}
    assert (await call(client, "/responses", respond(**tier)))["service_tier"] == shown
    streamed = await events(client, "/responses", respond(**tier, max_output_tokens=2))
    assert streamed[-1]["response"]["service_tier"] == shown


async def test_an_unknown_service_tier_is_a_400(client: MockClient) -> None:
    answer = await call(client, "/chat/completions", chat(service_tier="gold"), 400)
    assert answer["error"]["param"] == "service_tier"


# -- 4. built-in tools -------------------------------------------------------------------------


async def test_web_search_calls_as_many_as_allowed(client: MockClient) -> None:
    tools = [{"type": "web_search"}]
    answer = await call(client, "/responses", respond(tools=tools, max_tool_calls=3,
                                                      max_output_tokens=10))
    calls = answer["output"][:-1]
    assert [c["type"] for c in calls] == ["web_search_call"] * 3
    assert calls[0] == {"type": "web_search_call", "id": calls[0]["id"], "status": "completed",
                        "action": {"type": "search", "query": "mock search 1"}}
    assert calls[0]["id"].startswith("ws_")
    assert answer["output"][-1]["type"] == "message"
    assert answer["usage"]["input_tokens"] == PROMPT + 3 * worst.SEARCH_INPUT_TOKENS
    assert answer["max_tool_calls"] == 3 and answer["tools"] == tools
    unbounded = await call(client, "/responses", respond(tools=[{"type": "web_search_preview"}]))
    assert len(unbounded["output"]) == 20 + 1
    assert unbounded["usage"]["input_tokens"] == PROMPT + 20 * 2_000
    none = await call(client, "/responses", respond(tools=tools, tool_choice="none"))
    assert len(none["output"]) == 1


async def test_file_and_web_search_share_max_tool_calls(client: MockClient) -> None:
    tools = [{"type": "file_search", "vector_store_ids": ["vs_1"]}, {"type": "web_search"},
             {"type": "function", "name": "f", "parameters": {}}]
    answer = await call(client, "/responses", respond(tools=tools, max_tool_calls=5))
    kinds = [item["type"] for item in answer["output"][:-1]]
    assert kinds == ["file_search_call", "web_search_call"] * 2 + ["file_search_call"]
    first = answer["output"][0]
    assert first["id"].startswith("fs_")
    assert (first["queries"], first["results"], first["status"]) == (
        ["mock search 1"], None, "completed")
    assert answer["usage"]["input_tokens"] == PROMPT + 5 * 2_000
    both = await call(client, "/responses", respond(tools=tools))
    assert len(both["output"]) == 40 + 1
    entry = (await ledger(client))["entries"][-1]
    assert (entry["billed"]["web_searches"], entry["billed"]["file_searches"]) == (20, 20)


async def test_streamed_search_calls_come_before_the_message(client: MockClient) -> None:
    body = respond(tools=[{"type": "web_search"}], max_tool_calls=2, max_output_tokens=3)
    streamed = await events(client, "/responses", body)
    items = [(e["type"], e["output_index"], e["item"]["type"]) for e in streamed
             if e["type"].startswith("response.output_item")]
    assert items == [
        ("response.output_item.added", 0, "web_search_call"),
        ("response.output_item.done", 0, "web_search_call"),
        ("response.output_item.added", 1, "web_search_call"),
        ("response.output_item.done", 1, "web_search_call"),
        ("response.output_item.added", 2, "message"),
        ("response.output_item.done", 2, "message"),
    ]
    deltas = [e for e in streamed if e["type"] == "response.output_text.delta"]
    assert {e["output_index"] for e in deltas} == {2}
    final = streamed[-1]["response"]
    assert final["usage"]["input_tokens"] == PROMPT + 4_000
    assert [e["sequence_number"] for e in streamed] == list(range(len(streamed)))


@pytest.mark.parametrize("body", [chat("gpt-4o-mini-search-preview"),
                                  chat(web_search_options={})])
async def test_chat_search_adds_one_search(client: MockClient, body: JSON) -> None:
    answer = await call(client, "/chat/completions", body)
    assert answer["usage"]["prompt_tokens"] == PROMPT + 2_000
    assert (await ledger(client))["entries"][-1]["billed"]["web_searches"] == 1


# -- 5. audio ----------------------------------------------------------------------------------


async def test_audio_output_and_input(client: MockClient) -> None:
    part = {"type": "input_audio", "input_audio": {"data": "A" * 2_500, "format": "wav"}}
    body = {"model": "gpt-4o-audio-preview", "modalities": ["text", "audio"],
            "messages": [{"role": "user", "content": [part]}], "max_completion_tokens": 300}
    usage = (await call(client, "/chat/completions", body))["usage"]
    assert usage["completion_tokens"] == 300
    assert usage["completion_tokens_details"]["audio_tokens"] == 300
    assert usage["prompt_tokens_details"]["audio_tokens"] == 25
    assert usage["prompt_tokens"] == PROMPT + 25


# -- 6. cache ----------------------------------------------------------------------------------


async def test_cache_reads_and_writes_stay_within_the_input(client: MockClient) -> None:
    body = chat(metadata={"mock_cached_tokens": "4", "mock_cache_write_tokens": "5"})
    details = (await call(client, "/chat/completions", body))["usage"]["prompt_tokens_details"]
    assert (details["cached_tokens"], details["cache_write_tokens"]) == (4, 5)
    body = respond(metadata={"mock_cached_tokens": "4", "mock_cache_write_tokens": "50"})
    details = (await call(client, "/responses", body))["usage"]["input_tokens_details"]
    assert (details["cached_tokens"], details["cache_write_tokens"]) == (4, PROMPT - 4)
    plain = await call(client, "/chat/completions", chat())
    assert "cache_write_tokens" not in plain["usage"]["prompt_tokens_details"]
    bad = chat(metadata={"mock_cache_write_tokens": "-1"})
    assert (await call(client, "/chat/completions", bad, 400))["error"]["param"] == (
        "metadata.mock_cache_write_tokens")


# -- 7. stored and background responses --------------------------------------------------------


async def test_background_lifecycle(client: MockClient) -> None:
    body = respond(background=True, metadata={"mock_background_s": "0.4"})
    created = await call(client, "/responses", body)
    assert (created["status"], created["usage"], created["background"]) == ("queued", None, True)
    assert created["output"] == []
    entry = (await ledger(client))["entries"][-1]
    assert (entry["state"], entry["billed"], entry["background"]) == ("running", None, True)
    await asyncio.sleep(0.1)
    running = await get(client, f"/responses/{created['id']}")
    assert (running["status"], running["usage"]) == ("in_progress", None)
    await asyncio.sleep(0.4)
    done = await get(client, f"/responses/{created['id']}")
    assert done["status"] == "completed"
    assert done["usage"]["output_tokens"] == 16_384
    assert done["output"][-1]["content"][0]["text"] == text_of(16)
    book = await ledger(client)
    assert book["entries"][-1]["state"] == "billed"
    assert book["entries"][-1]["usage"] == done["usage"]
    assert book["billed"]["output_tokens"] == 16_384


async def test_background_ends_billed_even_if_nobody_asks(client: MockClient) -> None:
    body = respond(background=True, max_output_tokens=40, metadata={"mock_background_s": "0.05"})
    created = await call(client, "/responses", body)
    await asyncio.sleep(0.15)
    entry = (await ledger(client))["entries"][-1]
    assert entry["id"] == created["id"]
    assert (entry["state"], entry["billed"]["output_tokens"]) == ("billed", 40)
    final = await get(client, f"/responses/{created['id']}")
    assert final["status"] == "incomplete"  # its cap was reached, as without background


async def test_cancel_bills_what_was_produced(client: MockClient) -> None:
    body = respond(background=True, max_output_tokens=10_000,
                   metadata={"mock_background_s": "1.0"})
    created = await call(client, "/responses", body)
    await asyncio.sleep(0.5)
    cancelled = await call(client, f"/responses/{created['id']}/cancel", {})
    assert cancelled["status"] == "cancelled"
    usage = cancelled["usage"]
    assert usage["input_tokens"] == PROMPT
    assert 0 < usage["output_tokens"] < 10_000
    again = await call(client, f"/responses/{created['id']}/cancel", {})
    assert again == cancelled  # a second cancel changes nothing
    await asyncio.sleep(0.6)
    later = await get(client, f"/responses/{created['id']}")
    assert later == cancelled  # its timer was stopped
    entry = (await ledger(client))["entries"][-1]
    assert (entry["state"], entry["usage"]) == ("cancelled", usage)


async def test_cancel_while_queued_bills_nothing(client: MockClient) -> None:
    body = respond(background=True, metadata={"mock_background_s": "10"})
    created = await call(client, "/responses", body)
    cancelled = await call(client, f"/responses/{created['id']}/cancel", {})
    assert cancelled["usage"]["input_tokens"] == cancelled["usage"]["output_tokens"] == 0
    assert (await ledger(client))["billed"]["input_tokens"] == 0


async def test_cancel_refuses_a_synchronous_response(client: MockClient) -> None:
    done = await call(client, "/responses", respond())
    answer = await call(client, f"/responses/{done['id']}/cancel", {}, 400)
    assert answer["error"]["message"] == "Cannot cancel a synchronous response."


async def test_stored_responses_can_be_retrieved_and_deleted(client: MockClient) -> None:
    done = await call(client, "/responses", respond(max_output_tokens=5))
    assert await get(client, f"/responses/{done['id']}") == done
    deleted = await client.delete(f"/v1/responses/{done['id']}")
    assert await deleted.json() == {"id": done["id"], "object": "response.deleted",
                                    "deleted": True}
    for method, path in [("GET", ""), ("DELETE", ""), ("POST", "/cancel"),
                         ("GET", "/input_items")]:
        resp = await client.request(method, f"/v1/responses/{done['id']}{path}")
        assert resp.status == 404
        assert await resp.json() == {"error": {
            "message": f"No response found with id '{done['id']}'.",
            "type": "invalid_request_error", "param": None, "code": None,
        }}


async def test_input_items(client: MockClient) -> None:
    given = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "second"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "3"}],
         "id": "msg_mine"},
        {"type": "function_call_output", "call_id": "call_1", "output": "{}"},
    ]
    done = await call(client, "/responses", respond(input=given))
    listed = await get(client, f"/responses/{done['id']}/input_items")
    data = listed["data"]
    assert data[0]["id"] == listed["first_id"]
    assert data[1]["id"] == "msg_mine"  # newest first, as OpenAI lists them
    assert data[3]["content"] == [{"type": "input_text", "text": "first"}]
    assert data[2]["content"] == [{"type": "output_text", "text": "second"}]
    assert data[0]["type"] == "function_call_output" and data[0]["id"].startswith("item_")
    assert (listed["object"], listed["has_more"], listed["last_id"]) == (
        "list", False, data[3]["id"])
    page = await get(client, f"/responses/{done['id']}/input_items?order=asc&limit=2")
    assert [d["id"] for d in page["data"]] == [data[3]["id"], data[2]["id"]]
    assert page["has_more"] is True
    rest = await get(client, f"/responses/{done['id']}/input_items?order=asc&after="
                             f"{page['last_id']}")
    assert [d["id"] for d in rest["data"]] == [data[1]["id"], data[0]["id"]]
    assert rest["has_more"] is False
    text = await call(client, "/responses", respond())
    only = await get(client, f"/responses/{text['id']}/input_items")
    assert only["data"][0]["content"] == [{"type": "input_text", "text": "Hello"}]


async def test_background_needs_store_and_is_not_streamed(client: MockClient) -> None:
    answer = await call(client, "/responses", respond(background=True, store=False), 400)
    assert answer["error"]["param"] == "store"
    answer = await call(client, "/responses", respond(background=True, stream=True), 400)
    assert answer["error"]["code"] == "unsupported_by_mock"
    assert (await ledger(client))["billed"]["input_tokens"] == 0


async def test_storage_is_bounded() -> None:
    book = Ledger()
    store = stored.ResponseStore(book, limit=3)
    plan = Plan(id="", model="m", created=0, billed=Usage(5, 7), per_choice=7, choices=1,
                capped=False, usage=True)
    for i in range(5):
        store.keep(stored.Stored(dataclasses.replace(plan, id=f"resp_{i}"), []))
    assert len(store) == 3
    assert store.get("resp_1") is None and store.previous_tokens("resp_1") is None
    assert store.previous_tokens("resp_4") == 12
    assert stored.STORED_LIMIT == 10_000


# -- 8. late answers ----------------------------------------------------------------------------


async def test_a_late_answer_is_billed_though_the_client_gave_up(client: MockClient) -> None:
    body = chat(max_tokens=9, metadata={"mock_delay_s": "0.3"})
    with pytest.raises(TimeoutError):
        await client.post("/v1/chat/completions", data=orjson.dumps(body),
                          timeout=ClientTimeout(0.1))
    entry = (await ledger(client))["entries"][-1]
    assert entry["state"] == "billed" and entry["billed"]["output_tokens"] == 9
    await asyncio.sleep(0.4)
    stats = await get(client, "/mock/stats")
    assert stats["ledger"]["entries"][-1]["delivered"] is False
    assert stats["output_tokens"] == 0  # never reported to anyone
    assert stats["faulted"] == {"/chat/completions": 1}


async def test_late_answers_still_answer(client: MockClient) -> None:
    body = respond(max_output_tokens=3, metadata={"mock_delay_s": "0.1"})
    started = asyncio.get_running_loop().time()
    answer = await call(client, "/responses", body)
    assert asyncio.get_running_loop().time() - started >= 0.1
    assert answer["usage"]["output_tokens"] == 3
    assert (await ledger(client))["entries"][-1]["delivered"] is True


# -- 9. the ledger -----------------------------------------------------------------------------


async def test_ledger_keeps_what_each_request_carried_and_billed(client: MockClient) -> None:
    await call(client, "/chat/completions", chat(max_tokens=7, n=2, service_tier="flex"))
    await call(client, "/chat/completions", chat(n=0), 400)
    await call(client, "/chat/completions", chat(metadata={"mock_fault": "503"}), 503)
    await call(client, "/embeddings", {"model": "text-embedding-3-small", "input": "x"})
    await events(client, "/chat/completions", chat(max_completion_tokens=3))
    book = await ledger(client)
    first, refused, failed, vectors, streamed = book["entries"]
    assert first == {
        "id": first["id"], "path": "/chat/completions", "model": "gpt-4o-mini",
        "caps": {"max_tokens": 7}, "n": 2, "best_of": None, "max_tool_calls": None,
        "service_tier": "flex", "background": None, "stream": False, "state": "billed",
        "delivered": True, "usage": first["usage"], "billed": first["billed"],
        "tier": None, "batch_id": None,
    }
    assert first["usage"]["completion_tokens"] == 14 == first["billed"]["output_tokens"]
    assert (refused["state"], refused["billed"], refused["n"]) == ("refused", None, 0)
    assert (failed["state"], failed["billed"]) == ("failed", None)
    assert vectors["usage"] == {"prompt_tokens": PROMPT, "total_tokens": PROMPT}
    assert (streamed["stream"], streamed["caps"], streamed["delivered"]) == (
        True, {"max_completion_tokens": 3}, True)
    assert streamed["usage"]["completion_tokens"] == 3  # billed, though the stream had no usage
    assert book["billed"]["input_tokens"] == 3 * PROMPT
    assert book["billed"]["output_tokens"] == 14 + 3
    assert book["dropped"] == 0
    await client.post("/v1/mock/reset")
    assert (await ledger(client))["entries"] == []


async def test_the_ledger_is_bounded_but_its_totals_are_not() -> None:
    book = Ledger(limit=2)
    for i in range(3):
        entry = book.open(_entry(i))
        book.bill(entry, {}, {"input_tokens": 10})
    assert [e["id"] for e in book.as_json()["entries"]] == ["1", "2"]
    assert book.as_json()["dropped"] == 1
    assert book.as_json()["billed"]["input_tokens"] == 30


def _entry(i: int) -> LedgerEntry:
    return LedgerEntry(id=str(i), path="/chat/completions", model="m", caps={}, n=None,
                       best_of=None, max_tool_calls=None, service_tier=None, background=None,
                       stream=False)


async def test_worst_routes_check_the_key(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(make_app(tokens=stub_tokens, worst=True, require_key="k"))
    resp = await client.get("/v1/responses/resp_x")
    assert resp.status == 401


async def test_the_polite_mock_has_neither_ledger_nor_stored_responses(
    aiohttp_client: ClientFactory,
) -> None:
    client = await aiohttp_client(make_app(tokens=stub_tokens))
    assert "ledger" not in await get(client, "/mock/stats")
    answer = await call(client, "/responses", respond(previous_response_id="resp_nope"))
    assert answer["usage"]["input_tokens"] == PROMPT and "service_tier" not in answer
    assert (await client.get(f"/v1/responses/{answer['id']}")).status in (404, 405)


def test_the_cli_flag_starts_a_worst_mode_process(tmp_path: Path) -> None:
    with procs.mock_upstream(tmp_path, worst=True) as mock:
        request = urllib.request.Request(
            f"{mock.url}/v1/chat/completions", data=orjson.dumps(chat("o3")),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            usage = orjson.loads(answer.read())["usage"]
        with urllib.request.urlopen(f"{mock.url}/v1/mock/stats", timeout=10) as answer:
            stats = orjson.loads(answer.read())
    assert usage["completion_tokens"] == 100_000
    assert stats["ledger"]["billed"]["output_tokens"] == 100_000

