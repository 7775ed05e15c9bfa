"""Real servers for tests: started on free loopback ports, stopped by their PID.

A missing server binary fails the test (never skips it), naming the command that installs it.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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


@dataclass
class Cluster:
    """A running Redis Cluster of primaries, node by node: its URL, and a way to kill one node
    and start it again on its port with its own data directory (for failover drills)."""

    ports: list[int]
    options: tuple[str, ...]
    workdir: Path
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The ``redis+cluster://`` URL of a running node."""
        return f"redis+cluster://127.0.0.1:{next(p for p in self.ports if p in self.procs)}"

    @property
    def seeds_url(self) -> str:
        """A ``redis+cluster://`` URL naming every node, as an operator would."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self, port: int) -> None:
        self.procs[port] = start_redis(self.workdir / f"node-{port}", port, *self.options)

    def kill(self, port: int) -> None:
        """SIGKILL, as a crash: no shutdown save, no goodbye to the other nodes."""
        proc = self.procs.pop(port)
        proc.kill()
        proc.wait(timeout=10)

    def owner(self, key: str) -> int:
        """The port of the primary serving ``key``'s slot."""
        cli = require("redis-cli", "apt-get install redis-tools")
        alive = next(p for p in self.ports if p in self.procs)
        slot = int(subprocess.run([cli, "-p", str(alive), "cluster", "keyslot", key],
                                  capture_output=True, text=True, timeout=5, check=True).stdout)
        out = subprocess.run([cli, "-p", str(alive), "cluster", "nodes"],
                             capture_output=True, text=True, timeout=5, check=True).stdout
        for line in out.splitlines():
            fields = line.split()
            if "master" not in fields[2]:
                continue
            for span in fields[8:]:
                first, _, last = span.partition("-")
                if span[0].isdigit() and int(first) <= slot <= int(last or first):
                    return int(fields[1].split(":")[1].split("@")[0])
        raise AssertionError(f"no primary serves slot {slot}")

    def wait_ok(self) -> None:
        """Until every running node says the cluster is ok."""
        _wait_cluster_ok(require("redis-cli", "apt-get install redis-tools"),
                         [p for p in self.ports if p in self.procs])


@contextlib.contextmanager
def cluster_nodes(workdir: Path, nodes: int = 3, *options: str, replicas: int = 0
                  ) -> Iterator[Cluster]:
    """A throwaway Redis Cluster of ``nodes`` nodes (``replicas`` per primary) started with
    ``options``."""
    cli = require("redis-cli", "apt-get install redis-tools")
    cluster = Cluster([], ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                               *options), workdir)
    try:
        for _ in range(nodes):
            port = _cluster_port()
            (workdir / f"node-{port}").mkdir()
            cluster.start(port)
            cluster.ports.append(port)
        addresses = [f"127.0.0.1:{p}" for p in cluster.ports]
        subprocess.run([cli, "--cluster", "create", *addresses, "--cluster-replicas", str(replicas),
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)
        cluster.wait_ok()
        if replicas:
            _wait_replicas_synced(cli, cluster.ports)
        yield cluster
    finally:
        for proc in cluster.procs.values():
            stop(proc)


@contextlib.contextmanager
def redis_cluster(workdir: Path, nodes: int = 3) -> Iterator[str]:
    """A throwaway Redis Cluster of ``nodes`` primaries; yields its ``redis+cluster://`` URL."""
    with cluster_nodes(workdir, nodes) as cluster:
        yield cluster.url


def _wait_cluster_ok(cli: str, ports: list[int]) -> None:
    _wait_every_node(cli, ports, ("cluster", "info"), lambda out: "cluster_state:ok" in out,
                     "redis cluster did not reach cluster_state:ok")


def _wait_replicas_synced(cli: str, ports: list[int]) -> None:
    """Until every replica has its primary's data: one still syncing cannot be promoted."""
    _wait_every_node(cli, ports, ("info", "replication"),
                     lambda out: "role:master" in out or "master_link_status:up" in out,
                     "redis cluster replicas did not finish syncing")


def _wait_every_node(cli: str, ports: list[int], command: tuple[str, ...],
                     ok: Callable[[str], bool], failure: str) -> None:
    """Until ``command``'s answer is ``ok`` on every node in ``ports``."""
    deadline = time.monotonic() + READY_TIMEOUT_S * 3
    while time.monotonic() < deadline:
        answers = [
            subprocess.run([cli, "-p", str(p), *command], capture_output=True,
                           text=True, timeout=5, check=False).stdout
            for p in ports
        ]
        if all(ok(answer) for answer in answers):
            return
        time.sleep(0.1)
    raise RuntimeError(failure)


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited: {log.read_text() if log.exists() else ''}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"redis-server not listening on {port} after {READY_TIMEOUT_S}s")
