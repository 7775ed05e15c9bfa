"""The mock upstream: OpenAI shapes, deterministic usage, stats, faults; and a real process
driven by the official openai SDK."""

from __future__ import annotations

import asyncio
import base64
import select
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp import ClientTimeout
from aiohttp.test_utils import TestClient

from gateway.mock.shapes import text_of
from gateway.mock_upstream import make_app
from gateway.proxy.endpoints import Endpoint

PROMPT = 11  # what the stub counter says every request's input is
MockClient = TestClient[Any, Any]
ClientFactory = Callable[..., Awaitable[MockClient]]


def stub_tokens(path: str, body: Mapping[str, Any]) -> int:
    return PROMPT


@pytest.fixture
async def client(aiohttp_client: ClientFactory) -> MockClient:
    return await aiohttp_client(make_app(tokens=stub_tokens))


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], **extra}


def sse(raw: bytes) -> list[tuple[str | None, str]]:
    """(event, data) of each SSE event."""
    events = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((fields.get("event"), fields["data"]))
    return events


def chunks(raw: bytes) -> list[dict[str, Any]]:
    """The JSON chunks of a chat/completions stream, checking it ends with [DONE]."""
    events = sse(raw)
    assert events[-1] == (None, "[DONE]")
    return [orjson.loads(data) for _, data in events[:-1]]


async def post(client: MockClient, path: str, body: Any, **kw: Any) -> aiohttp.ClientResponse:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return await client.post(f"/v1{path}", data=data, **kw)


async def stats(client: MockClient) -> dict[str, Any]:
    resp = await client.get("/v1/mock/stats")
    assert resp.status == 200
    result: dict[str, Any] = await resp.json()
    return result


async def read_until_cut(resp: aiohttp.ClientResponse) -> tuple[bytes, bool]:
    """The body received, and whether it ended cleanly."""
    received = b""
    try:
        async for data in resp.content.iter_any():
            received += data
    except aiohttp.ClientPayloadError:
        return received, False
    return received, True


# -- shapes and usage ------------------------------------------------------------------------


async def test_chat_completion_is_capped_by_max_tokens_times_n(client: MockClient) -> None:
    resp = await post(client, "/chat/completions", chat(max_completion_tokens=5, n=2))
    assert resp.status == 200
    body = await resp.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o-mini"
    assert [c["index"] for c in body["choices"]] == [0, 1]
    for choice in body["choices"]:
        assert choice["message"] == {
            "role": "assistant",
            "content": "hello hello hello hello hello",
            "refusal": None,
            "annotations": [],
        }
        assert choice["finish_reason"] == "length"
        assert choice["logprobs"] is None
    usage = body["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (
        PROMPT,
        10,
        PROMPT + 10,
    )
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0


async def test_chat_without_a_cap_writes_16_tokens_and_stops(client: MockClient) -> None:
    body = await (await post(client, "/chat/completions", chat(max_tokens=None))).json()
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["choices"][0]["message"]["content"] == text_of(16)
    assert body["usage"]["completion_tokens"] == 16


async def test_chat_stream_without_include_usage_has_no_usage(client: MockClient) -> None:
    resp = await post(client, "/chat/completions", chat(max_tokens=4, stream=True))
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    got = chunks(await resp.read())
    assert all("usage" not in c for c in got)
    assert all(c["object"] == "chat.completion.chunk" for c in got)
    assert got[0]["choices"][0]["delta"] == {"role": "assistant"}
    pieces = [
        c["choices"][0]["delta"]["content"] for c in got if "content" in c["choices"][0]["delta"]
    ]
    assert pieces == ["hello", " hello", " hello", " hello"]
    assert got[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "length",
    }
    s = await stats(client)
    assert (s["input_tokens"], s["output_tokens"], s["produced_output_tokens"]) == (0, 0, 4)
    assert s["requests"] == {"/chat/completions": 1}


async def test_chat_stream_with_include_usage_ends_with_a_usage_chunk(client: MockClient) -> None:
    body = chat(max_tokens=3, n=2, stream=True, stream_options={"include_usage": True})
    got = chunks(await (await post(client, "/chat/completions", body)).read())
    *rest, last = got
    assert all(c["usage"] is None and c["choices"] for c in rest)
    assert last["choices"] == []
    assert last["usage"]["prompt_tokens"] == PROMPT
    assert last["usage"]["completion_tokens"] == 6
    text = {0: "", 1: ""}
    for c in rest:
        choice = c["choices"][0]
        text[choice["index"]] += choice["delta"].get("content") or ""
    assert text == {0: text_of(3), 1: text_of(3)}
    s = await stats(client)
    assert (s["input_tokens"], s["output_tokens"], s["cached_tokens"]) == (PROMPT, 6, 0)


