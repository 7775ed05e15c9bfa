"""Hostile input: whatever bytes a tenant sends, the gateway answers a well-formed 4xx (or meters
the request), never crashes, never lets anything reach the upstream unmetered, and never passes
the client's credentials or hop-by-hop headers on.

Every case counts itself in ``TRIED``; the last test prints the total.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from gateway.cost.model import Filter
from tests.proxy.conftest import KEYS, UPSTREAM_KEY, Harness, MakeHarness

LIMIT = 4096  # max_body_bytes in tests/proxy/conftest.py
SMALL = """
  - {name: small, tenant: acme, max_tokens_per_day: 5000}
"""
CHAT = {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
AUTH = {"Authorization": f"Bearer {KEYS['ci']}"}
TRIED: list[str] = []


async def assert_refused(gw: Harness, resp: Any, status: int | None = None) -> dict[str, Any]:
    """An OpenAI-shaped 4xx, and the upstream saw nothing."""
    text = await resp.text()
    assert 400 <= resp.status < 500, text
    if status is not None:
        assert resp.status == status, text
    error = orjson.loads(text)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert upstream_calls(gw) == 0
    return dict(error)


def upstream_calls(gw: Harness) -> int:
    stats = gw.stats
    return sum(stats.requests.values()) + sum(stats.faulted.values()) + sum(stats.errors.values())


async def assert_metered(gw: Harness) -> None:
    """Whatever reached the upstream was charged: one record per upstream call."""
    summary = await gw.store.query(Filter())
    assert summary.entry_count == upstream_calls(gw)
    assert await gw.in_flight() == 0


async def raw_http(gw: Harness, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One request written byte for byte (no client-side path normalisation), one answer."""
    assert gw.client.port is not None
    reader, writer = await asyncio.open_connection(gw.client.host, gw.client.port)
    try:
        writer.write(head.replace("\n", "\r\n").encode("latin-1") + b"\r\n" + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)  # safety bound, the server closes
    finally:
        writer.close()
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split()[1]), headers, payload


def sized_body(size: int) -> bytes:
    """A valid chat body of exactly ``size`` bytes."""
    base = orjson.dumps({**CHAT, "user": ""})
    pad = size - len(base)
    assert pad >= 0
    return orjson.dumps({**CHAT, "user": "x" * pad})


# -- size ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [LIMIT - 1, LIMIT, LIMIT + 1])
async def test_bodies_at_the_size_limit(gateway: MakeHarness, size: int) -> None:
    gw = await gateway(SMALL)
    TRIED.append(f"body of {size} bytes")
    body = sized_body(size)
    assert len(body) == size
    resp = await gw.client.post("/v1/chat/completions", data=body,
                                headers={**AUTH, "Content-Type": "application/json"})
    if size > LIMIT:
        error = await assert_refused(gw, resp, 413)
        assert error["code"] == "request_too_large"
    else:
        assert resp.status == 200, await resp.text()
        await assert_metered(gw)


async def test_chunked_body_over_the_limit_is_413(gateway: MakeHarness) -> None:
    gw = await gateway(SMALL)
    TRIED.append("chunked body over the limit")
    body = sized_body(LIMIT + 1)

    async def chunks() -> Any:
        for i in range(0, len(body), 1000):
            yield body[i:i + 1000]

    resp = await gw.client.post("/v1/chat/completions", data=chunks(), headers=AUTH)
    await assert_refused(gw, resp, 413)


async def test_content_length_lying_low_is_refused(gateway: MakeHarness) -> None:
    """A Content-Length shorter than what follows: the rest is a second (garbage) request."""
    gw = await gateway(SMALL)
    TRIED.append("content-length shorter than the body")
    body = orjson.dumps(CHAT)
    status, _, payload = await raw_http(
        gw, f"POST /v1/chat/completions HTTP/1.1\nHost: x\nAuthorization: Bearer {KEYS['ci']}\n"
            f"Content-Type: application/json\nContent-Length: 10\nConnection: close\n", body)
    assert status == 400, payload
    assert upstream_calls(gw) == 0


# -- structure -------------------------------------------------------------------------------


