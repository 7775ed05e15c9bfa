"""The dashboard's figures as a reader sees them (issue 18), in headless Chromium against a
mock upstream and a gateway run as real processes.

Money reads as the CLI prints it (``gateway.admin.tables.usd``), the chart's axis in dollars,
never in exponent notation. The browser, the keys and the page fixture are those of
``test_dashboard_browser``; the gateway here has a model priced so low that a request costs a
few nano-dollars.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.admin.tables import usd
from tests.dashboard.test_dashboard_browser import (
    ADMIN_KEY,
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
MONEY = re.compile(r"^-?\$\d{1,3}(,\d{3})*(\.\d+)?$")  # no exponent, thousands grouped


def _config(mock_url: str) -> str:
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
budgets:
  - {{name: tiny-daily, tenant: figs, max_cost_per_day: 0.0001}}
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
    expect(page.locator("#total-requests")).to_have_attribute("data-value", "1",
                                                              timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#total-cost")).to_have_text(usd(report["total_cost"]))
    cell = page.locator(f'#models tr[data-model="{TINY}"] td[data-field="cost"]')
    expect(cell).to_have_text(usd(report["by_model"][0]["cost"]))

    # every model: the totals, the table and the budget gauge's dollars, as the CLI prints them
    _apply(page, "day")
    report = gateway.report(group_by="day")
    expect(page.locator("#total-requests")).to_have_attribute("data-value", "3",
                                                              timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#total-cost")).to_have_text(usd(report["total_cost"]))
    for model in report["by_model"]:
        cell = page.locator(f'#models tr[data-model="{model["model_key"]}"] td[data-field="cost"]')
        expect(cell).to_have_text(usd(model["cost"]))
    _, status = gateway.call("GET", "/api/client/v1/budgets/status")
    limit = status["budgets"][0]["limits"][0]
    figures = page.locator('[data-limit="max_cost_per_day"] [data-role="figures"]')
    expect(figures).to_contain_text(f"{usd(limit['used'])} of {usd(limit['max'])}")


def test_the_chart_axis_reads_in_dollars(page: Any, gateway: Gateway) -> None:
    """Ticks of a few hundred-thousandths of a dollar: $0.00002, never 2.00000E-5."""
    from playwright.sync_api import expect

    _sign_in(page, gateway, ADMIN_KEY)
    expect(page.locator("#total-requests")).to_have_attribute("data-value", "3",
                                                              timeout=LIVE_TIMEOUT_MS)
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