async def test_completions_non_stream_and_stream(client: MockClient) -> None:
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": "Say", "max_tokens": 3}
    full = await (await post(client, "/completions", body)).json()
    assert full["object"] == "text_completion"
    assert full["choices"][0]["text"] == text_of(3)
    assert full["choices"][0]["finish_reason"] == "length"
    assert full["usage"]["completion_tokens"] == 3

    streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
    *rest, last = chunks(await (await post(client, "/completions", streamed)).read())
    assert [c["choices"][0]["text"] for c in rest] == ["hello", " hello", " hello"]
    assert [c["choices"][0]["finish_reason"] for c in rest] == [None, None, "length"]
    assert last["choices"] == [] and last["usage"]["total_tokens"] == PROMPT + 3
    s = await stats(client)
    assert (s["input_tokens"], s["output_tokens"]) == (2 * PROMPT, 6)


async def test_embeddings_in_float_and_base64(client: MockClient) -> None:
    body = {"model": "text-embedding-3-small", "input": ["a", "b", "c"]}
    floats = await (await post(client, "/embeddings", body)).json()
    assert floats["object"] == "list"
    assert [d["index"] for d in floats["data"]] == [0, 1, 2]
    assert all(d["object"] == "embedding" and len(d["embedding"]) == 8 for d in floats["data"])
    assert floats["usage"] == {"prompt_tokens": PROMPT, "total_tokens": PROMPT}

    b64 = await (await post(client, "/embeddings", {**body, "encoding_format": "base64"})).json()
    decoded = [list(struct.unpack("<8f", base64.b64decode(d["embedding"]))) for d in b64["data"]]
    assert decoded == [d["embedding"] for d in floats["data"]]

    one = await (
        await post(client, "/embeddings", {**body, "input": [1, 2], "dimensions": 3})
    ).json()
    assert len(one["data"]) == 1 and len(one["data"][0]["embedding"]) == 3
    s = await stats(client)
    assert (s["input_tokens"], s["output_tokens"]) == (3 * PROMPT, 0)


async def test_responses_complete_or_stop_at_max_output_tokens(client: MockClient) -> None:
    body = {"model": "gpt-4o-mini", "input": "hi", "metadata": {"mock_cached_tokens": "4"}}
    done = await (await post(client, "/responses", body)).json()
    assert (done["object"], done["status"], done["incomplete_details"]) == (
        "response",
        "completed",
        None,
    )
    message = done["output"][0]
    assert (message["type"], message["role"], message["status"]) == (
        "message",
        "assistant",
        "completed",
    )
    assert message["content"][0]["text"] == text_of(16)
    assert done["usage"] == {
        "input_tokens": PROMPT,
        "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
        "output_tokens": 16,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": PROMPT + 16,
    }

    capped = await (await post(client, "/responses", {**body, "max_output_tokens": 20})).json()
    assert capped["status"] == "incomplete"
    assert capped["incomplete_details"] == {"reason": "max_output_tokens"}
    assert capped["usage"]["output_tokens"] == 20
    s = await stats(client)
    assert (s["input_tokens"], s["output_tokens"], s["cached_tokens"]) == (2 * PROMPT, 36, 8)


@pytest.mark.parametrize(("cap", "final"), [(None, "completed"), (3, "incomplete")])
async def test_responses_stream_events(client: MockClient, cap: int | None, final: str) -> None:
    body = {"model": "gpt-4o-mini", "input": "hi", "stream": True, "max_output_tokens": cap}
    events = sse(await (await post(client, "/responses", body)).read())
    payloads = [orjson.loads(data) for _, data in events]
    assert all(kind == p["type"] for (kind, _), p in zip(events, payloads, strict=True))
    assert [p["sequence_number"] for p in payloads] == list(range(len(payloads)))
    tokens = 16 if cap is None else cap
    kinds = [p["type"] for p in payloads]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * tokens,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        f"response.{final}",
    ]
    deltas = "".join(p["delta"] for p in payloads if p["type"] == "response.output_text.delta")
    assert deltas == text_of(tokens)
    assert payloads[0]["response"]["usage"] is None
    assert payloads[-1]["response"]["status"] == final
    assert payloads[-1]["response"]["usage"]["output_tokens"] == tokens
    assert payloads[-1]["response"]["output"][0]["content"][0]["text"] == deltas