DEEP: list[tuple[str, bytes]] = [
    ("100,000 [", b"[" * 100_000),
    ("100,000 {\"a\":", b'{"a":' * 100_000),
    ("100,000 [ inside messages", b'{"model":"gpt-4o-mini","messages":' + b"[" * 100_000),
    ("100,000 closed [", b"[" * 100_000 + b"]" * 100_000),
    ("100,000 closed levels in a tool", b'{"model":"gpt-4o-mini","messages":[],"tools":'
     + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    ("100,000 closed levels in metadata, streamed", b'{"model":"gpt-4o-mini","stream":true,'
     b'"messages":[],"metadata":{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}}"),
    ("256 levels", b'{"model":"gpt-4o-mini","messages":[],"x":' + b"[" * 255 + b"]" * 255
     + b"}"),
    ("1,000 levels in a tool", b'{"model":"gpt-4o-mini","messages":[],"tools":'
     + b"[" * 1000 + b"]" * 1000 + b"}"),
    ("300 levels in metadata, streamed", b'{"model":"gpt-4o-mini","stream":true,'
     b'"messages":[{"role":"user","content":"hi"}],"metadata":' + b"[" * 300 + b"]" * 300 + b"}"),
    ("300 levels in a message", b'{"model":"gpt-4o-mini","messages":[{"role":"user",'
     b'"content":"hi","x":' + b"[" * 300 + b"]" * 300 + b"}]}"),
    ("1,000 levels in content", b'{"model":"gpt-4o-mini","messages":[{"role":"user",'
     b'"content":' + b"[" * 1000 + b"]" * 1000 + b"}]}"),
]


@pytest.mark.parametrize(("name", "body"), DEEP, ids=[d[0] for d in DEEP])
async def test_deep_nesting_is_a_400(gateway: MakeHarness, name: str, body: bytes) -> None:
    gw = await gateway(SMALL, max_body_bytes=1 << 20)
    TRIED.append(f"deep nesting: {name}")
    resp = await gw.client.post("/v1/chat/completions", data=body, headers=AUTH)
    await assert_refused(gw, resp, 400)


HUGE = 10**30
NUMBERS: list[tuple[str, str, dict[str, Any], int]] = [
    # (name, path, fields over the base body, status): 400 refused as a type, 429 bounded
    ("max_tokens 10**30", "/chat/completions", {"max_tokens": HUGE}, 400),
    ("max_tokens 2**63", "/chat/completions", {"max_tokens": 2**63}, 429),
    ("max_tokens 2**64", "/chat/completions", {"max_tokens": 2**64}, 400),
    ("max_tokens 2**63-1", "/chat/completions", {"max_tokens": 2**63 - 1}, 429),
    ("max_completion_tokens 2**63", "/chat/completions", {"max_completion_tokens": 2**63}, 429),
    ("n 2**63 x max_tokens 2**63", "/chat/completions", {"max_tokens": 2**63, "n": 2**63}, 429),
    ("n 2**63, default output", "/chat/completions", {"max_tokens": None, "n": 2**63}, 429),
    ("n 10**30", "/chat/completions", {"n": HUGE}, 400),
    ("max_tokens -1", "/chat/completions", {"max_tokens": -1}, 400),
    ("max_tokens -2**63", "/chat/completions", {"max_tokens": -(2**63)}, 400),
    ("max_tokens 0", "/chat/completions", {"max_tokens": 0}, 400),
    ("n 0", "/chat/completions", {"n": 0}, 400),
    ("n -5", "/chat/completions", {"n": -5}, 400),
    ("max_tokens 5.0", "/chat/completions", {"max_tokens": 5.0}, 400),
    ("max_tokens 5.5", "/chat/completions", {"max_tokens": 5.5}, 400),
    ("max_tokens 1e308", "/chat/completions", {"max_tokens": 1e308}, 400),
    ("max_tokens true", "/chat/completions", {"max_tokens": True}, 400),
    ("max_tokens false", "/chat/completions", {"max_tokens": False}, 400),
    ("n true", "/chat/completions", {"n": True}, 400),
    ("n 2.0", "/chat/completions", {"n": 2.0}, 400),
    ("max_tokens a list", "/chat/completions", {"max_tokens": [5]}, 400),
    ("max_tokens an object", "/chat/completions", {"max_tokens": {"v": 5}}, 400),
    ("best_of 2**63", "/completions", {"best_of": 2**63}, 429),
    ("best_of -1", "/completions", {"best_of": -1}, 400),
    ("best_of true", "/completions", {"best_of": True}, 400),
    ("max_output_tokens 2**63", "/responses", {"max_output_tokens": 2**63}, 429),
    ("max_output_tokens -1", "/responses", {"max_output_tokens": -1}, 400),
    ("max_output_tokens 1.5", "/responses", {"max_output_tokens": 1.5}, 400),
]


def base_body(path: str) -> dict[str, Any]:
    if path == "/completions":
        return {"model": "gpt-4o-mini", "prompt": "hi", "max_tokens": 5}
    if path == "/responses":
        return {"model": "gpt-4o-mini", "input": "hi"}
    return dict(CHAT)


@pytest.mark.parametrize("clamp", [False, True], ids=["reject", "clamp"])
async def test_hostile_numbers_are_refused_or_bounded(gateway: MakeHarness, clamp: bool) -> None:
    """Every case in one gateway, concurrently; a clamping budget lowers what fits instead."""
    budget = SMALL.rstrip().rstrip("}") + (", clamp_max_tokens: true}\n" if clamp else "}\n")
    gw = await gateway(budget)

    async def one(case: tuple[str, str, dict[str, Any], int]) -> tuple[str, int, str]:
        name, path, fields, _ = case
        TRIED.append(f"number ({'clamp' if clamp else 'reject'}): {name}")
        body = {k: v for k, v in {**base_body(path), **fields}.items() if v is not None}
        resp = await gw.client.post(f"/v1{path}", data=orjson.dumps(body)
                                    if all(abs(v) < 2**64 for v in _ints(body))
                                    else _dumps_big(body), headers=AUTH)
        return name, resp.status, await resp.text()

    results = await asyncio.gather(*(one(case) for case in NUMBERS))
    for (name, status, text), (_, _, _, wanted) in zip(results, NUMBERS, strict=True):
        assert status < 500, (name, text)
        if clamp and wanted == 429:
            # clamped to what is left (forwarded, metered below), or nothing is left
            assert status in (200, 429), (name, text)
            continue
        assert status == wanted, (name, text)
        assert set(orjson.loads(text)["error"]) == {"message", "type", "param", "code"}
    if clamp:
        await assert_metered(gw)
        summary = await gw.store.query(Filter())
        assert summary.total_input_tokens + summary.total_output_tokens <= 5000
    else:
        assert upstream_calls(gw) == 0


def _ints(value: Any) -> Iterator[int]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _ints(item)
    elif isinstance(value, int) and not isinstance(value, bool):
        yield value


def _dumps_big(body: dict[str, Any]) -> bytes:
    """orjson refuses integers over 64 bits; the stdlib writes them as the client would."""
    import json

    return json.dumps(body).encode()


# -- encodings and injection -----------------------------------------------------------------


BYTES: list[tuple[str, bytes]] = [
    ("latin-1 byte in a string", b'{"model":"gpt-4o-mini","messages":[{"role":"user",'
     b'"content":"caf\xe9"}]}'),
    ("0xff in the model name", b'{"model":"gpt-4o\xff","messages":[]}'),
    ("lone surrogate escape in the model name", b'{"model":"gpt-4o\\ud800","messages":[]}'),
    ("overlong UTF-8",
     b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"\xc0\xaf"}]}'),
    ("NUL bytes", b'{"model":"gpt-4o-mini\x00","messages":[]}'),
    ("UTF-16 body", '{"model":"gpt-4o-mini","messages":[]}'.encode("utf-16")),
    ("BOM then JSON", b"\xef\xbb\xbf" + orjson.dumps(CHAT)),
]


