"""The dashboard in headless Chromium (driven by Playwright), against a
mock upstream and a gateway running as real processes on loopback ports.

A scripted run (chat requests with two models) comes first; the page must then show exactly
what ``GET /spend/report`` answers for the same range, let an admin key create a budget that
binds the very next proxied request, show the API's validation error beside its field, and give
a member key no edit controls. A second tenant and two operators (issue 20): an operator picks
a tenant and sees its figures, or all of them (spend per tenant, the budgets nearest their
limits, recent denials); a viewer cannot edit, an editor can. Screenshots go to
``test-output/dashboard/`` (logged).

The browser is found as ``tests.tools`` says (``$GATEWAY_TEST_CHROMIUM``, Debian's
``/usr/bin/chromium``, Playwright's managed one); a machine with none fails these tests, and
``scripts/test`` installs one first.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.admin.tables import usd
from tests import leaks, tools
from tests.procs import Proc, gateway_process, mock_upstream

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output" / "dashboard"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
UI_TIMEOUT_MS = 20_000  # one step's wait for the page; the poll is every 5 s
LIVE_TIMEOUT_MS = 30_000  # a new request shows up within a few polls
# the browser's own note on an answer the test asks for (the 400 of an invalid budget, the
# 401 of a wrong key); anything else the page logs fails the test (a CSP refusal, say)
EXPECTED_4XX = "Failed to load resource: the server responded with a status of 40"
HTTP_TIMEOUT_S = 10.0

ADMIN_KEY = "sk-dash-admin-0123456789abcdef"
MEMBER_KEY = "sk-dash-member-0123456789abcdef"
UPSTREAM_KEY = "sk-dash-upstream-0123456789abcdef"
OTHER_KEY = "sk-dash-other-0123456789abcdef"  # tenant dash-other's
VIEWER_KEY = "sk-dash-viewer-0123456789abcdef"  # operators (issue 20)
EDITOR_KEY = "sk-dash-editor-0123456789abcdef"
KEYS = [ADMIN_KEY, MEMBER_KEY, UPSTREAM_KEY, OTHER_KEY, VIEWER_KEY, EDITOR_KEY]
leaks.SECRETS.update(KEYS)
FILE_BUDGET = "dash-monthly"
OTHER = "dash-other"  # the second tenant
OTHER_BUDGET = "other-hourly"  # its budget: 300 tokens an hour, refusing a large request
# (model, max_tokens) per scripted request: two models, different sizes
SCRIPT = [("gpt-4o-mini", 20), ("gpt-4o", 30), ("gpt-4o-mini", 12), ("gpt-4o", 8),
          ("gpt-4o-mini", 40)]


def _sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _config(mock_url: str) -> str:
    return f"""
store: "memory://"
upstreams:
  mock: {{base_url: "{mock_url}/v1", api_key: "{UPSTREAM_KEY}", models: ["*"], timeout_s: 30}}
pricing:
  gpt-4o-mini: {{input: 0.15, cached_input: 0.075, output: 0.60}}
  gpt-4o: {{input: 2.50, cached_input: 1.25, output: 10.00}}
default_max_output_tokens: 64
tenants:
  dash:
    keys:
      - {{name: dash-admin, sha256: "{_sha(ADMIN_KEY)}", role: admin}}
      - {{name: dash-member, sha256: "{_sha(MEMBER_KEY)}", role: member}}
  {OTHER}:
    keys:
      - {{name: other-app, sha256: "{_sha(OTHER_KEY)}", role: admin}}
operators:
  - {{name: ops-viewer, sha256: "{_sha(VIEWER_KEY)}", role: viewer}}
  - {{name: ops-editor, sha256: "{_sha(EDITOR_KEY)}", role: editor}}
budgets:
  - {{name: {FILE_BUDGET}, tenant: dash, max_cost_per_month: 50, max_tokens_per_day: 1000000,
     alert_threshold: 0.8}}
  - {{name: {OTHER_BUDGET}, tenant: {OTHER}, max_tokens_per_hour: 300, alert_threshold: 0.5}}
