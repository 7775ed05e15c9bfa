"""Real servers for tests: started on free loopback ports, stopped by their PID.

A missing server binary fails the test (never skips it), naming the command that installs it.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import free_port, stop

READY_TIMEOUT_S = 10.0


def require(binary: str, install: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.fail(f"{binary} is not installed: run `{install}` (.ci/run does)")
    return path


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A throwaway redis-server; yields its URL."""
    binary = require("redis-server", "apt-get install redis-server")
    port = free_port()
    log = workdir / f"redis-{port}.log"
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--logfile", str(log)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_port(port, proc, log)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(proc)


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    import socket

    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited: {log.read_text() if log.exists() else ''}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"redis-server not listening on {port} after {READY_TIMEOUT_S}s")
