"""Liveness and readiness as a load balancer or Kubernetes probes them."""

from __future__ import annotations

from tests.proxy.conftest import MakeHarness


async def test_healthz_and_readyz(gateway: MakeHarness) -> None:
    gw = await gateway()
    live = await gw.client.get("/healthz")
    assert live.status == 200 and (await live.json())["status"] == "ok"
    ready = await gw.client.get("/readyz")
    body = await ready.json()
    assert ready.status == 200 and body["status"] == "ready"
    assert body["config"].endswith("gateway.yaml")
