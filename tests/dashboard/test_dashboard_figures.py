"""The dashboard's figures and messages as a reader sees them (issue 18), in headless Chromium
against a mock upstream and a gateway run as real processes.

Money reads as the CLI prints it (``gateway.admin.tables.usd``), the chart's axis in dollars,
never in exponent notation; the chart has a bar for every period of the range, at most
``MAX_PERIODS`` of them; each field error of the budget form shows beside its own field, in the
form's words; an operator's overview of more tenants than it charts one by one (issue 20) gives
the others as one stack and row, asking for no report of theirs. The browser, the keys and the
page fixture are those of ``test_dashboard_browser``; the gateway here has a model priced so
low that a request costs a few nano-dollars, and ``CROWD`` small tenants besides.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.admin.tables import usd
from tests import leaks
from tests.dashboard.test_dashboard_browser import (
    ADMIN_KEY,
    HTTP_TIMEOUT_S,
    LIVE_TIMEOUT_MS,
    MEMBER_KEY,
    UPSTREAM_KEY,
    Gateway,
    _screenshot,
    _sha,
    _sign_in,
    chromium_path,
    page,
)
from tests.procs import gateway_process, mock_upstream

__all__ = ["chromium_path", "page"]  # the fixtures, shared

TINY = "tiny-model"  # $0.0005 per 1M tokens: a short request costs a few nano-dollars
MAX_PERIODS = 744  # dashboard.js: the chart's bars at most
MONEY = re.compile(r"^-?\$\d{1,3}(,\d{3})*(\.\d+)?$")  # no exponent, thousands grouped
TENANTS_CHARTED = 20  # overview.js: tenants with a stack (and a report request) of their own
CROWD = 22  # tenants besides figs, each with one request: 23 tenants spent
CROWD_KEYS = {f"crowd-{i:02d}": f"sk-figs-crowd-{i:02d}-0123456789abcdef" for i in range(CROWD)}
OPERATOR_KEY = "sk-figs-operator-0123456789abcdef"
leaks.SECRETS.update([*CROWD_KEYS.values(), OPERATOR_KEY])


def _config(mock_url: str) -> str:
    crowd = "\n".join(f"""  {tenant}:
    keys:
      - {{name: {tenant}-app, sha256: "{_sha(key)}"}}""" for tenant, key in CROWD_KEYS.items())
    return f"""
store: "memory://"
upstreams:
  mock: {{base_url: "{mock_url}/v1", api_key: "{UPSTREAM_KEY}", models: ["*"], timeout_s: 30}}
pricing:
  gpt-4o-mini: {{input: 0.15, cached_input: 0.075, output: 0.60}}
  {TINY}: {{input: 0.0005, output: 0.0005}}
default_max_output_tokens: 64
tenants:
  figs:
    keys:
      - {{name: figs-admin, sha256: "{_sha(ADMIN_KEY)}", role: admin}}
      - {{name: figs-member, sha256: "{_sha(MEMBER_KEY)}", role: member}}
{crowd}
operators:
  - {{name: figs-operator, sha256: "{_sha(OPERATOR_KEY)}"}}
budgets:
  - {{name: tiny-daily, tenant: figs, max_cost_per_day: 0.0001}}