@pytest.mark.parametrize(("name", "body"), BYTES, ids=[b[0] for b in BYTES])
async def test_bytes_that_are_not_utf8_json_are_refused(
    gateway: MakeHarness, name: str, body: bytes
) -> None:
    gw = await gateway(SMALL)
    TRIED.append(f"encoding: {name}")
    resp = await gw.client.post("/v1/chat/completions", data=body, headers=AUTH)
    await assert_refused(gw, resp, 400)


INJECTED = ["gpt-4o-2024-\r\nX-Evil: 1", "gpt-4o-2024-\nX-Evil: 1", "gpt-4o-2024-\rX-Evil: 1",
            "gpt-4o-2024-\r\n\r\nHTTP/1.1 200 OK"]


@pytest.mark.parametrize("model", INJECTED, ids=["crlf", "lf", "cr", "response splitting"])
async def test_header_injection_in_the_model_name_is_refused(
    gateway: MakeHarness, model: str
) -> None:
    """globex may use any model and ``gpt-4o-2024-*`` would price this one: a control
    character in a model name is a 400 all the same, before pricing, and the upstream never
    sees it; nothing of it reaches a header of the answer."""
    gw = await gateway()
    TRIED.append(f"header injection in the model name: {model!r}")
    for key in ("other", "ci"):  # acme's allow-list would refuse it too: the 400 comes first
        resp = await gw.post("/chat/completions", {**CHAT, "model": model}, key=key)
        error = await assert_refused(gw, resp, 400)
        assert error["param"] == "model" and "U+000" in error["message"]
        assert "X-Evil" not in error["message"]
        assert "x-evil" not in {h.lower() for h in resp.headers}
        assert all("\n" not in v and "\r" not in v for v in resp.headers.values())
    await assert_metered(gw)


