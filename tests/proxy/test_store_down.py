"""A budget store that cannot be reached: reject fails closed with a 503; allow lets requests
through and buffers their usage until the store returns, so nothing charged is lost."""

from __future__ import annotations

from typing import Any

from gateway.appkeys import BUFFER
from gateway.cost.model import Filter
from gateway.store.base import StoreError
from tests.proxy.conftest import Harness, MakeHarness

BUDGET = """
  - {name: daily, tenant: acme, max_tokens_per_day: 100000}
"""


def take_down(gw: Harness) -> dict[str, bool]:
    """Makes every store call fail while ``state["down"]``; the real store stays underneath."""
    state = {"down": True}
    store: Any = gw.store
    for name in ("reserve", "settle", "record", "mark_once", "peek"):
        real = getattr(store, name)

        async def flaky(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
            if state["down"]:
                raise StoreError("connection refused")
            return await _real(*args, **kwargs)

        setattr(store, name, flaky)
    return state


async def test_reject_answers_503_and_forwards_nothing(gateway: MakeHarness) -> None:
    gw = await gateway(BUDGET)
    take_down(gw)
    resp = await gw.chat(max_tokens=5)
    assert resp.status == 503
    error = (await resp.json())["error"]
    assert error["code"] == "budget_store_unavailable" and "retry" in error["message"]
    assert sum(gw.stats.requests.values()) == 0


async def test_allow_forwards_and_buffers_usage_until_the_store_returns(
    gateway: MakeHarness,
) -> None:
    gw = await gateway(BUDGET, extra="on_store_error: allow")
    state = take_down(gw)
    statuses = [(await gw.chat(max_tokens=5)).status for _ in range(3)]
    assert statuses == [200, 200, 200]
    buffer = gw.app[BUFFER]
    assert len(buffer) == 3
    assert await buffer.flush() == 0, "still down: nothing written, nothing lost"
    state["down"] = False
    assert await buffer.flush() == 3
    summary = await gw.store.query(Filter(tenant_id="acme"))
    assert summary.entry_count == 3
    assert summary.total_input_tokens == gw.stats.input_tokens
    assert summary.total_output_tokens == gw.stats.output_tokens == 15
    ok = await gw.chat(max_tokens=5)
    ratio = float(ok.headers["x-budget-usage-ratio"])
    assert ratio * 100000 >= 4 * 5, "the buffered usage was charged to the budget too"


async def test_store_lost_after_admission_keeps_the_usage(gateway: MakeHarness) -> None:
    gw = await gateway(BUDGET)
    state = take_down(gw)
    state["down"] = False
    real_settle: Any = gw.store.settle

    async def settle_fails(*args: Any, **kwargs: Any) -> Any:
        state["down"] = True
        return await real_settle(*args, **kwargs)

    gw.store.settle = settle_fails  # type: ignore[method-assign]
    assert (await gw.chat(max_tokens=5)).status == 200
    buffer = gw.app[BUFFER]
    assert len(buffer) == 1
    gw.store.settle = real_settle  # type: ignore[method-assign]
    state["down"] = False
    assert await buffer.flush() == 1
    assert (await gw.store.query(Filter())).total_output_tokens == 5
    assert await gw.in_flight() == 0