limits: {{batch_poll_s: 0.2}}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Mock upstream + gateway; one tiny request and a few small ones, all answered 200."""
    tmp = tmp_path_factory.mktemp("dashboard-figures")
    with contextlib.ExitStack() as stack:
        mock = stack.enter_context(mock_upstream(tmp))
        config = tmp / "gateway.yaml"
        config.write_text(_config(mock.url))
        proc = stack.enter_context(gateway_process(config, tmp / "gateway.log"))
        gw = Gateway(proc, tmp)
        for model, max_tokens in [(TINY, 8), ("gpt-4o-mini", 20), ("gpt-4o-mini", 24)]:
            status, body = gw.chat(model, max_tokens)
            assert status == 200, body
        for i, key in enumerate(CROWD_KEYS.values()):  # each a different cost
            status, body = gw.chat("gpt-4o-mini", 2 + i, key=key)
            assert status == 200, body
        yield gw


def _apply(page: Any, group_by: str, since: str = "", until: str = "", model: str = "") -> None:
    page.get_by_label("From", exact=True).fill(since)
    page.get_by_label("To", exact=True).fill(until)
    page.get_by_label("Group by", exact=True).select_option(group_by)
    page.get_by_label("Model", exact=True).select_option(model)
    page.get_by_role("button", name="Apply").click()


def _chart(page: Any) -> dict[str, Any]:
    chart: dict[str, Any] = page.evaluate("""() => {
        const chart = window.Chart.getChart('chart');
        return {labels: chart.data.labels,
                sums: chart.data.labels.map((_, i) =>
                    chart.data.datasets.reduce((sum, d) => sum + d.data[i], 0)),
                ticks: chart.scales.y.ticks.map(t => ({value: t.value, label: t.label}))};
    }""")
    return chart


def _wait_for_chart(page: Any, periods: int, shown: int) -> dict[str, Any]:
    from playwright.sync_api import expect

    caption = page.locator("#chart-caption")
    expect(caption).to_have_attribute("data-periods", str(periods), timeout=LIVE_TIMEOUT_MS)
    expect(caption).to_have_attribute("data-shown", str(shown))
    return _chart(page)


def test_money_reads_as_the_cli_prints_it(page: Any, gateway: Gateway) -> None:
    """One format for every amount: four decimals, more for one too small to show in four."""
    from playwright.sync_api import expect

    _sign_in(page, gateway, ADMIN_KEY)
    amounts = [0, 2e-8, 1e-9, 0.00004999, 0.00005, 6e-5, 0.00015, 0.03125, 0.5, 1234.56785,
               9_000_000, -0.5, -2e-8]
    shown = page.evaluate("(amounts) => amounts.map(a => window.gatewayDashboard.usd(a))",
                          amounts)
    assert shown == [usd(a) for a in amounts]
    assert shown[1] == "$0.00000002"
    assert page.evaluate("() => window.gatewayDashboard.usd(0.00006, 5)") == "$0.00006"

    # the tiny model's spend: a few nano-dollars, shown non-zero, in the totals and the table
    _apply(page, "day", model=TINY)
    report = gateway.report(group_by="day", model=TINY)
    assert 0 < report["total_cost"] < 0.00005
    expect(page.locator("#total-requests")).to_have_attribute(  # (and a batch, if run)
        "data-value", str(report["requests"]), timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#total-cost")).to_have_text(usd(report["total_cost"]))
    cell = page.locator(f'#models tr[data-model="{TINY}"] td[data-field="cost"]')
    expect(cell).to_have_text(usd(report["by_model"][0]["cost"]))

    # every model: the totals, the table and the budget gauge's dollars, as the CLI prints them
    _apply(page, "day")
    report = gateway.report(group_by="day")
    expect(page.locator("#total-requests")).to_have_attribute(
        "data-value", str(report["requests"]), timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#total-cost")).to_have_text(usd(report["total_cost"]))
    for model in report["by_model"]:
        cell = page.locator(f'#models tr[data-model="{model["model_key"]}"] td[data-field="cost"]')
        expect(cell).to_have_text(usd(model["cost"]))
    _, status = gateway.call("GET", "/api/client/v1/budgets/status")
    (limit,) = next(b for b in status["budgets"] if b["name"] == "tiny-daily")["limits"]
    figures = page.locator('[data-limit="max_cost_per_day"] [data-role="figures"]')
    expect(figures).to_contain_text(f"{usd(limit['used'])} of {usd(limit['max'])}")


def test_the_chart_axis_reads_in_dollars(page: Any, gateway: Gateway) -> None:
    """Ticks of a few hundred-thousandths of a dollar: $0.00002, never 2.00000E-5."""
    from playwright.sync_api import expect

    _sign_in(page, gateway, ADMIN_KEY)
    expect(page.locator("#total-requests")).to_have_attribute(
        "data-value", str(gateway.report()["requests"]), timeout=LIVE_TIMEOUT_MS)
    chart = _chart(page)
    assert 0.00001 < max(chart["sums"]) < 0.001  # the scale the issue saw
    labels = [t["label"] for t in chart["ticks"]]
    decimals = {len(label.partition(".")[2]) for label in labels}
    assert len(decimals) == 1, labels  # one precision along the axis
    for tick in chart["ticks"]:
        assert MONEY.match(tick["label"]), tick
        assert float(tick["label"].replace("$", "").replace(",", "")) == pytest.approx(
            tick["value"], abs=1e-12), tick  # as many decimals as the ticks need
    assert all("e" not in label.lower() for label in labels)
    _screenshot(page, "dashboard-axis-dollars.png")


def _hours(first: dt.datetime, last: dt.datetime) -> int:
    return int((last - first).total_seconds() // 3600) + 1


def test_the_chart_has_every_period_of_the_range(page: Any, gateway: Gateway) -> None:
    """Hours, days and months without spend are bars of zero; a range of years by the hour
    is capped, and the caption says so."""
    _sign_in(page, gateway, ADMIN_KEY)
    now = dt.datetime.now(dt.UTC)
    today = now.date()

    # every hour of today, the one with spend among them
    _apply(page, "hour", today.isoformat(), today.isoformat())
    report = gateway.report(group_by="hour", **{"from": today.isoformat(),
                                                "to": today.isoformat()})
    chart = _wait_for_chart(page, 24, 24)
    assert chart["labels"] == [f"{today.isoformat()}T{h:02d}:00:00Z" for h in range(24)]
    spent = {p["period"]: p["cost"] for p in report["timeseries"]}
    for label, total in zip(chart["labels"], chart["sums"], strict=True):
        assert total == pytest.approx(spent.get(label, 0.0), abs=1e-12), label
    assert sum(1 for s in chart["sums"] if s) == len(spent) >= 1

    # every day of a week that ends today
    week = today - dt.timedelta(days=6)
    _apply(page, "day", week.isoformat(), today.isoformat())
    chart = _wait_for_chart(page, 7, 7)
    assert chart["labels"] == [(week + dt.timedelta(days=i)).isoformat() for i in range(7)]
    assert chart["sums"][:6] == [0] * 6 and chart["sums"][6] > 0

    # every month of a quarter, none of them before this one with spend
    first = dt.date(today.year - (today.month <= 2), (today.month - 3) % 12 + 1, 1)
    _apply(page, "month", first.isoformat(), today.isoformat())
    chart = _wait_for_chart(page, 3, 3)
    months = [dt.date(first.year + (first.month + i - 1) // 12, (first.month + i - 1) % 12 + 1, 1)
              for i in range(3)]
    assert chart["labels"] == [m.strftime("%Y-%m") for m in months]
    assert chart["sums"][:2] == [0, 0] and chart["sums"][2] > 0

    # a range of years by the hour: the latest MAX_PERIODS hours, and the caption says so
    since = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    end = dt.datetime.combine(today, dt.time(23), dt.UTC)
    total = _hours(since, end)
    _apply(page, "hour", since.date().isoformat(), today.isoformat())
    chart = _wait_for_chart(page, total, MAX_PERIODS)
    assert chart["labels"][-1] == end.strftime("%Y-%m-%dT%H:00:00Z")
    assert chart["labels"][0] == (end - dt.timedelta(hours=MAX_PERIODS - 1)).strftime(
        "%Y-%m-%dT%H:00:00Z")
    caption = page.locator("#chart-caption").inner_text()
    assert f"showing the last {MAX_PERIODS} of {total:,} hours" in caption, caption
    assert "the totals and the table cover the whole range" in caption.lower(), caption
    _screenshot(page, "dashboard-hours-capped.png")

    # no range: from the first period with spend to the current one
    _apply(page, "hour")
    first_hour = dt.datetime.fromisoformat(report["timeseries"][0]["period"])
    now_hour = now.replace(minute=0, second=0, microsecond=0)
    chart = _wait_for_chart(page, _hours(first_hour, now_hour), _hours(first_hour, now_hour))
    assert chart["labels"][-1] == now_hour.strftime("%Y-%m-%dT%H:00:00Z")


def test_each_field_error_shows_beside_its_field(page: Any, gateway: Gateway) -> None:
    """Several fields wrong at once: each problem beside its own field, in the form's words,
    its numbers written for people; the first field at fault has the focus."""
    from playwright.sync_api import expect

    _sign_in(page, gateway, ADMIN_KEY)
    page.get_by_role("button", name="New budget").click()
    page.get_by_label("Name", exact=True).fill("too-much")
    page.get_by_label("Max tokens per hour").fill(str(2**60))
    page.get_by_label("Max cost per day (USD)").fill("-5")
    page.get_by_label("Max cost per month (USD)").fill("10000000")
    page.get_by_role("button", name="Create budget").click()

    tokens = page.locator("#b-max_tokens_per_hour-error")
    expect(tokens).to_have_text(
        "Must be at most 9,007,199,254,740,992, got 1,152,921,504,606,846,976.")
    expect(page.locator("#b-max_cost_per_day-error")).to_have_text(
        "Must be between $0 and $9,000,000, got -$5.")
    expect(page.locator("#b-max_cost_per_month-error")).to_have_text(
        "Must be between $0 and $9,000,000, got $10,000,000.")
    for label in ("Max tokens per hour", "Max cost per day (USD)", "Max cost per month (USD)"):
        expect(page.get_by_label(label)).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Name", exact=True)).not_to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Max tokens per hour")).to_be_focused()
    expect(page.locator("#budget-form-error")).to_be_hidden()  # nothing merged above
    for line in page.locator("#budget-form .field-error").all():
        assert "max_" not in line.inner_text() and "e+" not in line.inner_text()
    _screenshot(page, "dashboard-field-errors.png")

    # a problem of the budget as a whole goes above the buttons, in the form's words
    for label in ("Max tokens per hour", "Max cost per day (USD)", "Max cost per month (USD)"):
        page.get_by_label(label).fill("")
    page.get_by_role("button", name="Create budget").click()
    general = page.locator("#budget-form-error")
    expect(general).to_contain_text('Sets no limit; set at least one of "Max tokens per hour"')
    expect(tokens).to_be_hidden()
    _, listed = gateway.call("GET", "/api/client/v1/budgets")
    assert "too-much" not in [b["name"] for b in listed["data"]], "nothing was created"


def test_a_budget_that_refuses_requests_says_so(page: Any, gateway: Gateway) -> None:
    """At 91% of a token limit, what is left is less than a request reserves: the card says
    it is refusing such requests, and red once the limit is reached."""
    from playwright.sync_api import expect

    status, body = gateway.chat("gpt-4o-mini", 20)  # how many tokens such a request takes
    assert status == 200, body
    tokens = body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    limit = -(-tokens * 100 // 91)
    status, created = gateway.call("POST", "/api/client/v1/budgets", body={
        "name": "nearly-full", "max_tokens_per_hour": limit, "alert_threshold": 0.8})
    assert status == 201, created
    try:
        assert gateway.chat("gpt-4o-mini", 20)[0] == 200  # 91% used
        status, body = gateway.chat("gpt-4o-mini", 20)
        assert status == 429 and "nearly-full" in body["error"]["message"], body

        _sign_in(page, gateway, ADMIN_KEY)
        gauge = page.locator('article[data-source="api"]', has_text="nearly-full").locator(
            '[data-limit="max_tokens_per_hour"]')
        _, state = gateway.call("GET", "/api/client/v1/budgets/status")
        (figures,) = next(b for b in state["budgets"] if b["name"] == "nearly-full")["limits"]
        assert 0 < figures["available"] < tokens
        expect(gauge.get_by_role("meter")).to_have_attribute("data-level", "warn")
        expect(gauge.locator('[data-role="refusing"]')).to_have_text(
            f"Refusing any request that needs more than the {figures['available']:,} tokens "
            "left (its input plus max_tokens).")
        _screenshot(page, "dashboard-refusing.png")

        # the limit reached: red, refusing every request
        status, _ = gateway.call("PATCH", f"/api/client/v1/budgets/{created['id']}",
                                 body={"max_tokens_per_hour": figures["used"]})
        assert status == 200
        expect(gauge.get_by_role("meter")).to_have_attribute("data-level", "over",
                                                             timeout=LIVE_TIMEOUT_MS)
        expect(gauge.locator('[data-role="refusing"]')).to_have_text(
            "Refusing requests: the limit is reached.")
        expect(gauge.locator('[data-role="refusing"]')).to_have_css(
            "color", "rgb(198, 40, 40)")  # --over
    finally:
        gateway.delete_budget(created["id"])



def _start_batch(gateway: Gateway, seconds: float) -> str:
    """A batch of the tiny model (two lines) that the mock runs for ``seconds``."""
    import openai

    lines = [{"custom_id": f"figs-{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": TINY, "max_tokens": 8,
                       "messages": [{"role": "user", "content": f"batch line {i}"}]}}
             for i in range(2)]
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=ADMIN_KEY, max_retries=0,
                       timeout=HTTP_TIMEOUT_S) as sdk:
        uploaded = sdk.files.create(purpose="batch", file=(
            "figs.jsonl", "".join(json.dumps(line) + "\n" for line in lines).encode()))
        return sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h",
                                  metadata={"mock_batch_duration_s": str(seconds)}).id


def _batches_settled(gateway: Gateway, count: int) -> dict[str, Any]:
    """The day's report once it has ``count`` batches."""
    for _ in range(300):
        report = gateway.report(group_by="day")
        if report["batch"]["requests"] >= count:
            return report
        time.sleep(0.1)
    raise AssertionError(f"not {count} batches settled: {report['batch']}")


