"""The request path end to end, in process: what is charged, what is reserved, what is said."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp import ClientResponse, web

from gateway.clock import FakeClock
from gateway.cost.model import Filter
from gateway.cost.windows import HOUR
from tests.proxy.conftest import KEYS, UPSTREAM_KEY, MakeHarness


async def test_chat_is_forwarded_with_the_gateway_key_and_charged_exactly(
    gateway: MakeHarness,
) -> None:
    gw = await gateway("""
  - {name: daily, tenant: acme, max_tokens_per_day: 100000, max_cost_per_day: 1.0}
""")
    resp = await gw.chat(max_tokens=12)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["usage"]["completion_tokens"] == 12
    assert float(resp.headers["x-budget-usage-ratio"]) > 0
    assert resp.headers["x-request-id"]
    forwarded = gw.stats.last_request
    assert forwarded is not None
    assert forwarded["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    summary = await gw.store.query(Filter(tenant_id="acme"))
    assert summary.total_input_tokens == body["usage"]["prompt_tokens"] == gw.stats.input_tokens
    assert summary.total_output_tokens == 12 == gw.stats.output_tokens
    expected = (body["usage"]["prompt_tokens"] * 0.15 + 12 * 0.60) / 1e6
    assert abs(summary.total_cost - expected) < 1e-9
    assert await gw.in_flight() == 0


async def test_streaming_usage_hidden_unless_asked_and_charged_either_way(
    gateway: MakeHarness,
) -> None:
    gw = await gateway()
    hidden = await gw.chat(max_tokens=5, stream=True)
    text = await hidden.text()
    assert hidden.status == 200 and text.endswith("data: [DONE]\n\n")
    assert '"usage":{' not in text.replace(" ", "")
    forwarded = gw.stats.last_request
    assert forwarded is not None and forwarded["body"]["stream_options"] == {"include_usage": True}
    shown = await gw.chat(max_tokens=5, stream=True, stream_options={"include_usage": True})
    assert '"usage":{' in (await shown.text()).replace(" ", "")
    summary = await gw.store.query(Filter(tenant_id="acme"))
    assert summary.entry_count == 2 and summary.total_output_tokens == 10


async def test_two_hundred_at_once_exactly_twenty_pass(gateway: MakeHarness) -> None:
    gw = await gateway()
    probe = await (await gw.chat(max_tokens=10)).json()
    per_request = probe["usage"]["total_tokens"]
    gw2 = await gateway(f"""
  - {{name: twenty, tenant: acme, max_tokens_per_hour: {20 * per_request}}}
""")
    results = await asyncio.gather(*(gw2.chat(max_tokens=10) for _ in range(200)))
    statuses = [r.status for r in results]
    assert statuses.count(200) == 20 and statuses.count(429) == 180
    denied = await next(r for r in results if r.status == 429).json()
    assert denied["error"]["type"] == "budget_exceeded"
    assert denied["error"]["code"] == "budget_exceeded"
    assert "twenty" in denied["error"]["message"]
    summary = await gw2.store.query(Filter(tenant_id="acme"))
    assert summary.total_input_tokens + summary.total_output_tokens == 20 * per_request
    assert gw2.stats.requests["/chat/completions"] == 20
    assert await gw2.in_flight() == 0


async def test_throttle_holds_until_the_window_frees(gateway: MakeHarness) -> None:
    clock = FakeClock()
    gw = await gateway("""
  - {name: slow, tenant: acme, max_tokens_per_hour: 30, action: throttle, max_wait_s: 4000}
""", extra="limits: {max_wait_s: 4000}", clock=clock)  # above the default cap of 600 s
    first = await gw.chat(max_tokens=10)
    assert first.status == 200
    held = asyncio.ensure_future(gw.chat(max_tokens=10))
    for _ in range(50):
        await asyncio.sleep(0.01)
    assert not held.done(), "the second request is held, not refused"
    clock.advance(HOUR.length_s)
    for _ in range(50):
        await asyncio.sleep(0.01)
    assert not held.done(), "an hour on, the first request's minute counts: it may hold younger use"
    clock.advance(HOUR.width)  # now all of that bucket is over an hour old
    resp = await asyncio.wait_for(held, 5)
    assert resp.status == 200
    assert gw.stats.requests["/chat/completions"] == 2


async def _denied_by_an_hourly_throttle(gateway: MakeHarness) -> ClientResponse:
    gw = await gateway("""
  - {name: slow, tenant: acme, max_tokens_per_hour: 30, action: throttle, max_wait_s: 5}
""", clock=FakeClock())
    assert (await gw.chat(max_tokens=10)).status == 200
    denied = await gw.chat(max_tokens=10)
    assert denied.status == 429
    return denied


async def test_throttle_past_max_wait_is_denied_with_retry_after(gateway: MakeHarness) -> None:
    denied = await _denied_by_an_hourly_throttle(gateway)
    retry_after = int(denied.headers["Retry-After"])
    assert HOUR.length_s <= retry_after <= HOUR.length_s + HOUR.width, "never early"


async def test_an_hourly_denial_lets_the_client_retry(gateway: MakeHarness) -> None:
    denied = await _denied_by_an_hourly_throttle(gateway)
    assert "x-should-retry" not in denied.headers


async def test_alert_action_passes_with_header_and_fires_once(
    gateway: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await gateway("""
  - {name: watch, tenant: acme, max_tokens_per_hour: 50, action: alert, alert_threshold: 0.5}
