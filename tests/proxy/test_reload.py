"""Hot reload as ops meet it: a good edit applies at once, a bad one changes nothing."""

from __future__ import annotations

import asyncio

from gateway.cost.model import Filter
from tests.proxy.conftest import MakeHarness, config_text

WAIT_STEPS = 200  # x 0.02 s


async def _until(predicate: object) -> None:
    for _ in range(WAIT_STEPS):
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def test_good_edit_applies_bad_edit_keeps_serving(gateway: MakeHarness) -> None:
    gw = await gateway(watch_interval_s=0.02)
    mock_url = gw.config.current.settings.upstreams[0].base_url.removesuffix("/v1")
    assert (await gw.chat(max_tokens=10)).status == 200

    gw.path.write_text(config_text(mock_url, """
  - {name: tiny, tenant: acme, max_tokens_per_hour: 5}
"""))
    await _until(lambda: len(gw.config.current.settings.budgets) == 1)
    assert (await gw.chat(max_tokens=10)).status == 429

    good = gw.path.read_text()
    gw.path.write_text(good.replace("max_tokens_per_hour: 5", "max_tokens_per_hour: -5"))
    await _until(lambda: gw.config.reload_failures >= 1)
    assert gw.config.current.settings.budgets[0].max_tokens_per_hour == 5
    denied = await gw.chat(max_tokens=10)
    assert denied.status == 429, "the last good configuration still serves"


async def test_reservations_in_flight_survive_a_reload(gateway: MakeHarness) -> None:
    gw = await gateway("""
  - {name: day, tenant: acme, max_tokens_per_day: 100000}
""", watch_interval_s=0.02)
    mock_url = gw.config.current.settings.upstreams[0].base_url.removesuffix("/v1")
    slow = asyncio.ensure_future(
        gw.chat(max_tokens=20, stream=True, metadata={"mock_fault": "slow_stream:0.02"})
    )
    await _until(lambda: gw.stats.last_request is not None)
    gw.path.write_text(config_text(mock_url, """
  - {name: renamed, tenant: acme, max_tokens_per_day: 50000}
"""))
    await _until(lambda: gw.config.current.settings.budgets[0].name == "renamed")
    resp = await slow
    assert resp.status == 200
    await resp.read()
    await _until(lambda: True)
    assert await gw.in_flight() == 0
    assert (await gw.store.query(Filter())).total_output_tokens == 20