# -- paths -----------------------------------------------------------------------------------


PATHS = [
    "/v1/../api/client/v1/budgets",
    "/v1/%2e%2e/api/client/v1/budgets",
    "/v1/%2E%2E/%2E%2E/v1/files",
    "/v1/chat%2fcompletions",
    "/v1/chat%2Fcompletions",
    "/v1/chat/completions/../../v1/files",
    "/v1/chat/completions/..%2f..%2fv1%2ffiles",
    "/v1//chat/completions",
    "/v1/./chat/completions",
    "/v1/chat/./completions/",
    "/v1/chat/completions%00",
    "/v1/chat/completions%20",
    "/v1/chat/completions;x=1",
    "/v1/chat/completions#frag",
    "//v1/chat/completions",
    "/V1/chat/completions",
    "/v1/CHAT/completions",
    "/v1/files/../chat/completions",
    "/v1/%2e/chat/completions",
    "/v1/chat/completions\\..\\..\\files",
    "/v1/mock/stats",
    "/v1/mock/reset",
    "http://evil.example/v1/chat/completions",
    "*",
]


async def test_paths_never_reach_the_upstream_unmetered(gateway: MakeHarness) -> None:
    """Each path either is a metered route (forwarded and charged), or is answered here."""
    gw = await gateway(SMALL)
    body = orjson.dumps(CHAT)
    for path in PATHS:
        TRIED.append(f"path: {path}")
        before = upstream_calls(gw)
        head = (f"POST {path} HTTP/1.1\nHost: x\nAuthorization: Bearer {KEYS['ci']}\n"
                f"Content-Type: application/json\nContent-Length: {len(body)}\n"
                "Connection: close\n")
        status, _, payload = await raw_http(gw, head, body)
        assert status < 500, (path, payload)
        if status >= 400:
            if path != "*":  # in-process, aiohttp's test server answers this one itself; the
                # served gateway answers JSON (tests/e2e/test_abuse_http.py, "POST *")
                error = orjson.loads(payload)["error"]
                assert error["message"], path
            assert upstream_calls(gw) == before, path
        await assert_metered(gw)
        assert gw.stats.last_request is None or gw.stats.last_request["path"] in (
            "/v1/chat/completions",
        ), path


# -- keys ------------------------------------------------------------------------------------


def one_off(secret: str, at: int) -> str:
    swapped = "a" if secret[at] != "a" else "b"
    return secret[:at] + swapped + secret[at + 1:]


