"""A budget store that cannot be reached: fail closed, with an OpenAI-shaped 503."""

from __future__ import annotations

from gateway.store.base import StoreError
from tests.proxy.conftest import MakeHarness


async def test_store_down_rejects_with_503_and_forwards_nothing(gateway: MakeHarness) -> None:
    gw = await gateway("""
  - {name: daily, tenant: acme, max_tokens_per_day: 1000}
""")

    async def down(*args: object, **kwargs: object) -> object:
        raise StoreError("connection refused")

    gw.store.reserve = down  # type: ignore[method-assign]
    resp = await gw.chat(max_tokens=5)
    assert resp.status == 503
    error = (await resp.json())["error"]
    assert error["code"] == "budget_store_unavailable" and "retry" in error["message"]
    assert sum(gw.stats.requests.values()) == 0
