"""An operator's key is no tenant's: every /v1 route refuses it with a 403 saying where it
belongs, before anything is read, reserved or forwarded."""

from __future__ import annotations

import pytest

from gateway.proxy import batches
from gateway.proxy.endpoints import Endpoint
from tests.proxy.conftest import OPERATOR_KEYS, OPERATORS, MakeHarness

ROUTES = [
    *(("POST", f"/v1{endpoint.value}") for endpoint in Endpoint),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/gpt-4o-mini"),
    ("GET", "/v1/responses/resp_1"),
    ("DELETE", "/v1/responses/resp_1"),
    ("POST", "/v1/responses/resp_1/cancel"),
    ("GET", "/v1/responses/resp_1/input_items"),
    *((method, path.replace("{id}", "x_1")) for method, path, _ in batches.ROUTES),
]


@pytest.mark.parametrize("role", sorted(OPERATOR_KEYS))
async def test_the_proxy_refuses_operator_keys_saying_why(gateway: MakeHarness, role: str
                                                          ) -> None:
    gw = await gateway(extra=OPERATORS)
    body = {"model": "gpt-4o-mini", "max_tokens": 5, "input": "hi", "prompt": "hi",
            "messages": [{"role": "user", "content": "hi"}]}
    for method, path in ROUTES:
        resp = await gw.client.request(method, path, json=body, headers={
            "Authorization": f"Bearer {OPERATOR_KEYS[role]}"})
        assert resp.status == 403, (method, path)
        error = (await resp.json())["error"]
        assert error["code"] == "operator_key_not_for_proxy"
        assert error["type"] == "invalid_request_error"
        assert f"'ops-{role}' is an operator key" in error["message"]
        assert "/api/client/v1" in error["message"] and "tenant key" in error["message"]
        assert OPERATOR_KEYS[role] not in await resp.text()
    assert not gw.stats.requests and not gw.stats.errors, "nothing reached the upstream"
    assert await gw.in_flight() == 0
    assert (await gw.chat()).status == 200, "tenant keys are served as before"


async def test_an_unknown_key_is_still_a_401(gateway: MakeHarness) -> None:
    gw = await gateway(extra=OPERATORS)
    resp = await gw.client.get("/v1/models", headers={"Authorization": "Bearer sk-nobody-123"})
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "invalid_api_key"


async def test_without_operators_configured_an_operator_secret_is_unknown(
        gateway: MakeHarness) -> None:
    gw = await gateway()
    resp = await gw.client.get("/v1/models",
                               headers={"Authorization": f"Bearer {OPERATOR_KEYS['editor']}"})
    assert resp.status == 401
