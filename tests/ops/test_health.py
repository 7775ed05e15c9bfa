"""Liveness and readiness as a load balancer or Kubernetes probes them: answered without a key,
and saying nothing about the configuration file, addresses or the store's error; what is wrong
goes to the log."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from gateway.store.base import StoreError
from tests.proxy.conftest import MakeHarness

STORE_ERROR = "redis: Error 111 connecting to 10.20.30.40:6379. Connection refused."


async def test_healthz_and_readyz_say_only_ok(gateway: MakeHarness) -> None:
    gw = await gateway()
    live = await gw.client.get("/healthz")
    assert live.status == 200 and await live.json() == {"status": "ok"}
    ready = await gw.client.get("/readyz")
    assert ready.status == 200 and await ready.json() == {"status": "ready"}


async def test_readyz_with_the_store_down_says_unavailable_and_logs_why(
    gateway: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await gateway()

    async def unreachable(*args: Any, **kwargs: Any) -> None:
        raise StoreError(STORE_ERROR)

    gw.store.ping = unreachable  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="gateway.ops.routes"):
        ready = await gw.client.get("/readyz")
    text = await ready.text()
    assert ready.status == 503 and await ready.json() == {"status": "unavailable"}
    assert "10.20.30.40" not in text and "gateway.yaml" not in text
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any(STORE_ERROR in r.getMessage() for r in warnings)
