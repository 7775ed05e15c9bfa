"""An operator's key opens /metrics wherever ops.token would, and on the public port operators
alone are enough to serve it (to them only); ops.token keeps working beside them. No tenant
key, of any role, opens it."""

from __future__ import annotations

import pytest

from tests.proxy.conftest import KEYS, OPERATOR_KEYS, OPERATORS, Harness, MakeHarness

TOKEN = "ops-operators-token-0123456789abcdef"
TENANT_KEYS = [f"Bearer {key}" for key in KEYS.values()]
OPERATOR_BEARERS = [f"Bearer {key}" for key in OPERATOR_KEYS.values()]


async def _get(gw: Harness, authorization: str | None) -> tuple[int, dict[str, str], str]:
    headers = {} if authorization is None else {"Authorization": authorization}
    resp = await gw.client.get("/metrics", headers=headers)
    return resp.status, dict(resp.headers), await resp.text()


@pytest.mark.parametrize(("extra", "opens", "needs"), [
    (OPERATORS, OPERATOR_BEARERS, "needs an operator's key"),
    (OPERATORS + f'ops: {{token: "{TOKEN}"}}', [*OPERATOR_BEARERS, f"Bearer {TOKEN}"],
     "needs the operations token or an operator's key"),
], ids=["operators", "operators-and-token"])
async def test_operator_keys_open_metrics_on_the_public_port(
        gateway: MakeHarness, extra: str, opens: list[str], needs: str) -> None:
    gw = await gateway(extra=extra)
    assert (await gw.chat()).status == 200
    for authorization in opens:
        status, headers, text = await _get(gw, authorization)
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        assert 'gateway_requests_total{' in text
    for authorization in (None, "Bearer sk-nobody-0123456789", *TENANT_KEYS):
        status, headers, text = await _get(gw, authorization)
        assert status == 401, authorization
        assert headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
        assert needs in text and TOKEN not in text and "invalid_ops_token" in text