""")
    with caplog.at_level(logging.WARNING, logger="gateway.ops.alerts"):
        responses = [await gw.chat(max_tokens=10) for _ in range(4)]
    assert [r.status for r in responses] == [200] * 4
    alerts = [r.headers.get("x-budget-alert") for r in responses]
    assert alerts[0] is None
    assert all(a and a.startswith("watch:max_tokens_per_hour:") for a in alerts[1:])
    fired = [r for r in caplog.records if "budget alert" in r.getMessage()]
    # one crossing of the 0.5 threshold, one of 100%: each reported once
    assert len(fired) == 2
    assert float(responses[-1].headers["x-budget-usage-ratio"]) > 1


async def test_clamp_lowers_max_tokens_to_what_fits(gateway: MakeHarness) -> None:
    gw = await gateway("""
  - {name: tight, tenant: acme, max_tokens_per_hour: 40, clamp_max_tokens: true}
""")
    first = await (await gw.chat(max_tokens=10)).json()
    used = first["usage"]["total_tokens"]
    clamped = await gw.chat(max_tokens=100)
    assert clamped.status == 200
    fit = 40 - used - first["usage"]["prompt_tokens"]
    assert clamped.headers["x-budget-clamped-max-tokens"] == str(fit)
    forwarded = gw.stats.last_request
    assert forwarded is not None and forwarded["body"]["max_tokens"] == fit
    assert (await gw.store.query(Filter())).total_input_tokens + sum(
        [used - first["usage"]["prompt_tokens"], fit]
    ) == 40


async def test_over_a_monthly_limit_the_client_is_told_not_to_retry(gateway: MakeHarness) -> None:
    gw = await gateway("""
  - {name: month, tenant: acme, max_cost_per_month: 0.000001}
""")
    denied = await gw.chat(max_tokens=10)
    assert denied.status == 429
    assert denied.headers["x-should-retry"] == "false"
    assert "Retry-After" not in denied.headers
    assert "never fit" in (await denied.json())["error"]["message"]


async def test_a_refusal_names_the_limit_that_refused(gateway: MakeHarness) -> None:
    """Both limits refuse the second request, but the token limit only for now (alone it fits);
    the cost limit can never fit it: the message names that one, not the first listed."""
    gw = await gateway("""
  - {name: both, tenant: acme, max_tokens_per_hour: 1015, max_cost_per_hour: 0.00001}
""")
    assert (await gw.chat(max_tokens=5)).status == 200
    denied = await gw.chat(max_tokens=1000)
    assert denied.status == 429
    message = (await denied.json())["error"]["message"]
    assert "max_cost_per_hour" in message and "never fit" in message, message
    assert "max_tokens_per_hour" not in message


async def test_scopes_key_model_and_domain(gateway: MakeHarness) -> None:
    gw = await gateway("""
  - {name: ci-only, tenant: acme, key: acme-ci, max_tokens_per_hour: 1}
  - {name: embeddings, tenant: acme, domain: embedding, max_tokens_per_hour: 1}
  - {name: big-model, tenant: acme, model: "gpt-4o", max_tokens_per_hour: 1}
""")
    assert (await gw.chat(max_tokens=10, key="ci")).status == 429
    assert (await gw.chat(max_tokens=10, key="admin")).status == 200
    embed = {"model": "text-embedding-3-small", "input": "hello there, my friend"}
    assert (await gw.post("/embeddings", embed, key="admin")).status == 429
    assert (await gw.chat(max_tokens=10, key="admin", model="gpt-4o")).status == 429


async def test_threshold_webhook_fires_once(gateway: MakeHarness, aiohttp_server: Any) -> None:
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    server = await aiohttp_server(receiver)
    gw = await gateway("""
  - {name: month, tenant: acme, max_tokens_per_day: 1000, alert_threshold: 0.5}
