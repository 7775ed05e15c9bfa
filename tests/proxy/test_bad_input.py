"""Whatever a client sends, it gets an OpenAI-shaped 4xx, and nothing reaches the upstream."""

from __future__ import annotations

from typing import Any

import pytest

from tests.proxy.conftest import KEYS, MakeHarness

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
AUTH = {"Authorization": f"Bearer {KEYS['ci']}"}

CASES: list[tuple[str, str, dict[str, Any], int, str | None]] = [
    # (name, path, request kwargs, status, error code)
    ("no body", "/v1/chat/completions", {"headers": AUTH}, 400, None),
    ("invalid json", "/v1/chat/completions", {"headers": AUTH, "data": b"{nope"}, 400, None),
    ("json array", "/v1/chat/completions", {"headers": AUTH, "json": [CHAT]}, 400, None),
    ("json string", "/v1/chat/completions", {"headers": AUTH, "json": "hi"}, 400, None),
    ("missing model", "/v1/chat/completions",
     {"headers": AUTH, "json": {"messages": []}}, 400, None),
    ("model not a string", "/v1/chat/completions",
     {"headers": AUTH, "json": {**CHAT, "model": 4}}, 400, None),
    ("messages not a list", "/v1/chat/completions",
     {"headers": AUTH, "json": {**CHAT, "messages": "hi"}}, 400, None),
    ("message not an object", "/v1/chat/completions",
     {"headers": AUTH, "json": {**CHAT, "messages": ["hi"]}}, 400, None),
    ("max_tokens a string", "/v1/chat/completions",
     {"headers": AUTH, "json": {**CHAT, "max_tokens": "10"}}, 400, None),
    ("max_tokens zero", "/v1/chat/completions",
     {"headers": AUTH, "json": {**CHAT, "max_tokens": 0}}, 400, None),
    ("stream not a bool", "/v1/chat/completions",
     {"headers": AUTH, "json": {**CHAT, "stream": "yes"}}, 400, None),
    ("n a bool", "/v1/chat/completions",
     {"headers": AUTH, "json": {**CHAT, "n": True}}, 400, None),
    ("embeddings without input", "/v1/embeddings",
     {"headers": AUTH, "json": {"model": "text-embedding-3-small"}}, 400, None),
    ("body over the limit", "/v1/chat/completions",
     {"headers": AUTH, "json": {**CHAT, "pad": "x" * 5000}}, 413, "request_too_large"),
    ("no key", "/v1/chat/completions", {"json": CHAT}, 401, "invalid_api_key"),
    ("unknown key", "/v1/chat/completions",
     {"headers": {"Authorization": "Bearer sk-nope-nope-nope"}, "json": CHAT}, 401,
     "invalid_api_key"),
    ("not bearer", "/v1/chat/completions",
     {"headers": {"Authorization": "Basic abc"}, "json": CHAT}, 401, "invalid_api_key"),
    ("model not allowed", "/v1/chat/completions",
     {"headers": AUTH, "json": {**CHAT, "model": "gpt-4.1"}}, 403, "model_not_allowed"),
    ("model with no price", "/v1/chat/completions",
     {"headers": {"Authorization": f"Bearer {KEYS['other']}"},
      "json": {**CHAT, "model": "my-private-model"}}, 400, "model_not_priced"),
    ("unknown path", "/v1/fine_tuning/jobs", {"headers": AUTH, "json": {}}, 404, "unknown_url"),
    ("unknown nested path", "/v1/chat/completions/extra", {"headers": AUTH, "json": CHAT}, 404,
     "unknown_url"),
    ("wrong method", "/v1/chat/completions", {"headers": AUTH, "method": "GET"}, 405, None),
]


@pytest.mark.parametrize(("name", "path", "kwargs", "status", "code"), CASES,
                         ids=[c[0] for c in CASES])
async def test_bad_input_is_refused_before_the_upstream(
    gateway: MakeHarness, name: str, path: str, kwargs: dict[str, Any], status: int,
    code: str | None,
) -> None:
    gw = await gateway()
    kwargs = dict(kwargs)
    method = kwargs.pop("method", "POST")
    resp = await gw.client.request(method, path, **kwargs)
    assert resp.status == status, await resp.text()
    body = await resp.json()
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and error["type"]
    if code is not None:
        assert error["code"] == code
    assert sum(gw.stats.requests.values()) + sum(gw.stats.errors.values()) == 0
    assert resp.headers["x-request-id"]


async def test_secrets_never_echoed(gateway: MakeHarness) -> None:
    gw = await gateway()
    secret = "sk-this-is-a-long-unknown-secret-key"
    resp = await gw.client.post("/v1/chat/completions", json=CHAT,
                                headers={"Authorization": f"Bearer {secret}"})
    assert secret not in await resp.text()