async def test_keys_differing_in_one_character_are_401(gateway: MakeHarness) -> None:
    gw = await gateway(SMALL)
    secret = KEYS["ci"]
    forged = [one_off(secret, 0), one_off(secret, len(secret) // 2),
              one_off(secret, len(secret) - 1), secret[:-1], secret + "x", "x" + secret,
              secret.upper(), secret[::-1],
              f"{secret}\x00", f"{secret} {secret}", f"{secret},{KEYS['other']}"]
    assert secret not in forged
    headers_tried = [f"Bearer {k}" for k in forged] + [secret, f"Token {secret}", f"Basic {secret}",
                                                       f"Bearer{secret}", "Bearer", "Bearer  "]
    for value in headers_tried:
        TRIED.append("forged key")
        try:
            resp = await gw.client.post("/v1/chat/completions", json=CHAT,
                                        headers={"Authorization": value})
        except ValueError:  # the client itself refuses the header (a NUL): nothing sent
            continue
        error = await assert_refused(gw, resp, 401)
        assert error["code"] == "invalid_api_key"
        assert secret not in error["message"]
    assert (await gw.chat()).status == 200, "the real key still works"


# -- headers ---------------------------------------------------------------------------------


CLIENT_HEADERS = {
    "Proxy-Authorization": "Basic cHJveHk6c2VjcmV0",
    "Cookie": "session=tenant-cookie",
    "Connection": "keep-alive, X-Hop-Named",
    "X-Hop-Named": "named-in-connection",
    "Keep-Alive": "timeout=5, max=1000",
    "TE": "trailers",
    "Trailer": "X-Late",
    "Upgrade": "h2c",
    "Proxy-Connection": "keep-alive",
    "X-Forwarded-For": "10.0.0.1",
    "Forwarded": "for=10.0.0.1",
    "Host": "evil.example",
    "OpenAI-Organization": "org-tenant",
    "X-Api-Key": "tenant-side-key",
}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_client_credentials_and_hop_headers_never_reach_the_upstream(
    gateway: MakeHarness, stream: bool
) -> None:
    gw = await gateway(SMALL)
    TRIED.extend(f"header: {h}" for h in CLIENT_HEADERS)
    resp = await gw.chat(headers=CLIENT_HEADERS, stream=stream)
    assert resp.status == 200, await resp.text()
    await resp.read()
    seen = gw.stats.last_request
    assert seen is not None
    received = seen["headers"]
    assert received["authorization"] == f"Bearer {UPSTREAM_KEY}"
    for name, value in CLIENT_HEADERS.items():
        assert received.get(name.lower()) != value, name
    for name in ("proxy-authorization", "cookie", "keep-alive", "te", "trailer", "upgrade",
                 "proxy-connection", "x-hop-named", "x-forwarded-for", "forwarded",
                 "openai-organization", "x-api-key"):
        assert name not in received, name
    assert all(KEYS["ci"] not in v for v in received.values())
    await assert_metered(gw)


async def test_upstream_cookies_reach_neither_clients_nor_other_tenants(
    gateway: MakeHarness,
) -> None:
    gw = await gateway(SMALL, mock_host="localhost")  # a name: cookie jars refuse IP hosts
    TRIED.append("upstream Set-Cookie replayed on another tenant's request")
    for key in ("ci", "other"):
        resp = await gw.chat(headers={"Authorization": f"Bearer {KEYS[key]}"})
        assert resp.status == 200, await resp.text()
        assert "Set-Cookie" not in resp.headers
        await resp.read()
        seen = gw.stats.last_request
        assert seen is not None and "cookie" not in seen["headers"]


async def test_transfer_encoding_from_the_client_is_not_forwarded(gateway: MakeHarness) -> None:
    gw = await gateway(SMALL)
    TRIED.append("header: Transfer-Encoding: chunked")
    body = orjson.dumps(CHAT)
    head = (f"POST /v1/chat/completions HTTP/1.1\nHost: x\nAuthorization: Bearer {KEYS['ci']}\n"
            "Content-Type: application/json\nTransfer-Encoding: chunked\nConnection: close\n")
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    status, _, payload = await raw_http(gw, head, chunked)
    assert status == 200, payload
    seen = gw.stats.last_request
    assert seen is not None and seen["headers"].get("transfer-encoding") is None
    await assert_metered(gw)


async def test_smuggling_with_both_lengths_is_refused(gateway: MakeHarness) -> None:
    gw = await gateway(SMALL)
    TRIED.append("header: Content-Length and Transfer-Encoding together")
    body = orjson.dumps(CHAT)
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    head = (f"POST /v1/chat/completions HTTP/1.1\nHost: x\nAuthorization: Bearer {KEYS['ci']}\n"
            f"Content-Length: {len(chunked)}\nTransfer-Encoding: chunked\nConnection: close\n")
    status, _, payload = await raw_http(gw, head, chunked)
    assert status == 400, payload
    assert upstream_calls(gw) == 0


async def test_zz_hostile_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """Ordered last in this module: how many hostile inputs the tests above tried."""
    assert len(TRIED) >= 150
    with capsys.disabled():
        print(f"\nhostile input suite: {len(TRIED)} hostile inputs tried, "
              "0 crashes, 0 reached the upstream unmetered")
