"""``/dashboard``: the page and its files from the package, each with a strict CSP, no key
needed to load them, and the key a page signs in with never written to the gateway's log."""

from __future__ import annotations

import hashlib
import logging
import re
from html.parser import HTMLParser
from importlib import resources

import pytest

from gateway.dashboard.routes import CSP, FILES
from gateway.log import JsonFormatter
from tests.proxy.conftest import KEYS, MakeHarness

STATIC = resources.files("gateway.dashboard") / "static"
MODULES = sorted(name for name in FILES if name.endswith(".js") and name != "chart.umd.min.js")


class _Refs(HTMLParser):
    """What the page loads, and anything inline that the CSP would refuse."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "script":
            self._in_script = True
            if named.get("src") is None:
                self.inline.append("<script> without src")
            else:
                self.loads.append(str(named["src"]))
        if tag == "link" and named.get("rel") == "stylesheet":
            self.loads.append(str(named["href"]))
        if tag == "style":
            self.inline.append("<style>")
        self.inline += [f"{tag} {name}=" for name, _ in attrs
                        if name == "style" or name.startswith("on")]

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("inline script text")


def test_the_policy_is_strict() -> None:
    directives = dict(d.split(" ", 1) for d in CSP.split("; "))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == directives["object-src"] == "'none'"
    assert "unsafe" not in CSP and "*" not in CSP and "http" not in CSP


async def test_the_page_loads_without_a_key_with_the_policy_and_only_own_files(
    gateway: MakeHarness,
) -> None:
    gw = await gateway()
    page = await gw.client.get("/dashboard")
    assert page.status == 200
    assert page.content_type == "text/html" and page.charset == "utf-8"
    assert page.headers["Content-Security-Policy"] == CSP
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    html = await page.text()
    assert '<meta name="viewport"' in html
    refs = _Refs()
    refs.feed(html)
    assert refs.inline == [], "the CSP refuses inline scripts, styles and handlers"
    loaded = _with_imports([path.rsplit("/", 1)[1] for path in refs.loads])
    assert sorted(loaded) == sorted(FILES), "every file served is loaded, and only those"
    for name in loaded:
        served = await gw.client.get(f"/dashboard/static/{name}")
        assert served.status == 200, name
        assert served.content_type == FILES[name]
        assert served.headers["Content-Security-Policy"] == CSP
        assert await served.read() == (STATIC / name).read_bytes()


IMPORT = re.compile(r'^import [^;]* from "\./([\w.-]+)";$', re.MULTILINE)


def _with_imports(names: list[str]) -> set[str]:
    """The files the page loads, and the modules those import, and theirs."""
    found: set[str] = set()
    while names:
        name = names.pop()
        if name not in found:
            found.add(name)
            if name in MODULES:
                names += IMPORT.findall((STATIC / name).read_text())
    return found


@pytest.mark.parametrize("path", [
    "/dashboard/static/index.html", "/dashboard/static/VENDORED.md",
    "/dashboard/static/..%2Froutes.py", "/dashboard/static/%2e%2e%2f%2e%2e%2fapp.py",
    "/dashboard/static/", "/dashboard/nothing",
])
async def test_nothing_else_is_served(gateway: MakeHarness, path: str) -> None:
    gw = await gateway()
    assert (await gw.client.get(path)).status == 404


def test_the_vendored_chart_library_is_the_one_recorded() -> None:
    notes = (STATIC / "VENDORED.md").read_text()
    recorded = re.search(r"sha256 of `chart.umd.min.js`: `([0-9a-f]{64})`", notes)
    assert recorded is not None
    library = (STATIC / "chart.umd.min.js").read_bytes()
    assert hashlib.sha256(library).hexdigest() == recorded.group(1)
    assert library.startswith(b"/*!\n * Chart.js v4.6.1")
    assert "MIT License" in (STATIC / "chart.js.LICENSE.md").read_text()


@pytest.mark.parametrize("name", MODULES)
def test_the_page_script_renders_api_data_as_text_only(name: str) -> None:
    script = (STATIC / name).read_text()
    assert "innerHTML" not in script and "outerHTML" not in script
    assert "insertAdjacentHTML" not in script and "document.write" not in script
    assert "eval(" not in script and "localStorage" not in script


async def test_who_am_i_tells_the_page_what_the_key_may_do(gateway: MakeHarness) -> None:
    gw = await gateway()
    for key, role, may in [("ci", "member", False), ("admin", "admin", True),
                           ("other_admin", "owner", True)]:
        resp = await gw.client.get("/api/client/v1/me",
                                   headers={"Authorization": f"Bearer {KEYS[key]}"})
        body = await resp.json()
        assert resp.status == 200
        assert (body["role"], body["may_change_budgets"]) == (role, may)
    assert (await gw.client.get("/api/client/v1/me")).status == 401


async def test_the_key_never_reaches_the_log(
    gateway: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await gateway()
    caplog.set_level(logging.DEBUG)
    auth = {"Authorization": f"Bearer {KEYS['admin']}"}
    assert (await gw.client.get("/dashboard")).status == 200
    for path in ("/me", "/spend/report?group_by=hour", "/budgets", "/budgets/status"):
        assert (await gw.client.get("/api/client/v1" + path, headers=auth)).status == 200
    bad = await gw.client.post("/api/client/v1/budgets", headers=auth,
                               json={"max_cost_per_day": -1})
    assert bad.status == 400
    wrong = await gw.client.get("/api/client/v1/me",
                                headers={"Authorization": f"Bearer {KEYS['admin']}x"})
    assert wrong.status == 401
    lines = [JsonFormatter().format(record) for record in caplog.records]
    assert any('"/api/client/v1/budgets"' in line for line in lines), "access lines captured"
    assert not [line for line in lines if KEYS["admin"] in line]
