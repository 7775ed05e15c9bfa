"""Real processes for end-to-end tests: started on free loopback ports, stopped by their PID."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests import leaks

READY_TIMEOUT_S = 20.0
ROOT = Path(__file__).resolve().parent.parent


def _checkout_env() -> dict[str, str]:
    """Children import ``gateway`` from this checkout, whatever their working directory."""
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": str(ROOT) if not path else f"{ROOT}{os.pathsep}{path}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _wait_ready(proc: subprocess.Popen[bytes], probe: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError), urllib.request.urlopen(probe, timeout=1) as resp:
            if resp.status < 500:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{probe} not ready after {READY_TIMEOUT_S}s:\n{log.read_text()}")


@contextlib.contextmanager
def running(args: Sequence[str], port: int, probe_path: str, log: Path,
            env: dict[str, str] | None = None) -> Iterator[Proc]:
    """Runs ``python -m gateway.cli ARGS`` until the block ends, then stops it by its PID. It
    runs in the log's directory: a default ``sqlite://gateway-state.db`` lands there, one per
    test, never in the checkout."""
    leaks.LOG_FILES.append(log)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", *args],
            stdout=out, stderr=subprocess.STDOUT, cwd=log.parent,
            env={**os.environ, **_checkout_env(), **(env or {})},
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(proc, url + probe_path, log)
        yield Proc(proc, url, log)
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@contextlib.contextmanager
def mock_upstream(tmp: Path, worst: bool = False) -> Iterator[Proc]:
    """``gateway mock-upstream`` on a free port, its log in ``tmp``; ``worst``: ``--worst``."""
    port = free_port()
    args = ["mock-upstream", "--port", str(port), *(["--worst"] if worst else [])]
    with running(args, port, "/v1/mock/stats", tmp / "mock.log") as mock:
        yield mock


@contextlib.contextmanager
def gateway_process(config: Path, log: Path, *extra: str,
            env: dict[str, str] | None = None) -> Iterator[Proc]:
    """``gateway serve --config CONFIG`` on a free loopback port until the block ends."""
    port = free_port()
    args = ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port), *extra]
    with running(args, port, "/healthz", log, env) as proc:
        yield proc


def chat(url: str, key: str, model: str = "gpt-4o-mini", **fields: object) -> None:
    """One chat completion through the gateway at ``url`` with ``key``, answered 200."""
    body = {"model": model, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}],
            **fields}
    request = urllib.request.Request(
        f"{url}/v1/chat/completions", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200


def rss_mb(pid: int) -> float:
    """A process's resident memory, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]
