"""Real servers for tests: started on free loopback ports, stopped by their PID.

A missing server binary fails the test (never skips it), naming the command that installs it.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
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


def start_redis(workdir: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    """A redis-server on ``port`` (the caller stops it); ``extra`` are its options."""
    binary = require("redis-server", "apt-get install redis-server")
    log = workdir / f"redis-{port}.log"
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--logfile", str(log), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_port(port, proc, log)
    except BaseException:
        stop(proc)
        raise
    return proc


@contextlib.contextmanager
def redis_server(workdir: Path, port: int | None = None) -> Iterator[str]:
    """A throwaway redis-server; yields its URL."""
    port = port or free_port()
    proc = start_redis(workdir, port)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(proc)


def _cluster_port() -> int:
    """A free port whose cluster-bus port (+10000) is free too."""
    for _ in range(100):
        port = free_port()
        if port < 55_000 and _is_free(port + 10_000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@contextlib.contextmanager
def redis_cluster(workdir: Path, nodes: int = 3) -> Iterator[str]:
    """A throwaway Redis Cluster of ``nodes`` primaries; yields its ``redis+cluster://`` URL."""
    cli = require("redis-cli", "apt-get install redis-tools")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ports = []
        for _ in range(nodes):
            port = _cluster_port()
            node_dir = workdir / f"node-{port}"
            node_dir.mkdir()
            procs.append(start_redis(node_dir, port, "--cluster-enabled", "yes",
                                      "--cluster-config-file", "nodes.conf"))
            ports.append(port)
        addresses = [f"127.0.0.1:{p}" for p in ports]
        subprocess.run([cli, "--cluster", "create", *addresses, "--cluster-replicas", "0",
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)
        _wait_cluster_ok(cli, ports)
        yield f"redis+cluster://127.0.0.1:{ports[0]}"
    finally:
        for proc in procs:
            stop(proc)


def _wait_cluster_ok(cli: str, ports: list[int]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S * 3
    while time.monotonic() < deadline:
        states = [
            subprocess.run([cli, "-p", str(p), "cluster", "info"], capture_output=True,
                           text=True, timeout=5, check=False).stdout
            for p in ports
        ]
        if all("cluster_state:ok" in s for s in states):
            return
        time.sleep(0.1)
    raise RuntimeError("redis cluster did not reach cluster_state:ok")


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited: {log.read_text() if log.exists() else ''}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"redis-server not listening on {port} after {READY_TIMEOUT_S}s")