"""


@dataclass
class Gateway:
    proc: Proc
    tmp: Path
    console: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.proc.url

    def call(self, method: str, path: str, key: str = ADMIN_KEY,
             body: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as resp:
                return resp.status, json.loads(resp.read() or b"null")  # a 204: None
        except urllib.error.HTTPError as error:
            with error:
                return error.code, json.load(error)

    def delete_budget(self, budget_id: str) -> None:
        assert self.call("DELETE", f"/api/client/v1/budgets/{budget_id}") == (204, None)

    def chat(self, model: str, max_tokens: int, end_user: str | None = None,
             key: str = ADMIN_KEY) -> tuple[int, Any]:
        named = {} if end_user is None else {"safety_identifier": end_user}
        return self.call("POST", "/v1/chat/completions", key=key, body={
            "model": model, "max_tokens": max_tokens, **named,
            "messages": [{"role": "user", "content": f"dashboard test, {model}"}]})

    def report(self, key: str = ADMIN_KEY, **query: str) -> Any:
        return self.get("/spend/report", key, **query)

    def get(self, path: str, key: str = ADMIN_KEY, **query: str) -> Any:
        """An admin API read (``tenant=``: an operator's)."""
        status, body = self.call("GET", f"/api/client/v1{path}?" + urllib.parse.urlencode(query),
                                 key=key)
        assert status == 200, body
        return body


@pytest.fixture(scope="module")
def chromium_path() -> str:
    """A missing browser fails the tests, as a missing Redis server does: never a skip."""
    return tools.require_chromium()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Mock upstream + gateway, then the scripted run, all of it answered 200."""
    tmp = tmp_path_factory.mktemp("dashboard")
    with contextlib.ExitStack() as stack:
        mock = stack.enter_context(mock_upstream(tmp))
        config = tmp / "gateway.yaml"
        config.write_text(_config(mock.url))
        proc = stack.enter_context(gateway_process(config, tmp / "gateway.log"))
        gw = Gateway(proc, tmp)
        for model, max_tokens in SCRIPT:
            status, body = gw.chat(model, max_tokens)
            assert status == 200, body
        status, body = gw.chat("gpt-4o-mini", 10, key=OTHER_KEY)
        assert status == 200, body
        yield gw
        log_text = proc.output()
        for secret in KEYS:
            assert secret not in log_text, "a key reached the gateway's log"


@pytest.fixture
def page(chromium_path: str, gateway: Gateway) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, headless=True,
                                     args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 1000})
            page = context.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            urls: list[str] = []
            page.on("request", lambda request: urls.append(request.url))
            page.on("console", lambda msg: gateway.console.append(f"{msg.type}: {msg.text}")
                    if msg.type in ("error", "warning") and not msg.text.startswith(
                        EXPECTED_4XX) else None)
            page.on("pageerror", lambda error: gateway.console.append(f"pageerror: {error}"))
            yield page
            for url in urls:  # the key travels in a header only
                assert not any(key in url for key in KEYS), url
            assert gateway.console == [], "the page logged errors (a CSP refusal?)"
        finally:
            browser.close()


def _screenshot(page: Any, name: str) -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / name
    page.screenshot(path=str(path), full_page=True)
    log.info("dashboard screenshot: %s", path)
    print(f"dashboard screenshot: {path}")
    return path


def _sign_in(page: Any, gateway: Gateway, key: str) -> None:
    from playwright.sync_api import expect

    page.goto(gateway.url + "/dashboard")
    expect(page.get_by_label("API key", exact=True)).to_be_focused()
    page.keyboard.type(key)  # keyboard only: the field has focus, Enter submits
    page.keyboard.press("Enter")
    expect(page.locator("#who")).to_be_visible()
    expect(page.locator("#signin")).to_be_hidden()
    assert page.evaluate("() => sessionStorage.length") == 1


def _expect_report(page: Any, report: dict[str, Any]) -> None:
    """The totals and the per-model table hold exactly the report's figures."""
    from playwright.sync_api import expect

    expect(page.locator("#total-requests")).to_have_attribute(
        "data-value", str(report["requests"]), timeout=LIVE_TIMEOUT_MS)
    assert float(page.get_attribute("#total-cost", "data-value")) == report["total_cost"]
    assert int(page.get_attribute("#total-input", "data-value")) == report[
        "total_input_tokens"]
    assert int(page.get_attribute("#total-output", "data-value")) == report[
        "total_output_tokens"]
    rows = page.locator("#models tbody tr")
    expect(rows).to_have_count(len(report["by_model"]))
    for i, model in enumerate(report["by_model"]):
        row = rows.nth(i)
        assert row.get_attribute("data-model") == model["model_key"]
        expect(row.locator("th")).to_have_text(model["model_key"])
        for figure in ("cost", "requests", "input_tokens", "output_tokens"):
            value = row.locator(f'td[data-field="{figure}"]').get_attribute("data-value")
            assert float(value) == model[figure], (model["model_key"], figure)


def _chart(page: Any) -> dict[str, Any]:
    chart: dict[str, Any] = page.evaluate("""() => {
        const chart = window.Chart.getChart('chart');
        return {labels: chart.data.labels, stacked: chart.options.scales.y.stacked,
                datasets: chart.data.datasets.map(d => ({label: d.label, data: d.data}))};
    }""")
    return chart


def test_admin_sees_the_run_and_manages_budgets(page: Any, gateway: Gateway) -> None:
    from playwright.sync_api import expect

    _sign_in(page, gateway, ADMIN_KEY)
    expect(page.locator("#who-text")).to_contain_text("dash-admin")
    _expect_report(page, gateway.report(group_by="day"))
    assert {m["model_key"] for m in gateway.report()["by_model"]} == {"gpt-4o", "gpt-4o-mini"}

    # the chart: one stacked series per model, whose periods sum to the report's
    report = gateway.report(group_by="day")
    chart = _chart(page)
    assert chart["stacked"] is True
    assert chart["labels"] == [p["period"] for p in report["timeseries"]]
    assert [d["label"] for d in chart["datasets"]] == [m["model_key"] for m in report["by_model"]]
    for i, period in enumerate(report["timeseries"]):
        assert sum(d["data"][i] for d in chart["datasets"]) == pytest.approx(period["cost"])

    # a range and a model, as the report answers for the same query
    today = dt.datetime.now(dt.UTC).date().isoformat()
    page.get_by_label("From", exact=True).fill(today)
    page.get_by_label("To", exact=True).fill(today)
    page.get_by_label("Group by", exact=True).select_option("hour")
    page.get_by_label("Model", exact=True).select_option("gpt-4o")
    page.get_by_role("button", name="Apply").click()
    narrowed = gateway.report(**{"from": today, "to": today, "group_by": "hour",
                                 "model": "gpt-4o"})
    assert [m["model_key"] for m in narrowed["by_model"]] in ([], ["gpt-4o"])  # (at midnight)
    _expect_report(page, narrowed)
    page.get_by_label("Model", exact=True).select_option("")
    page.get_by_role("button", name="Apply").click()

    # live: a request made now shows up without a reload
    assert gateway.chat("gpt-4o-mini", 16)[0] == 200
    _expect_report(page, gateway.report(group_by="hour", **{"from": today, "to": today}))

    # the YAML budget: its gauges, read-only
    yaml_card = page.locator(f'article[data-budget-id="{FILE_BUDGET}"]')
    expect(yaml_card).to_contain_text("source: file")
    expect(yaml_card).to_contain_text("edit the file")
    expect(yaml_card.locator("button")).to_have_count(0)
    expect(yaml_card.get_by_role("meter")).to_have_count(2)
    expect(yaml_card.locator('[data-limit="max_cost_per_month"] [data-role="resets"]')
           ).to_contain_text("resets in")

    # an invalid value: the API's 400, beside the field it names
    page.get_by_role("button", name="New budget").click()
    page.get_by_label("Name", exact=True).fill("dash-cap")
    page.get_by_label("Max cost per day (USD)").fill("-5")
    page.get_by_role("button", name="Create budget").click()
    error = page.locator("#b-max_cost_per_day-error")
    expect(error).to_have_text("Must be between $0 and $9,000,000, got -$5.")  # the form's words
    expect(page.get_by_label("Max cost per day (USD)")).to_have_attribute("aria-invalid", "true")
    status, listed = gateway.call("GET", "/api/client/v1/budgets")
    assert [b["name"] for b in listed["data"]] == [FILE_BUDGET], "nothing was created"

    # a valid one: created from the page, and the next over-budget request is refused
    page.get_by_label("Max cost per day (USD)").fill("")
    page.get_by_label("Max tokens per hour").fill("10")
    page.get_by_role("button", name="Create budget").click()
    card = page.locator('article[data-source="api"]', has_text="dash-cap")
    expect(card).to_be_visible()
    expect(card).to_contain_text("source: api")
    expect(page.locator("#editor")).to_be_hidden()
    status, body = gateway.chat("gpt-4o-mini", 50)
    assert status == 429, body
    assert "dash-cap" in body["error"]["message"]
    _screenshot(page, "dashboard-admin.png")

    # edit it roomy from the page, then delete it
    card.get_by_role("button", name="Edit budget dash-cap").click()
    page.get_by_label("Max tokens per hour").fill("1000000")
    page.get_by_role("button", name="Save changes").click()
    expect(card.locator('[data-limit="max_tokens_per_hour"] [data-role="figures"]')
           ).to_contain_text("1,000,000 tokens")
    assert gateway.chat("gpt-4o-mini", 50)[0] == 200
    page.once("dialog", lambda dialog: dialog.accept())
    card.get_by_role("button", name="Delete budget dash-cap").click()
    expect(card).to_have_count(0)

    # signing out forgets the key
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#signin")).to_be_visible()
    expect(page.locator("#app")).to_be_hidden()
    assert page.evaluate("() => sessionStorage.length") == 0


def test_downgrade_and_per_end_user_budgets(page: Any, gateway: Gateway) -> None:
    """Issue 19: a downgrade budget names its fallback models; a per-end-user budget gives
    each end user's limits, not a use of them (no one's); the form makes and edits both."""
    from playwright.sync_api import expect

    status, each = gateway.call("POST", "/api/client/v1/budgets", body={
        "name": "dash-each", "key": "dash-member", "per": "end_user",
        "end_user_required": True, "max_cost_per_day": 2, "max_tokens_per_hour": 10000})
    assert status == 201, each
    try:
        _sign_in(page, gateway, ADMIN_KEY)
        card = page.locator(f'article[data-budget-id="{each["id"]}"]')
        expect(card.locator('[data-role="per"]')).to_have_text("per end user")
        expect(card.locator('[data-role="end-user-required"]')).to_have_text(
            "end user required")
        expect(card.locator('[data-limit="max_cost_per_day"] [data-role="figures"]')
               ).to_have_text("up to $2.0000 for each end user")
        expect(card.locator('[data-limit="max_tokens_per_hour"] [data-role="figures"]')
               ).to_have_text("up to 10,000 tokens for each end user")
        expect(card.get_by_role("meter")).to_have_count(0)  # the template's: no one's use

        # a downgrade budget from the form: a glob among its fallbacks is refused beside the
        # field, naming the entry as typed
        page.get_by_role("button", name="New budget").click()
        page.get_by_label("Name", exact=True).fill("dash-down")
        page.get_by_label("Only models matching (glob)").fill("gpt-4o")
        page.get_by_label("Max cost per day (USD)").fill("1")
        page.get_by_label("Action", exact=True).select_option("downgrade")
        fallbacks = page.get_by_label("Fallback models, downgrade")
        fallbacks.fill("gpt-4o-mini, gpt-4o-*")
        page.get_by_role("button", name="Create budget").click()
        expect(page.locator("#b-fallback_model-error")).to_have_text(
            '"gpt-4o-*" is a glob; name one model, the one the request is sent to.')
        expect(fallbacks).to_be_focused()
        fallbacks.fill("gpt-4o-mini")
        page.get_by_role("button", name="Create budget").click()
        down = page.locator('article[data-source="api"]', has_text="dash-down")
        expect(down.locator('[data-role="action"]')).to_have_text(
            "action: downgrade → gpt-4o-mini")
        _, listed = gateway.call("GET", "/api/client/v1/budgets")
        made = next(b for b in listed["data"] if b["name"] == "dash-down")
        assert (made["action"], made["fallback_model"]) == ("downgrade", ["gpt-4o-mini"])
        _screenshot(page, "dashboard-budget-kinds.png")

        # the per-end-user budget edited into a tenant-wide one: its gauges of use come back
        card.get_by_role("button", name="Edit budget dash-each").click()
        expect(page.get_by_label("Limits apply to")).to_have_value("end_user")
        required = page.get_by_label("Requests must name their end user")
        expect(required).to_be_checked()
        page.get_by_label("Limits apply to").select_option("")
        required.uncheck()
        page.get_by_role("button", name="Save changes").click()
        expect(card.get_by_role("meter")).to_have_count(2)
        expect(card.locator('[data-role="per"]')).to_have_count(0)
        _, listed = gateway.call("GET", "/api/client/v1/budgets")
        edited = next(b for b in listed["data"] if b["id"] == each["id"])
        assert (edited["per"], edited["end_user_required"]) == (None, False)
    finally:
        _, listed = gateway.call("GET", "/api/client/v1/budgets")
        for budget in listed["data"]:
            if budget["source"] == "api":
                gateway.delete_budget(budget["id"])


def test_end_users_by_spend_and_one_end_users_limits(page: Any, gateway: Gateway) -> None:
    """Issue 19: the end users who spent most in the range, as GET /spend/end_users gives
    them; one end user looked up (by the box, or from the list): their per-end-user budget as
    it stands for them, and their spend."""
    from playwright.sync_api import expect

    status, each = gateway.call("POST", "/api/client/v1/budgets", body={
        "name": "dash-per-user", "per": "end_user", "max_cost_per_day": 1,
        "max_tokens_per_hour": 100000, "alert_threshold": 0.5})
    assert status == 201, each
    try:
        for model, max_tokens, end_user in [("gpt-4o", 30, "alice@example.com"),
                                            ("gpt-4o", 20, "alice@example.com"),
                                            ("gpt-4o-mini", 10, "bob")]:
            assert gateway.chat(model, max_tokens, end_user)[0] == 200
        _sign_in(page, gateway, ADMIN_KEY)
        _, top = gateway.call("GET", "/api/client/v1/spend/end_users?limit=10")
        assert [u["end_user"] for u in top["data"]] == ["alice@example.com", "bob"]
        rows = page.locator("#end-users tbody tr")
        expect(rows).to_have_count(2)
        for row, user in zip(rows.all(), top["data"], strict=True):
            assert row.get_attribute("data-end-user") == user["end_user"]
            for figure in ("cost", "requests", "input_tokens", "output_tokens"):
                cell = row.locator(f'td[data-field="{figure}"]')
                assert float(cell.get_attribute("data-value")) == user[figure], figure
        expect(page.locator("#end-users-summary")).to_have_text(
            f"2 end users spent {usd(top['total_cost'])} in this range:")

        # looked up in the box: the per-end-user budget's gauges are alice's own
        page.get_by_label("End user id").fill("alice@example.com")
        page.get_by_role("button", name="Show limits").click()
        expect(page.locator("#end-user-title")).to_have_text("End user alice@example.com")
        _, mine = gateway.call("GET", "/api/client/v1/budgets/status?end_user=alice%40example.com")
        (entry,) = [b for b in mine["budgets"] if b["id"] == each["id"]]
        card = page.locator(f'#end-user-budgets article[data-budget-id="{each["id"]}"]')
        by_limit = {limit["limit"]: limit for limit in entry["limits"]}
        cost = by_limit["max_cost_per_day"]
        assert cost["used"] > 0
        expect(card.locator('[data-limit="max_cost_per_day"] [data-role="figures"]')
               ).to_have_text(f"{usd(cost['used'])} of {usd(cost['max'])} "
                              f"({round(cost['ratio'] * 100)}%)")
        expect(card.get_by_role("meter")).to_have_count(2)
        assert float(page.get_attribute("#eu-day", "data-value")) == mine["per_day"]["used_usd"]
        assert int(page.get_attribute("#eu-hour", "data-value")) == mine["per_hour"][
            "used_tokens"]
        _screenshot(page, "dashboard-end-users.png")

        # from the list: bob's, smaller; a malformed id is refused beside the box
        rows.nth(1).get_by_role("button", name="Show the limits of end user bob").click()
        expect(page.locator("#end-user-title")).to_have_text("End user bob")
        expect(page.get_by_label("End user id")).to_have_value("bob")
        _, bobs = gateway.call("GET", "/api/client/v1/budgets/status?end_user=bob")
        assert float(page.get_attribute("#eu-day", "data-value")) == bobs["per_day"]["used_usd"]
        page.get_by_label("End user id").fill("x" * 300)
        page.get_by_role("button", name="Show limits").click()
        expect(page.locator("#eu-id-error")).to_contain_text("Invalid end user")
        expect(page.get_by_label("End user id")).to_have_attribute("aria-invalid", "true")
        expect(page.locator("#end-user-title")).to_have_text("End user bob")  # still shown
    finally:
        gateway.delete_budget(each["id"])


def test_member_reads_without_edit_controls(page: Any, gateway: Gateway) -> None:
    from playwright.sync_api import expect

    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    _sign_in(page, gateway, MEMBER_KEY)
    expect(page.locator("#who-text")).to_contain_text("read-only")
    _expect_report(page, gateway.report(group_by="day"))
    expect(page.locator(f'article[data-budget-id="{FILE_BUDGET}"]')).to_be_visible()
    expect(page.locator("#new-budget")).to_be_hidden()
    expect(page.locator("#editor")).to_be_hidden()
    expect(page.locator("#budgets button")).to_have_count(0)
    visible = [b.inner_text() for b in page.locator("button:not(#end-users button)").all()
               if b.is_visible()]
    assert sorted(visible) == ["Apply", "Show limits", "Sign out"]  # (end users: read only)
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, "no sideways scrolling on a phone"
    _screenshot(page, "dashboard-member-phone.png")


def test_a_wrong_key_is_refused_beside_the_field(page: Any, gateway: Gateway) -> None:
    from playwright.sync_api import expect

    page.goto(gateway.url + "/dashboard")
    page.get_by_label("API key", exact=True).fill("sk-not-a-key-0123456789")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#api-key-error")).to_contain_text("Incorrect API key")
    expect(page.locator("#app")).to_be_hidden()
    assert page.evaluate("() => sessionStorage.length") == 0


def _expect_overview(page: Any, gateway: Gateway) -> None:
    """The overview holds what the API answers for every tenant: the spend report's
    by_tenant and totals, each tenant's stack summing to the whole per period, the status's
    limits with the highest use first, the newest denials."""
    from playwright.sync_api import expect

    every = gateway.get("/spend/report", VIEWER_KEY, tenant="all", group_by="day")
    _expect_report(page, every)  # the Spend card: every tenant's, by model
    rows = page.locator("#tenants tbody tr")
    expect(rows).to_have_count(len(every["by_tenant"]))
    for row, tenant in zip(rows.all(), every["by_tenant"], strict=True):
        assert row.get_attribute("data-tenant") == tenant["tenant"]
        for figure in ("cost", "requests", "input_tokens", "output_tokens"):
            cell = row.locator(f'td[data-field="{figure}"]')
            assert float(cell.get_attribute("data-value")) == tenant[figure], figure
    chart = page.evaluate("""() => {
        const chart = window.Chart.getChart('tenant-chart');
        return {labels: chart.data.labels,
                datasets: chart.data.datasets.map(d => ({label: d.label, data: d.data}))};
    }""")
    assert [d["label"] for d in chart["datasets"]] == [t["tenant"] for t in every["by_tenant"]]
    assert chart["labels"] == [p["period"] for p in every["timeseries"]]
    for i, period in enumerate(every["timeseries"]):
        assert sum(d["data"][i] for d in chart["datasets"]) == pytest.approx(period["cost"])

    nearest = gateway.get("/budgets/status", VIEWER_KEY, tenant="all")["limits"][:10]
    rows = page.locator("#nearest tbody tr")
    expect(rows).to_have_count(len(nearest))
    for row, limit in zip(rows.all(), nearest, strict=True):
        assert (row.get_attribute("data-tenant"), row.get_attribute("data-budget-id"),
                row.get_attribute("data-limit")) == (limit["tenant"], limit["budget_id"],
                                                     limit["limit"])
        ratio = row.locator('td[data-field="ratio"]').get_attribute("data-value")
        assert float(ratio) == pytest.approx(limit["ratio"], abs=0.001)

    denials = gateway.get("/denials", VIEWER_KEY, tenant="all", limit="20")["data"]
    rows = page.locator("#denials tbody tr")
    expect(rows.first).to_have_attribute("data-request-id", denials[0]["request_id"],
                                         timeout=LIVE_TIMEOUT_MS)
    assert [row.get_attribute("data-request-id") for row in rows.all()] == [
        d["request_id"] for d in denials]


def test_an_operator_picks_a_tenant_or_overlooks_them_all(page: Any, gateway: Gateway) -> None:
    """Issue 20: an operator's key gets a tenant picker; All tenants is the overview (spend
    per tenant over time, the budgets nearest their limits, recent denials), a tenant is that
    tenant's page. A viewer cannot change budgets, and is told why."""
    from playwright.sync_api import expect

    _sign_in(page, gateway, VIEWER_KEY)
    expect(page.locator("#who-text")).to_have_text("Operator ops-viewer (viewer, read-only)")
    picker = page.get_by_label("Tenant", exact=True)
    expect(picker).to_have_value("all")
    assert picker.locator("option").all_inner_texts() == ["All tenants", "dash", OTHER]
    expect(page.locator("#budgets")).to_be_hidden()  # one tenant's parts wait for a pick
    expect(page.locator("#end-users")).to_be_hidden()

    # a request refused now: the overview shows it within a poll
    status, body = gateway.chat("gpt-4o-mini", 400, key=OTHER_KEY)  # more than 300 an hour
    assert status == 429, body
    _expect_overview(page, gateway)
    denied = page.locator("#denials tbody tr").first
    expect(denied.locator('[data-field="budget"]')).to_have_text(OTHER_BUDGET)
    expect(denied.locator('[data-field="limit"]')).to_have_text("Tokens per hour")
    expect(denied.locator('[data-field="model"]')).to_have_text("gpt-4o-mini")
    expect(denied.get_by_role("button")).to_have_text(OTHER)
    _screenshot(page, "dashboard-operator-overview.png")

    # a tenant picked: its own figures, its budgets read-only for a viewer
    picker.select_option("dash")
    _expect_report(page, gateway.report(group_by="day"))
    expect(page.locator("#tenants-title")).to_be_hidden()
    yaml_card = page.locator(f'article[data-budget-id="{FILE_BUDGET}"]')
    expect(yaml_card.get_by_role("meter")).to_have_count(2)
    new_budget = page.get_by_role("button", name="New budget")
    expect(new_budget).to_be_disabled()
    expect(page.locator("#budgets-read-only")).to_have_text(
        "Read-only: changing budgets needs an operator key whose role is editor; ops-viewer "
        "is a viewer.")
    expect(page.locator("#budgets button:not([disabled])")).to_have_count(0)
    expect(page.locator("#editor")).to_be_hidden()
    _screenshot(page, "dashboard-operator-viewer.png")

    # back to all of them, then a tenant's name there picks it
    picker.select_option("all")
    expect(page.locator("#budgets")).to_be_hidden()
    _expect_overview(page, gateway)
    page.locator("#tenants").get_by_role("button", name=f"Show tenant {OTHER}").click()
    expect(picker).to_have_value(OTHER)
    other = gateway.report(OTHER_KEY, group_by="day")
    _expect_report(page, other)
    expect(page.locator(f'article[data-budget-id="{OTHER_BUDGET}"]')).to_be_visible()
    expect(page.locator(f'article[data-budget-id="{FILE_BUDGET}"]')).to_have_count(0)


def test_an_editor_operator_changes_the_picked_tenants_budgets(page: Any, gateway: Gateway
                                                               ) -> None:
    from playwright.sync_api import expect

    _sign_in(page, gateway, EDITOR_KEY)
    expect(page.locator("#who-text")).to_have_text("Operator ops-editor (editor)")
    page.get_by_label("Tenant", exact=True).select_option(OTHER)
    expect(page.locator(f'article[data-budget-id="{OTHER_BUDGET}"]')).to_be_visible()
    expect(page.locator("#budgets-read-only")).to_be_hidden()
    page.get_by_role("button", name="New budget").click()
    page.get_by_label("Name", exact=True).fill("ops-made")
    page.get_by_label("Max cost per day (USD)").fill("3")
    page.get_by_role("button", name="Create budget").click()
    card = page.locator('article[data-source="api"]', has_text="ops-made")
    expect(card).to_be_visible()
    (made,) = [b for b in gateway.get("/budgets", OTHER_KEY)["data"] if b["name"] == "ops-made"]
    assert made["tenant"] == OTHER and made["max_cost_per_day"] == 3
    assert "ops-made" not in str(gateway.get("/budgets")), "not the other tenant's"
    change = gateway.get("/audit", OTHER_KEY)["data"][0]
    assert (change["who"], change["operator"], change["action"]) == ("ops-editor", True,
                                                                     "create")

    card.get_by_role("button", name="Edit budget ops-made").click()
    page.get_by_label("Max cost per day (USD)").fill("4")
    page.get_by_role("button", name="Save changes").click()
    expect(card.locator('[data-limit="max_cost_per_day"] [data-role="figures"]')
           ).to_contain_text("of $4.0000")
    page.once("dialog", lambda dialog: dialog.accept())
    card.get_by_role("button", name="Delete budget ops-made").click()
    expect(card).to_have_count(0)
    assert [b["name"] for b in gateway.get("/budgets", OTHER_KEY)["data"]] == [OTHER_BUDGET]
