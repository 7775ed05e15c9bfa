"""The machine line: where and on what the figures were taken."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from typing import Any

from bench.services import ROOT


def _output(*command: str) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False,
                              cwd=ROOT)
    except OSError:
        return "?"
    return (done.stdout + done.stderr).strip()


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _word(text: str, index: int) -> str:
    words = text.split()
    return words[index] if len(words) > index else "?"


def describe(pinned: bool) -> dict[str, Any]:
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    load = os.getloadavg()
    tools = {
        "nginx": _output("nginx", "-v").rpartition("/")[2],
        "wrk": _word(_output("wrk", "--version"), 1),
        "redis": _word(_output("redis-server", "--version"), 2).removeprefix("v="),
        "uvloop": _version("uvloop"),
        "aiohttp": _version("aiohttp"),
    }
    commit = _output("git", "rev-parse", "--short", "HEAD")
    changed = len(_output("git", "status", "--porcelain", "--", "gateway").splitlines())
    info: dict[str, Any] = {
        "date": now, "nproc": os.cpu_count(), "python": platform.python_version(),
        "platform": platform.platform(), "load_average": load, "tools": tools,
        "commit": commit, "gateway_files_changed": changed, "pinned": pinned,
    }
    info["lines"] = [
        f"{now}  nproc {os.cpu_count()}, Python {platform.python_version()}, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {platform.platform()}",
        "  " + ", ".join(f"{k} {v}" for k, v in tools.items())
        + f"; git {commit} ({changed} files under gateway/ differ from it)",
        "  pinning: " + ("systems under test on CPU 0; nginx, redis, wrk, streaming client on "
                         "CPU 1 (taskset)" if pinned else "none (needs taskset and CPUs 0, 1)"),
    ]
    return info