""", extra=f'alerts: {{webhook_url: "{server.make_url("/hook")}"}}')
    statuses = [(await gw.chat(max_tokens=40)).status for _ in range(15)]
    assert 200 in statuses
    for _ in range(100):
        if received:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    assert len(received) == 1
    alert = received[0]
    assert alert["budget"] == "month" and alert["tenant"] == "acme"
    assert alert["limit"] == "max_tokens_per_day" and alert["window"] == "day"
    assert alert["max"] == 1000 and 0.5 <= alert["ratio"] < 1


async def test_the_bounds_reserved_are_the_bounds_sent_upstream(gateway: MakeHarness) -> None:
    """A request that sets no output cap, tool-call cap or tier is sent the ones reserved."""
    gw = await gateway()
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    assert (await gw.post("/chat/completions", body)).status == 200
    sent = gw.stats.last_request
    assert sent is not None
    assert sent["body"]["max_completion_tokens"] == 16_384  # the model's own maximum
    assert sent["body"]["service_tier"] == "default"
    tools = {"model": "gpt-4o-mini", "input": "news?", "max_output_tokens": 50,
             "tools": [{"type": "web_search"}]}
    assert (await gw.post("/responses", tools)).status == 200
    sent = gw.stats.last_request
    assert sent is not None and sent["body"]["max_tool_calls"] == 4
    own = {**tools, "max_tool_calls": 2, "service_tier": "flex"}
    assert (await gw.post("/responses", own)).status == 200
    sent = gw.stats.last_request
    assert sent is not None
    assert (sent["body"]["max_tool_calls"], sent["body"]["service_tier"]) == (2, "flex")


async def test_a_tool_whose_fees_cannot_be_bounded_is_refused(gateway: MakeHarness) -> None:
    gw = await gateway()
    body = {"model": "gpt-4o-mini", "input": "draw", "tools": [{"type": "image_generation"}]}
    resp = await gw.post("/responses", body)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["param"] == "tools" and "image_generation" in error["message"]
    assert gw.stats.last_request is None or gw.stats.last_request["body"].get("tools") is None


async def test_clamping_never_goes_below_the_endpoints_minimum(gateway: MakeHarness) -> None:
    """max_output_tokens below 16 is refused by OpenAI: a fit under 16 is a denial, not a
    clamp the upstream would refuse."""
    gw = await gateway("""
  - {name: tight, tenant: acme, max_tokens_per_hour: 20, clamp_max_tokens: true}
""")
    body = {"model": "gpt-4o-mini", "input": "hello there", "max_output_tokens": 100}
    resp = await gw.post("/responses", body)
    assert resp.status == 429
    chat = await gw.chat(max_tokens=100)  # chat accepts any cap from 1
    assert chat.status == 200 and int(chat.headers["x-budget-clamped-max-tokens"]) < 16


async def test_a_known_previous_response_bounds_the_next_turn(gateway: MakeHarness) -> None:
    """The gateway recorded the earlier turn's input and output, so the next turn reserves those
    plus what it carries, not the whole context window (which would not fit this budget)."""
    gw = await gateway("""
  - {name: small, tenant: acme, max_tokens_per_hour: 2000}
""")
    body = {"model": "gpt-4o-mini", "input": "hello there", "max_output_tokens": 20}
    first = await gw.post("/responses", body)
    assert first.status == 200
    earlier = await first.json()
    again = await gw.post("/responses", {**body, "previous_response_id": earlier["id"]})
    assert again.status == 200, await again.text()
    unknown = await gw.post("/responses", {**body, "previous_response_id": "resp_unknown"})
    assert unknown.status == 404
    assert (await unknown.json())["error"]["code"] == "previous_response_not_found"
    other = await gw.post("/responses", {**body, "previous_response_id": earlier["id"]},
                          key="other")
    assert other.status == 404  # another tenant's response is not found, as if never made
    stored = await gw.client.get(f"/v1/responses/{earlier['id']}",
                                 headers={"Authorization": f"Bearer {KEYS['other']}"})
    assert stored.status == 404 and (await stored.json())["error"]["code"] is None


async def test_an_upstream_answer_without_json_keeps_its_status(gateway: MakeHarness) -> None:
    """The polite mock keeps no responses: its plain 404 reaches the owner as OpenAI's shape."""
    gw = await gateway()
    body = {"model": "gpt-4o-mini", "input": "hello there", "max_output_tokens": 20}
    created = await (await gw.post("/responses", body)).json()
    got = await gw.client.get(f"/v1/responses/{created['id']}",
                              headers={"Authorization": f"Bearer {KEYS['ci']}"})
    assert got.status == 404
    assert "answered HTTP 404" in (await got.json())["error"]["message"]


@pytest.mark.parametrize("path", ["/chat/completions", "/responses"])
async def test_a_streams_last_event_comes_after_its_settlement(
    gateway: MakeHarness, path: str
) -> None:
    """A client holding the whole answer ([DONE], or the Responses API's final event) has been
    charged: a crash after that loses nothing it was answered for."""
    gw = await gateway("")
    record = gw.store.record

    async def slow_record(usage: Any) -> None:  # a store a disk write away
        await asyncio.sleep(0.2)
        await record(usage)

    gw.store.record = slow_record  # type: ignore[method-assign]
    body = ({"model": "gpt-4o-mini", "max_tokens": 5, "stream": True,
             "messages": [{"role": "user", "content": "hello"}]} if path == "/chat/completions"
            else {"model": "gpt-4o-mini", "max_output_tokens": 16, "stream": True,
                  "input": "hello"})
    resp = await gw.post(path, body)
    assert resp.status == 200
    seen = b""
    ends = ([b"data: [DONE]"] if path == "/chat/completions"
            else [b"response.completed", b"response.incomplete"])  # (capped: incomplete)
    while not any(end in seen for end in ends):
        chunk = await resp.content.readany()
        assert chunk, "the stream ended without its last event"
        seen += chunk
    assert (await gw.store.query(Filter())).entry_count == 1, "charged before the last event"
    await resp.read()
