"""/metrics shows every tenant's figures, so no tenant reads it (issue 13): refused on the public
port unless ``ops.token`` is set and sent; with ``ops.listen``, served on that address only (the
token still required when set). No tenant key, of any role, opens it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import leaks
from tests.procs import Proc, free_port, gateway_process, mock_upstream
from tests.proxy.conftest import KEYS, MakeHarness

TOKEN = "ops-access-token-0123456789abcdef"
leaks.SECRETS.add(TOKEN)
TENANT_KEYS = {f"Bearer {key}" for key in KEYS.values()}
NOT_THE_TOKEN = [None, "", "Bearer", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}",
                 f"{TOKEN}", f"Bearer {TOKEN.upper()}", "Bearer \u00e9\u00e9", *TENANT_KEYS]


def _headers(authorization: str | None) -> dict[str, str]:
    return {} if authorization is None else {"Authorization": authorization}


def _error(body: dict[str, object], code: str) -> str:
    error = body["error"]
    assert isinstance(error, dict) and error["code"] == code, body
    assert set(error) == {"message", "type", "param", "code"}
    message: str = error["message"]
    return message


async def test_without_ops_settings_metrics_are_refused_on_the_public_port(
    gateway: MakeHarness
) -> None:
    gw = await gateway()
    assert (await gw.chat()).status == 200
    for authorization in [None, *TENANT_KEYS]:
        resp = await gw.client.get("/metrics", headers=_headers(authorization))
        assert resp.status == 403
        message = _error(await resp.json(), "metrics_not_configured")
        assert "ops.token" in message and "ops.listen" in message


async def test_with_a_token_metrics_answer_that_token_only(gateway: MakeHarness) -> None:
    gw = await gateway(extra=f'ops: {{token: "{TOKEN}"}}')
    for authorization in NOT_THE_TOKEN:
        resp = await gw.client.get("/metrics", headers=_headers(authorization))
        assert resp.status == 401, authorization
        assert resp.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
        assert TOKEN not in _error(await resp.json(), "invalid_ops_token")
    for authorization in (f"Bearer {TOKEN}", f"bearer {TOKEN}", f"Bearer  {TOKEN} "):
        resp = await gw.client.get("/metrics", headers=_headers(authorization))
        assert resp.status == 200 and resp.content_type == "text/plain"
        assert "gateway_requests_total" in await resp.text()


# -- ops.listen: a real gateway process with a second address --------------------------------

CONFIG = """
upstreams:
  mock: {{base_url: "{mock}/v1", api_key: "k"}}
pricing:
  gpt-4o-mini: {{input: 0.15, output: 0.60}}
tenants:
  acme:
    keys: [{{name: app, sha256: "{sha}", role: owner}}]
operators: [{{name: platform, sha256: "{operator_sha}"}}]
ops: {ops}
"""
SECRET = "sk-ops-access-tenant-0123456789abcdef"
OPERATOR = "sk-ops-access-operator-0123456789abcdef"
leaks.SECRETS.update([SECRET, OPERATOR])


@dataclass
class Served:
    gateway: Proc
    ops_url: str
    token_set: bool


@pytest.fixture(params=["token", "no token"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    ops_port = free_port()
    listen = f'listen: "127.0.0.1:{ops_port}"'
    ops = f'{{{listen}, token: "{TOKEN}"}}' if request.param == "token" else f"{{{listen}}}"
    with mock_upstream(tmp_path) as mock:
        config = tmp_path / "gateway.yaml"
        config.write_text(CONFIG.format(
            mock=mock.url, ops=ops, sha=hashlib.sha256(SECRET.encode()).hexdigest(),
            operator_sha=hashlib.sha256(OPERATOR.encode()).hexdigest()))
        with gateway_process(config, tmp_path / "gateway.log") as gateway:
            yield Served(gateway, f"http://127.0.0.1:{ops_port}", request.param == "token")


async def _get(session: aiohttp.ClientSession, url: str,
               authorization: str | None = None) -> tuple[int, str]:
    async with session.get(url, headers=_headers(authorization)) as resp:
        return resp.status, await resp.text()


async def test_with_ops_listen_metrics_are_served_on_that_address_only(served: Served) -> None:
    tenant = f"Bearer {SECRET}"
    async with aiohttp.ClientSession() as session:
        body = {"model": "gpt-4o-mini", "max_tokens": 3,
                "messages": [{"role": "user", "content": "hi"}]}
        async with session.post(f"{served.gateway.url}/v1/chat/completions", json=body,
                                headers={"Authorization": tenant}) as resp:
            assert resp.status == 200
        operator = f"Bearer {OPERATOR}"
        for authorization in (None, tenant, f"Bearer {TOKEN}", operator):  # public port: never
            status, text = await _get(session, f"{served.gateway.url}/metrics", authorization)
            assert status == 403 and "metrics_not_public" in text
            assert served.ops_url.rsplit(":", 1)[1] not in text  # nor where it is
        status, text = await _get(session, f"{served.ops_url}/metrics", f"Bearer {TOKEN}")
        assert status == 200
        chat = {"tenant": "acme", "model": "gpt-4o-mini", "route": "/v1/chat/completions",
                "status": "200"}
        assert [s.value for family in text_string_to_metric_families(text)
                for s in family.samples
                if s.name == "gateway_requests_total" and s.labels == chat] == [1.0]
        for authorization in (None, tenant):
            status, text = await _get(session, f"{served.ops_url}/metrics", authorization)
            assert status == (401 if served.token_set else 200), text
        status, text = await _get(session, f"{served.ops_url}/metrics", operator)
        assert status == 200 and "gateway_requests_total" in text, "an operator's key opens it"
        for probe in ("/healthz", "/readyz"):  # on both addresses, for either kind of probe
            for base in (served.gateway.url, served.ops_url):
                assert (await _get(session, base + probe))[0] == 200
        status, _ = await _get(session, f"{served.ops_url}/v1/models", tenant)
        assert status == 404  # the operations address serves nothing else
