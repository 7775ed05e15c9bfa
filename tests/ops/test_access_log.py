"""One JSON access-log line per request, with what ops need to find a request again."""

from __future__ import annotations

import logging

import orjson
import pytest

from gateway.log import FIELDS, JsonFormatter
from tests import leaks
from tests.proxy.conftest import MakeHarness

OPS_TOKEN = "ops-access-log-token-0123456789"
leaks.SECRETS.add(OPS_TOKEN)


async def test_one_json_line_per_request_with_its_figures(
    gateway: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await gateway("""
  - {name: daily, tenant: acme, max_tokens_per_day: 100000}
""")
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        resp = await gw.chat(max_tokens=7, headers={"x-request-id": "trace-abc-123"})
        denied = await gw.chat(max_tokens=7, model="gpt-4.1")
    assert resp.status == 200 and denied.status == 403
    lines = [orjson.loads(JsonFormatter().format(r)) for r in caplog.records
             if r.name == "gateway.access"]
    assert len(lines) == 2
    ok, refused = lines
    assert ok["request_id"] == "trace-abc-123" == resp.headers["x-request-id"]
    forwarded = gw.stats.last_request
    assert forwarded is not None and forwarded["headers"]["x-request-id"] == "trace-abc-123"
    usage = (await resp.json())["usage"]
    assert ok["status"] == 200 and ok["tenant"] == "acme" and ok["key"] == "acme-ci"
    assert ok["model"] == "gpt-4o-mini" and ok["decision"] == "allow"
    assert ok["input_tokens"] == usage["prompt_tokens"] and ok["output_tokens"] == 7
    assert ok["cost_usd"] > 0 and ok["overhead_ms"] >= 0 and ok["upstream_ms"] > 0
    assert ok["duration_ms"] >= ok["overhead_ms"]
    assert refused["status"] == 403 and refused["decision"] == "-"
    assert refused["request_id"] == denied.headers["x-request-id"] != "trace-abc-123"
    assert all(getattr(r, FIELDS, None) for r in caplog.records if r.name == "gateway.access")


async def test_the_line_keeps_the_clients_model_name_and_metrics_the_price_it_resolved_to(
    gateway: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    """The client's name (its first 200 characters) is for the log; the metric label is the
    configured price it matched, so a new name every request adds no series."""
    gw = await gateway(extra=f'ops: {{token: "{OPS_TOKEN}"}}')
    long_name = "gpt-4o-2024-" + "x" * 3000
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        resp = await gw.chat(max_tokens=3, key="other", model=long_name)
    assert resp.status == 200
    (line,) = [orjson.loads(JsonFormatter().format(r)) for r in caplog.records
               if r.name == "gateway.access"]
    assert line["model"] == long_name[:200]
    metrics = await gw.client.get("/metrics", headers={"Authorization": f"Bearer {OPS_TOKEN}"})
    text = await metrics.text()
    assert "x" * 20 not in text
    assert 'model="gpt-4o-2024-*"' in text
