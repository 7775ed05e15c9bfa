"""Suite-wide: keep every log line and response for the closing secret scan, and run it last."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests import leaks

SCAN = "test_no_secret_in_any_log_or_response"


@pytest.fixture(scope="session", autouse=True)
def _capture_everything() -> Iterator[None]:
    handler = leaks.capture_logs()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    yield
    root.setLevel(level)
    root.removeHandler(handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The scan reads what every other test produced, so it goes last."""
    items.sort(key=lambda item: item.name == SCAN)
