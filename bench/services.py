"""Processes the bench starts: on a free loopback port, optionally pinned to one CPU with
``taskset`` from their first instruction (so every thread they start stays there), ready once an
HTTP probe answers, stopped by their PID when the block ends."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.procs import free_port, stop

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Service:
    popen: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def rss_mb(self) -> float:
        """Resident memory now."""
        return _status_kb(self.pid, "VmRSS") / 1024

    def peak_rss_mb(self) -> float:
        """The high-water mark of resident memory since the process started."""
        return _status_kb(self.pid, "VmHWM") / 1024


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return int(value.split()[0])
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def require(binary: str, install: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise SystemExit(f"{binary} is not installed: {install}")
    return path


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


@contextlib.contextmanager
def service(command: Sequence[str], port: int, log: Path, *, cpu: int | None = None,
            probe: str = "/healthz", ready_s: float = READY_TIMEOUT_S) -> Iterator[Service]:
    """Runs ``command`` (listening on ``port``) until the block ends."""
    pinned = ["taskset", "-c", str(cpu)] if cpu is not None else []
    with log.open("wb") as out:  # taskset execs the command: the PID is the command's own
        popen = subprocess.Popen([*pinned, *command], stdout=out, stderr=subprocess.STDOUT,
                                 cwd=ROOT)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(popen, url + probe, log, ready_s)
        yield Service(popen, url, log)
    finally:
        stop(popen)


def _wait_ready(popen: subprocess.Popen[bytes], probe: str, log: Path, ready_s: float) -> None:
    deadline = time.monotonic() + ready_s
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"{popen.args!r} exited with {popen.returncode}:\n"
                               f"{log.read_text(errors='replace')[-4000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(probe, timeout=1) as resp:
            if resp.status < 500:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{probe} not ready after {ready_s:g}s:\n"
                       f"{log.read_text(errors='replace')[-4000:]}")


__all__ = ["ROOT", "Service", "free_port", "python_module", "require", "service"]
