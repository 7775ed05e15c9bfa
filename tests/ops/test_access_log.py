"""One JSON access-log line per request, with what ops need to find a request again."""

from __future__ import annotations

import datetime as dt
import io
import logging
import sys
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import log as gateway_log
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


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """``gateway.log.configure`` writing to a buffer, its handler alone on the root logger
    while the test runs (pytest's own captures taken off); all put back after."""
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    gateway_log.configure()
    try:
        yield stream
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_a_line_written_directly_is_the_line_the_logging_module_writes(
    configured: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The access line skips the logging module when ``configure``'s JSON handler is its only
    destination; it is then the same line, scrubbed alike, as through the module (taken when
    any other handler listens, as a test's capture does)."""
    root, logger = logging.getLogger(), logging.getLogger("gateway.access")
    (handler,) = [h for h in root.handlers if isinstance(h, gateway_log.JsonHandler)]
    monkeypatch.setattr(root, "handlers", [handler])  # pytest's captures, added since: off
    formatted = 0
    real_format = JsonFormatter.format

    def counted(self: JsonFormatter, record: logging.LogRecord) -> str:
        nonlocal formatted
        formatted += 1
        return real_format(self, record)

    monkeypatch.setattr(JsonFormatter, "format", counted)
    fields: list[dict[str, object]] = [
        {"status": 200, "model": "gpt-4o", "ratio": 0.25, "stream": False, "reason": None},
        {"model": "x Bearer sk-secret-0123", "status": 401},  # scrubbed
        {"model": "bad \udcff byte"},  # a lone surrogate: escaped
        {"tokens": 2**70},  # past what orjson writes: as text
    ]
    for extra in fields:
        gateway_log.info_line(logger, extra, "%s %s %d", "POST", "/v1/x?Bearer sk-0", 200)
        root.addHandler(listener := logging.NullHandler())  # another destination: the module
        gateway_log.info_line(logger, extra, "%s %s %d", "POST", "/v1/x?Bearer sk-0", 200)
        root.removeHandler(listener)
    assert formatted == len(fields)  # only the second line of each pair was a record
    lines = [orjson.loads(line) for line in configured.getvalue().splitlines()]
    assert len(lines) == 2 * len(fields)
    for direct, through in zip(lines[::2], lines[1::2], strict=True):
        assert direct.pop("ts") and through.pop("ts")
        assert direct == through
    assert "sk-secret" not in configured.getvalue() and "sk-0" not in configured.getvalue()
    assert lines[0]["msg"] == "POST /v1/x?Bearer **** 200" and lines[0]["level"] == "info"
    assert lines[2]["model"] == "x Bearer ****" and lines[4]["model"] == "bad \\udcff byte"
    logger.setLevel(logging.WARNING)  # a level that drops the line drops it on both paths
    try:
        gateway_log.info_line(logger, fields[0], "dropped")
    finally:
        logger.setLevel(logging.NOTSET)
    assert len(configured.getvalue().splitlines()) == 2 * len(fields)


@given(st.one_of(st.floats(0, 4e9), st.integers(0, 4 * 10**9).map(lambda s: s + 0.9995),
                 st.integers(0, 4 * 10**9).map(lambda s: s + 0.9999995)))
def test_the_line_time_is_what_isoformat_writes(created: float) -> None:
    """The access line's ``ts``, made once per second and then per millisecond, is the text
    ``datetime.isoformat(timespec="milliseconds")`` gives, rounding included."""
    expected = dt.datetime.fromtimestamp(created, dt.UTC).isoformat(timespec="milliseconds")
    assert gateway_log.iso_ms(created) == expected