@pytest.mark.slow  # ~20 s: batches run, are cancelled and settle on the mock's clock
def test_batches_their_spend_and_what_running_ones_hold(page: Any, gateway: Gateway) -> None:
    """The Batch API's share of the spend, and each running batch with what it holds, in the
    page's money; none, said plainly."""
    from playwright.sync_api import expect

    _sign_in(page, gateway, ADMIN_KEY)
    rows = page.locator("#batches tbody tr")
    expect(rows).to_have_text(["No running batches."])
    expect(page.locator("#batch-share")).to_have_text(
        "Of which the Batch API: $0.0000 (no batches in this range).")

    # a batch that ends at once: its share of the totals, and of its day in the chart
    _start_batch(gateway, seconds=0.5)
    report = _batches_settled(gateway, 1)
    batch = report["batch"]
    assert 0 < batch["cost"] < 0.00005 and batch["cost"] < report["total_cost"]
    share = page.locator("#batch-cost")
    expect(share).to_have_text(usd(batch["cost"]), timeout=LIVE_TIMEOUT_MS)
    assert float(share.get_attribute("data-value")) == batch["cost"]
    expect(page.locator("#batch-detail")).to_have_text(
        f" in 1 batch ({batch['input_tokens']:,} input and {batch['output_tokens']:,} output "
        "tokens).")
    (day,) = report["timeseries"]
    footer = page.evaluate("""() => window.Chart.getChart('chart').options.plugins.tooltip
        .callbacks.footer([{dataIndex: 0}])""")
    assert footer == f"Of which the Batch API: {usd(day['batch_cost'])}"
    batch_id = _start_batch(gateway, seconds=60)  # a cancel takes 6 s (a tenth)
    _, running = gateway.call("GET", "/api/client/v1/batches/running")
    (held,) = running["data"]
    assert held["batch_id"] == batch_id and 0 < held["reserved_usd"] < 0.00005
    row = page.locator(f'#batches tr[data-batch-id="{batch_id}"]')
    expect(row).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    expect(rows).to_have_count(1)
    expect(row.locator('[data-field="model"]')).to_have_text(TINY)
    expect(row.locator('[data-field="endpoint"]')).to_have_text("/v1/chat/completions")
    expect(row.locator('[data-field="reserved_usd"]')).to_have_text(usd(held["reserved_usd"]))
    expect(row.locator('[data-field="reserved_tokens"]')).to_have_text(
        f"{held['reserved_tokens']:,}")
    for field in ("created_at", "deadline"):  # UTC, to the minute
        expect(row.locator(f'[data-field="{field}"]')).to_have_text(
            held[field][:16].replace("T", " ") + " UTC")
    _screenshot(page, "dashboard-running-batches.png")

    # cancelled: settled by the gateway's poller, it holds nothing any more
    status, _ = gateway.call("POST", f"/v1/batches/{batch_id}/cancel")
    assert status == 200
    expect(rows).to_have_text(["No running batches."], timeout=LIVE_TIMEOUT_MS)


