"""Suite-wide: keep every log line and response for the closing secret scan, and run it last;
mark the slow tests; name the servers and browser the run uses."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import leaks, tools

SCAN = "test_no_secret_in_any_log_or_response"
TESTS = Path(__file__).resolve().parent
# Whole suites of real processes (gateways, Redis servers and clusters, a browser, the soak):
# `pytest -m "not slow"` leaves them out for a quick inner loop; the test command runs them.
SLOW = ("e2e", "dashboard/test_dashboard_browser.py", "test_container.py", "property",
        "store/test_conformance.py", "ops/test_metrics_bounded.py")


@pytest.fixture(scope="session", autouse=True)
def _capture_everything() -> Iterator[None]:
    handler = leaks.capture_logs()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    yield
    root.setLevel(level)
    root.removeHandler(handler)


def pytest_report_header() -> list[str]:
    return tools.header()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The scan reads what every other test produced, so it goes last."""
    for item in items:
        where = item.path.relative_to(TESTS).as_posix()
        if any(where == slow or where.startswith(slow + "/") for slow in SLOW):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.name == SCAN)


@pytest.fixture(autouse=True)
def _no_state_file_in_the_checkout() -> Iterator[None]:
    """A gateway left on the default store (``sqlite://gateway-state.db``, relative to its
    working directory) must run in a temporary directory: one file shared by tests would
    carry spend from one to the next."""
    stray = Path(__file__).resolve().parent.parent / "gateway-state.db"
    existed = stray.exists()
    yield
    if stray.exists() and not existed:
        stray.unlink()
        for side in ("-wal", "-shm"):
            stray.with_name(stray.name + side).unlink(missing_ok=True)
        pytest.fail("this test left gateway-state.db in the checkout")
