"""Upstream failures and vanished clients: reservations released or charged, never left."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from gateway.app import create_app
from gateway.appkeys import STORE
from gateway.cost.model import Filter
from gateway.log import FIELDS
from gateway.runtime import Runtime
from gateway.settings.watch import load_live
from tests.proxy.conftest import KEYS, MakeHarness, config_text

BUDGET = """
  - {name: daily, tenant: acme, max_tokens_per_day: 100000}
"""


def faulty(fault: str, **fields: object) -> dict[str, object]:
    return {"metadata": {"mock_fault": fault}, **fields}


async def test_upstream_500_releases_and_charges_nothing(gateway: MakeHarness) -> None:
    gw = await gateway(BUDGET)
    resp = await gw.chat(**faulty("500"))
    assert resp.status == 500
    assert (await resp.json())["error"]["message"]
    assert await gw.in_flight() == 0
    assert (await gw.store.query(Filter())).entry_count == 0
    ok = await gw.chat(max_tokens=5)
    assert float(ok.headers["x-budget-usage-ratio"]) < 0.001


async def test_upstream_timeout_is_504_and_charged_its_reservation(
    gateway: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    """The upstream bills work whose answer never came back: the reservation is charged, as
    an estimate, never $0."""
    gw = await gateway(BUDGET)  # timeout_s: 2
    caplog.set_level(logging.INFO, "gateway.access")
    resp = await gw.chat(max_tokens=20, **faulty("timeout:5"))
    assert resp.status == 504
    body = await resp.json()
    assert body["error"]["code"] == "upstream_timeout"
    assert await gw.in_flight() == 0
    summary = await gw.store.query(Filter())
    assert summary.entry_count == 1 and summary.total_output_tokens == 20
    lines = [getattr(r, FIELDS) for r in caplog.records if r.name == "gateway.access"]
    assert lines[-1]["usage"] == "estimate" and lines[-1]["output_tokens"] == 20


async def test_upstream_reset_mid_stream_charges_the_reservation(gateway: MakeHarness) -> None:
    """An upstream stream that broke off is a lost answer: what it billed is unknown, so the
    reservation is charged (the client received 4 tokens of up to 20)."""
    gw = await gateway(BUDGET)
    resp = await gw.chat(max_tokens=20, stream=True, **faulty("reset_after:4"))
    text = await resp.text()
    assert '"error"' in text, "the client is told the stream broke off"
    assert await gw.in_flight() == 0
    summary = await gw.store.query(Filter())
    assert summary.entry_count == 1
    assert gw.stats.produced_output_tokens == 4
    assert summary.total_output_tokens == 20


async def test_a_handler_cancelled_mid_stream_is_charged_its_reservation(
    gateway: MakeHarness
) -> None:
    """The test server cancels a handler whose client left (``gateway serve`` does not: it
    reads the stream on to its usage, as the fault suite checks). A cancelled exchange never
    saw what the upstream billed, reasoning included: its reservation is charged."""
    gw = await gateway(BUDGET)
    url = gw.client.make_url("/v1/chat/completions")
    body = {"model": "gpt-4o-mini", "max_tokens": 50, "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
            "metadata": {"mock_fault": "slow_stream:0.02"}}
    async with aiohttp.ClientSession() as session:
        resp = await session.post(url, json=body,
                                  headers={"Authorization": f"Bearer {KEYS['ci']}"})
        received = 0
        async for _ in resp.content.iter_any():
            received += 1
            if received >= 3:
                break
        resp.close()  # the client vanishes mid-stream
    for _ in range(200):
        if await gw.in_flight() == 0:
            break
        await asyncio.sleep(0.01)
    assert await gw.in_flight() == 0
    summary = await gw.store.query(Filter())
    assert summary.entry_count == 1
    assert summary.total_output_tokens == 50, summary
    assert summary.total_input_tokens > 0


async def test_missing_usage_is_counted_not_free(gateway: MakeHarness) -> None:
    gw = await gateway(BUDGET)
    resp = await gw.chat(max_tokens=7, **faulty("no_usage"))
    assert resp.status == 200
    summary = await gw.store.query(Filter())
    assert summary.total_output_tokens == 7 and summary.total_input_tokens > 0
    stream = await gw.chat(max_tokens=6, stream=True, **faulty("no_usage"))
    await stream.read()
    summary = await gw.store.query(Filter())
    assert summary.total_output_tokens == 13


async def test_a_last_event_without_its_blank_line_still_reaches_the_client(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}

    async def sloppy(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        chunk = {"choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": None}
        await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await resp.write(b"data: " + orjson.dumps({"choices": [], "usage": usage}))  # no \n\n
        return resp

    upstream = web.Application()
    upstream.router.add_post("/v1/chat/completions", sloppy)
    server = await aiohttp_server(upstream)
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(str(server.make_url("")).rstrip("/")))
    client = await aiohttp_client(create_app(load_live(str(path), Runtime.build),
                                             watch_interval_s=None))
    body = {"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "hi"}]}
    resp = await client.post("/v1/chat/completions", json=body,
                             headers={"Authorization": f"Bearer {KEYS['ci']}"})
    text = await resp.text()
    assert '"total_tokens":5' in text
    summary = await client.app[STORE].query(Filter())
    assert (summary.total_input_tokens, summary.total_output_tokens) == (3, 2)


async def test_upstream_error_without_an_openai_body_is_said_in_that_shape(
    gateway: MakeHarness,
) -> None:
    """A plain-text 503 (a proxy's page, an overloaded balancer): the client still gets
    OpenAI-shaped JSON, with the upstream's status and Retry-After, and nothing is charged."""
    gw = await gateway(BUDGET)
    resp = await gw.chat(**faulty("503,plain,retry_after:4"))
    assert resp.status == 503 and resp.headers["Retry-After"] == "4"
    assert resp.headers["Content-Type"].startswith("application/json")
    error = (await resp.json())["error"]
    assert error["code"] == "upstream_error" and "HTTP 503" in error["message"]
    assert await gw.in_flight() == 0
    assert (await gw.store.query(Filter())).entry_count == 0


async def test_a_settlement_cut_off_by_a_cancellation_is_made_once(
    gateway: MakeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settlement runs in the handler's own task (no task per request); a cancellation
    that lands mid-write (here: the client leaves while the store is slow) settles it again in
    a task the cancellation cannot reach, and settling is idempotent: charged once."""
    gw = await gateway(BUDGET)
    store, entered = gw.store, asyncio.Event()
    real_settle = store.settle
    calls: list[str] = []

    async def slow_first(tenant: str, rid: str, *args: Any, **kwargs: Any) -> bool:
        calls.append(rid)
        if len(calls) == 1:
            entered.set()
            await asyncio.Event().wait()  # until cancelled, before the store hears of it
        return await real_settle(tenant, rid, *args, **kwargs)

    monkeypatch.setattr(store, "settle", slow_first)
    url = gw.client.make_url("/v1/chat/completions")
    body = {"model": "gpt-4o-mini", "max_tokens": 20,
            "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as session:
        post = asyncio.ensure_future(session.post(
            url, json=body, headers={"Authorization": f"Bearer {KEYS['ci']}"}))
        await asyncio.wait_for(entered.wait(), 10)
        post.cancel()  # the client leaves: the test server cancels the handler
        with pytest.raises(asyncio.CancelledError):
            await post
    for _ in range(200):
        if await gw.in_flight() == 0:
            break
        await asyncio.sleep(0.01)
    assert await gw.in_flight() == 0
    assert len(calls) == 2 and calls[0] == calls[1]
    summary = await gw.store.query(Filter())
    assert summary.entry_count == 1, summary
