"""Issue 21: a request far from every limit it meets reserves its input's cheap bound (its
UTF-8 bytes) instead of its exact token count; near a limit, or before any answer was seen, the
count. Either way it is charged its exact count, the upstream's usage or the gateway's."""

from __future__ import annotations

import dataclasses
import logging

import orjson
import pytest

from gateway.cost.model import Filter
from gateway.cost.pricing import Price
from gateway.cost.windows import DAY
from gateway.log import FIELDS
from gateway.proxy.bounds import Defaults
from gateway.proxy.endpoints import Endpoint
from gateway.proxy.estimate import estimate
from gateway.proxy.headroom import Headroom
from gateway.store.base import Line, ReserveResult
from tests.proxy.conftest import MakeHarness

ROOMY = "  - {name: daily, tenant: acme, max_tokens_per_day: 100000000}\n"
NEAR = "  - {name: daily, tenant: acme, max_tokens_per_day: 20000}\n"  # < 1,000 cheap bounds


def _lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [getattr(r, FIELDS) for r in caplog.records if r.name == "gateway.access"]


async def test_far_from_its_limits_a_request_reserves_its_bytes_and_is_charged_its_count(
    gateway: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await gateway(ROOMY)
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        assert (await gw.chat(max_tokens=7)).status == 200  # no answer seen yet: counted
        assert (await gw.chat(max_tokens=7)).status == 200  # far from the limit: its bytes
        missing = await gw.chat(max_tokens=7, metadata={"mock_fault": "no_usage"})
        assert missing.status == 200  # charged from the gateway's exact count
    counted, cheap, no_usage = _lines(caplog)
    assert isinstance(counted["reserved_tokens"], int)
    assert cheap["reserved_tokens"] == no_usage["reserved_tokens"] > counted["reserved_tokens"]
    assert counted["input_tokens"] == cheap["input_tokens"] == no_usage["input_tokens"]
    assert no_usage.get("usage") == "estimate"
    summary = await gw.store.query(Filter())
    assert summary.total_input_tokens == 3 * counted["input_tokens"]  # type: ignore[operator]


async def test_near_a_limit_every_request_reserves_its_count(
    gateway: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await gateway(NEAR)
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        for _ in range(3):
            assert (await gw.chat(max_tokens=7)).status == 200
    reserved = {line["reserved_tokens"] for line in _lines(caplog)}
    assert len(reserved) == 1


async def test_the_cheap_bound_is_an_upper_bound_with_the_same_output_bounds() -> None:
    """Deferred only where the output bounds do not depend on the count: a request without an
    output cap, whose context window the input would shorten, is counted at once."""
    price = dataclasses.replace(Price.per_million(0.15, output=0.6), context_window=1_000,
                                max_output_tokens=800)
    text = "the budget gateway counts every token " * 10
    body = {"model": "gpt-4o-mini", "max_tokens": 50,
            "messages": [{"role": "user", "content": text}]}
    exact = await estimate(Endpoint.CHAT, body, price, Defaults())
    cheap = await estimate(Endpoint.CHAT, body, price, Defaults(), cheap_first=True)
    assert exact.counted is None and cheap.counted is not None
    assert cheap.input_tokens >= len(orjson.dumps(text)) - 2 > exact.input_tokens
    assert cheap.bounds == exact.bounds and await cheap.counted() == exact
    uncapped = {k: v for k, v in body.items() if k != "max_tokens"}  # cap: 800 for the count,
    at_once = await estimate(Endpoint.CHAT, uncapped, price, Defaults(), cheap_first=True)
    assert at_once == await estimate(Endpoint.CHAT, uncapped, price, Defaults())  # not 1,000
    assert at_once.counted is None and at_once.bounds.cap == 800  # less the bytes
    assert 1_000 - cheap.visible < 800


def test_headroom_remembers_as_many_lines_as_the_store_keeps_counters() -> None:
    headroom = Headroom()
    lines = [Line(f"{{acme}}:b:daily:{i}", DAY, limit=1_000_000, amount=10) for i in range(3)]
    assert not headroom.roomy(lines[:1])  # never answered: counted
    for line in lines:
        headroom.note([line], ReserveResult(ok=True, used=(0,)), most=2)
    assert len(headroom) == 2 and not headroom.roomy(lines[:1])  # the oldest forgotten
    assert headroom.roomy(lines[1:]) and headroom.roomy([])
    near = Line(lines[2].key, DAY, limit=1_000_000, amount=1_000)  # 1,000 x 1,000 > left
    assert not headroom.roomy([near])