async def test_cached_tokens_are_capped_at_input(client: MockClient) -> None:
    body = chat(metadata={"mock_cached_tokens": 1000})
    usage = (await (await post(client, "/chat/completions", body)).json())["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == PROMPT
    assert (await stats(client))["cached_tokens"] == PROMPT


async def test_models_list(client: MockClient) -> None:
    body = await (await client.get("/v1/models")).json()
    assert body["object"] == "list"
    assert {"gpt-4o-mini", "text-embedding-3-small"} <= {m["id"] for m in body["data"]}
    assert all(m["object"] == "model" and "created" in m and m["owned_by"] for m in body["data"])


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/chat/completions", b"{not json", None),
        ("/chat/completions", b"[1, 2]", None),
        ("/chat/completions", {"messages": []}, "model"),
        ("/responses", {"model": "", "input": "x"}, "model"),
        ("/chat/completions", chat(max_tokens="5"), "max_tokens"),
        ("/chat/completions", chat(n=0), "n"),
        ("/embeddings", {"model": "m"}, "input"),
        ("/embeddings", {"model": "m", "input": "x", "encoding_format": "hex"}, "encoding_format"),
    ],
)
async def test_bad_requests_get_openai_shaped_400(
    client: MockClient, path: str, body: Any, param: str | None
) -> None:
    resp = await post(client, path, body)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    s = await stats(client)
    assert s["errors"] == {path: 1} and s["requests"] == {}