def test_the_overview_charts_the_tenants_that_spent_most_and_the_rest_together(
        page: Any, gateway: Gateway) -> None:
    """Issue 20: 23 tenants spent; the overview charts the 20 that spent most, each from its
    own report (one request a tenant, no more), and the 3 others as one stack and row, "3 more
    tenants", whose figures are the whole's less theirs, to the nano-dollar."""
    from playwright.sync_api import expect

    asked: list[str] = []  # the tenant each spend report the page asks for names
    page.on("request", lambda request: asked.extend(
        urllib.parse.parse_qs(urllib.parse.urlsplit(request.url).query).get("tenant", [])
        if "/spend/report" in request.url else []))
    _sign_in(page, gateway, OPERATOR_KEY)
    every = gateway.get("/spend/report", OPERATOR_KEY, tenant="all", group_by="day")
    by_tenant = every["by_tenant"]
    assert len(by_tenant) == CROWD + 1
    charted, rest = by_tenant[:TENANTS_CHARTED], by_tenant[TENANTS_CHARTED:]
    rows = page.locator("#tenants tbody tr")
    expect(rows).to_have_count(TENANTS_CHARTED + 1)
    assert [row.get_attribute("data-tenant") for row in rows.all()[:-1]] == [
        t["tenant"] for t in charted]
    together = rows.last
    assert together.get_attribute("data-role") == "rest"
    expect(together.locator("th")).to_have_text("3 more tenants, together")
    cost = together.locator('td[data-field="cost"]')
    assert float(cost.get_attribute("data-value")) == sum(
        round(t["cost"] * 1e9) for t in rest) / 1e9
    expect(cost).to_have_text(usd(sum(round(t["cost"] * 1e9) for t in rest) / 1e9))
    for figure in ("requests", "input_tokens", "output_tokens"):
        cell = together.locator(f'td[data-field="{figure}"]')
        assert int(cell.get_attribute("data-value")) == sum(t[figure] for t in rest), figure
    expect(page.locator("#tenants-summary")).to_have_text(
        f"23 tenants spent {usd(every['total_cost'])} in this range; the 20 who spent most, "
        "and 3 more tenants:")

    chart = page.evaluate("""() => window.Chart.getChart('tenant-chart').data.datasets.map(
        d => ({label: d.label, data: d.data}))""")
    assert [d["label"] for d in chart] == [t["tenant"] for t in charted] + ["3 more tenants"]
    (day,) = every["timeseries"]
    for stack, tenant in zip(chart, charted, strict=False):
        (own,) = gateway.get("/spend/report", OPERATOR_KEY, tenant=tenant["tenant"])[
            "timeseries"]
        assert stack["data"] == [own["cost"]], tenant["tenant"]
    assert chart[-1]["data"][0] == pytest.approx(
        (round(day["cost"] * 1e9) - sum(round(t["cost"] * 1e9) for t in charted)) / 1e9,
        abs=1e-12)
    assert sum(d["data"][0] for d in chart) == pytest.approx(day["cost"], abs=1e-12)
    _screenshot(page, "dashboard-operator-crowd.png")

    # a poll later: every report asked for was the whole's or a charted tenant's
    page.wait_for_timeout(6_000)
    assert set(asked) == {"all", *(t["tenant"] for t in charted)}
    assert asked.count("all") >= 2, "the page polled"