async def test_require_key(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(make_app(tokens=stub_tokens, require_key="up-key"))
    denied = await post(client, "/chat/completions", chat(), headers={"Authorization": "Bearer x"})
    assert denied.status == 401
    assert (await denied.json())["error"]["code"] == "invalid_api_key"
    assert (await client.get("/v1/models")).status == 401
    ok = await post(client, "/chat/completions", chat(), headers={"Authorization": "Bearer up-key"})
    assert ok.status == 200
    s = await stats(client)
    assert s["errors"] == {"/chat/completions": 1, "/models": 1}
    assert s["last_request"]["headers"]["authorization"] == "Bearer up-key"


async def test_stats_keep_the_last_request_and_reset(client: MockClient) -> None:
    body = chat(stream=True, stream_options={"include_usage": True})
    await (await post(client, "/chat/completions", body, headers={"X-Probe": "1"})).read()
    last = (await stats(client))["last_request"]
    assert (last["method"], last["path"]) == ("POST", "/v1/chat/completions")
    assert last["headers"]["x-probe"] == "1"
    assert last["body"]["stream_options"] == {"include_usage": True}
    assert (await client.post("/mock/reset")).status == 200
    s = await stats(client)
    assert s["requests"] == {} and s["input_tokens"] == 0 and s["last_request"] is None


async def test_default_counter_is_the_gateway_estimate(aiohttp_client: ClientFactory) -> None:
    from gateway.proxy.estimate import count_input_tokens

    client = await aiohttp_client(make_app())
    cases = [
        (Endpoint.CHAT, chat(messages=[{"role": "user", "content": "How many tokens is this?"}])),
        (Endpoint.COMPLETIONS, {"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon a"}),
        (Endpoint.EMBEDDINGS, {"model": "text-embedding-3-small", "input": ["one", "two x"]}),
        (Endpoint.RESPONSES, {"model": "gpt-4o", "input": "Tell me a story", "instructions": "Be"}),
    ]
    for endpoint, body in cases:
        answer = await (await post(client, endpoint.value, body)).json()
        usage = answer["usage"]
        reported = usage.get("prompt_tokens", usage.get("input_tokens"))
        assert reported == count_input_tokens(endpoint, body)[0], endpoint


# -- faults ----------------------------------------------------------------------------------


def fault(spec: str, **extra: Any) -> dict[str, Any]:
    return chat(metadata={"mock_fault": spec}, **extra)


@pytest.mark.parametrize(
    ("spec", "status", "kind"), [("500", 500, "server_error"), ("429", 429, "requests")]
)
async def test_status_faults(client: MockClient, spec: str, status: int, kind: str) -> None:
    resp = await post(client, "/chat/completions", fault(spec))
    assert resp.status == status
    assert (await resp.json())["error"]["type"] == kind
    s = await stats(client)
    assert s["faulted"] == {"/chat/completions": 1} and s["requests"] == {}
    assert (s["input_tokens"], s["output_tokens"]) == (0, 0)


async def test_fault_by_header(client: MockClient) -> None:
    resp = await post(
        client, "/embeddings", {"model": "m", "input": "x"}, headers={"x-mock-fault": "503"}
    )
    assert resp.status == 503


async def test_timeout_fault_delays_the_answer(client: MockClient) -> None:
    started = time.monotonic()
    resp = await post(client, "/chat/completions", fault("timeout:0.3"))
    assert resp.status == 200
    assert time.monotonic() - started >= 0.3
    assert (await stats(client))["input_tokens"] == PROMPT  # answered, so usage was reported


async def test_usage_of_an_answer_the_client_left_before_is_not_reported(
    client: MockClient,
) -> None:
    with pytest.raises(TimeoutError):
        await post(client, "/chat/completions", fault("timeout:0.3"), timeout=ClientTimeout(0.1))
    await asyncio.sleep(0.4)
    s = await stats(client)
    assert s["faulted"] == {"/chat/completions": 1}
    assert (s["input_tokens"], s["output_tokens"], s["produced_output_tokens"]) == (0, 0, 0)


async def test_reset_after_cuts_a_stream_after_k_content_chunks(client: MockClient) -> None:
    body = fault("reset_after:2", max_tokens=5, stream=True, stream_options={"include_usage": True})
    received, clean = await read_until_cut(await post(client, "/chat/completions", body))
    assert not clean
    events = sse(received)
    assert (None, "[DONE]") not in events
    content = [orjson.loads(d)["choices"][0]["delta"].get("content") for _, d in events]
    assert [c for c in content if c] == ["hello", " hello"]
    s = await stats(client)
    assert (s["input_tokens"], s["output_tokens"], s["produced_output_tokens"]) == (0, 0, 2)
    assert s["faulted"] == {"/chat/completions": 1}


async def test_reset_after_past_the_content_still_cuts_before_usage(client: MockClient) -> None:
    body = {"model": "m", "input": "x", "stream": True, "max_output_tokens": 2}
    body["metadata"] = {"mock_fault": "reset_after:9"}
    received, clean = await read_until_cut(await post(client, "/responses", body))
    assert not clean
    kinds = [kind for kind, _ in sse(received)]
    assert kinds[-1] == "response.output_text.delta" and kinds.count(kinds[-1]) == 2
    assert (await stats(client))["output_tokens"] == 0


async def test_reset_after_without_stream_closes_without_answer(client: MockClient) -> None:
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(client, "/chat/completions", fault("reset_after:0"))
    s = await stats(client)
    assert s["faulted"] == {"/chat/completions": 1} and s["produced_output_tokens"] == 0


async def test_no_usage_fault_omits_usage_everywhere(client: MockClient) -> None:
    plain = await (await post(client, "/chat/completions", fault("no_usage"))).json()
    assert "usage" not in plain
    streamed = fault("no_usage", stream=True, stream_options={"include_usage": True})
    got = chunks(await (await post(client, "/chat/completions", streamed)).read())
    assert all("usage" not in c and c["choices"] for c in got)
    resp = {"model": "m", "input": "x", "stream": True, "metadata": {"mock_fault": "no_usage"}}
    last = orjson.loads(sse(await (await post(client, "/responses", resp)).read())[-1][1])
    assert last["type"] == "response.completed" and last["response"]["usage"] is None
    emb = {"model": "m", "input": "x", "metadata": {"mock_fault": "no_usage"}}
    assert "usage" not in await (await post(client, "/embeddings", emb)).json()
    s = await stats(client)
    assert (s["input_tokens"], s["output_tokens"]) == (0, 0)
    assert s["produced_output_tokens"] == 3 * 16
    assert s["unreported_input_tokens"] > 0  # what a gateway must count itself
    assert sum(s["faulted"].values()) == 4


async def test_slow_stream_spaces_the_frames(client: MockClient) -> None:
    body = fault("slow_stream:0.05", max_tokens=3, stream=True)
    started = time.monotonic()
    resp = await post(client, "/chat/completions", body)
    arrivals = []
    async for _ in resp.content:  # one line at a time, as they arrive
        arrivals.append(time.monotonic() - started)
    # role, 3 content, finish and [DONE]: 6 frames, 5 gaps
    assert arrivals[-1] >= 5 * 0.05
    assert (await stats(client))["produced_output_tokens"] == 3


async def test_faults_combine(client: MockClient) -> None:
    body = fault("slow_stream:0.01, reset_after:1", max_tokens=4, stream=True)
    _, clean = await read_until_cut(await post(client, "/chat/completions", body))
    assert not clean
    assert (await stats(client))["produced_output_tokens"] == 1


@pytest.mark.parametrize("spec", ["boom", "timeout:-1", "reset_after:x", "600", "timeout:nan"])
async def test_unknown_fault_is_a_400(client: MockClient, spec: str) -> None:
    resp = await post(client, "/chat/completions", fault(spec))
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "unknown_mock_fault"


# -- a real process and the official SDK -----------------------------------------------------


@pytest.fixture
def mock_process() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", "from gateway.mock_upstream import run; run(port=0)"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "the mock upstream did not start within 30 s"
        line = proc.stdout.readline().strip()
        prefix = "mock upstream listening on "
        assert line.startswith(prefix), line
        yield line.removeprefix(prefix)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _drive_every_endpoint(sdk: openai.OpenAI) -> dict[str, int]:
    """Call every route the way a client would; return the usage the SDK saw."""
    from gateway.proxy.estimate import count_input_tokens

    seen = {"input": 0, "output": 0, "cached": 0}

    def saw(input_tokens: int, output_tokens: int, cached: int = 0) -> None:
        seen["input"] += input_tokens
        seen["output"] += output_tokens
        seen["cached"] += cached

    messages: list[Any] = [{"role": "user", "content": "What is a budget?"}]
    done = sdk.chat.completions.create(
        model="gpt-4o-mini", messages=messages, max_tokens=7, metadata={"mock_cached_tokens": "3"}
    )
    assert done.choices[0].message.content == text_of(7)
    assert done.choices[0].finish_reason == "length"
    assert done.usage is not None and done.usage.prompt_tokens_details is not None
    body = {"model": "gpt-4o-mini", "messages": messages}
    assert done.usage.prompt_tokens == count_input_tokens(Endpoint.CHAT, body)[0]
    saw(done.usage.prompt_tokens, done.usage.completion_tokens, 3)

    quiet = list(sdk.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True))
    assert all(c.usage is None for c in quiet)
    assert "".join(c.choices[0].delta.content or "" for c in quiet) == text_of(16)

    loud = list(
        sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=messages,
            max_completion_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert loud[-1].choices == [] and loud[-1].usage is not None
    assert "".join(c.choices[0].delta.content or "" for c in loud[:-1]) == text_of(5)
    saw(loud[-1].usage.prompt_tokens, loud[-1].usage.completion_tokens)

    text = sdk.completions.create(model="gpt-3.5-turbo-instruct", prompt="Once", max_tokens=2)
    assert text.choices[0].text == text_of(2) and text.usage is not None
    saw(text.usage.prompt_tokens, text.usage.completion_tokens)

    vectors = sdk.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert [len(d.embedding) for d in vectors.data] == [8, 8]
    assert vectors.data[0].embedding[0] == 0.125
    saw(vectors.usage.prompt_tokens, 0)

    response = sdk.responses.create(model="gpt-4o-mini", input="Hello", max_output_tokens=16)
    assert response.status == "incomplete" and response.output_text == text_of(16)
    assert response.usage is not None
    saw(response.usage.input_tokens, response.usage.output_tokens)

    events = list(sdk.responses.create(model="gpt-4o-mini", input="Hello", stream=True))
    assert events[-1].type == "response.completed"
    final = events[-1].response
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == final.output_text == text_of(16)
    assert final.usage is not None
    saw(final.usage.input_tokens, final.usage.output_tokens)

    assert "gpt-4o-mini" in {m.id for m in sdk.models.list()}
    return seen


def test_official_sdk_against_a_real_process(mock_process: str) -> None:
    with openai.OpenAI(base_url=mock_process, api_key="x", max_retries=0) as sdk:
        seen = _drive_every_endpoint(sdk)
    with urllib.request.urlopen(f"{mock_process}/mock/stats", timeout=10) as answer:
        totals = orjson.loads(answer.read())
    assert (totals["input_tokens"], totals["output_tokens"], totals["cached_tokens"]) == (
        seen["input"],
        seen["output"],
        seen["cached"],
    )
    assert totals["requests"] == {
        "/chat/completions": 3,
        "/completions": 1,
        "/embeddings": 1,
        "/responses": 2,
        "/models": 1,
    }
    assert totals["last_request"]["headers"]["authorization"] == "Bearer x"
