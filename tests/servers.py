"""Real servers for tests: started on free loopback ports, stopped by their PID.

A missing server binary fails the test (never skips it), naming what installs it
(``tests.tools`` finds it).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.procs import free_port, stop
from tests.tools import require_redis_server

READY_TIMEOUT_S = 10.0


def start_redis(workdir: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    """A Redis server on ``port`` (the caller stops it; ``tests.tools`` says which binary);
    ``extra`` are its options."""
    binary = require_redis_server()
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


@contextlib.contextmanager
def store_url(kind: str, tmp: Path) -> Iterator[str]:
    """A store of ``kind`` for a gateway process: ``memory``, ``sqlite`` (a file in ``tmp``) or
    ``redis`` (a server started in ``tmp`` for the block)."""
    if kind == "redis":
        (tmp / "redis").mkdir(exist_ok=True)
        with redis_server(tmp / "redis") as url:
            yield url
    else:
        yield "memory://" if kind == "memory" else f"sqlite://{tmp / 'state.db'}"


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
        alive = next(p for p in self.ports if p in self.procs)
        with _client(alive) as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            nodes = _nodes(client)
        for node in nodes:
            if "master" in node.flags and any(first <= slot <= last for first, last in node.slots):
                return node.port
        raise AssertionError(f"no primary serves slot {slot}")

    def wait_ok(self) -> None:
        """Until every running node says the cluster is ok."""
        _wait_cluster_ok([p for p in self.ports if p in self.procs])


@contextlib.contextmanager
def cluster_nodes(workdir: Path, nodes: int = 3, *options: str, replicas: int = 0
                  ) -> Iterator[Cluster]:
    """A throwaway Redis Cluster of ``nodes`` nodes (``replicas`` per primary) started with
    ``options``; made with the cluster commands themselves (what ``redis-cli --cluster create``
    sends), so a server binary alone is enough."""
    cluster = Cluster([], ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                           "--repl-diskless-sync-delay", "0", *options), workdir)
    try:
        for _ in range(nodes):
            port = _cluster_port()
            (workdir / f"node-{port}").mkdir()
            cluster.start(port)
            cluster.ports.append(port)
        _create(cluster.ports, replicas)
        cluster.wait_ok()
        if replicas:
            _wait_replicas_synced(cluster.ports, cluster.ports[nodes // (replicas + 1):])
        yield cluster
    finally:
        for proc in cluster.procs.values():
            stop(proc)


@dataclass(frozen=True, slots=True)
class _Node:
    ident: str
    port: int
    flags: str
    slots: tuple[tuple[int, int], ...]


def _client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, decode_responses=True)


def _nodes(client: redis.Redis) -> list[_Node]:
    """``CLUSTER NODES``, read from its text: id, port, flags and slot ranges per node."""
    text = client.execute_command("CLUSTER", "NODES")
    if not isinstance(text, str):
        raise AssertionError(f"unexpected CLUSTER NODES answer {type(text).__name__}")
    nodes = []
    for line in text.splitlines():
        fields = line.split()
        spans = []
        for span in fields[8:]:
            if span[0].isdigit():
                first, _, last = span.partition("-")
                spans.append((int(first), int(last or first)))
        port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
        nodes.append(_Node(fields[0], port, fields[2], tuple(spans)))
    return nodes


def _create(ports: list[int], replicas: int) -> None:
    """Slots split evenly over the first ``len(ports) // (replicas + 1)`` nodes, every node
    introduced to the first, then each other node made a replica of a primary in turn."""
    primaries = ports[: len(ports) // (replicas + 1)]
    share = 16384 // len(primaries)
    for epoch, port in enumerate(ports, start=1):
        with _client(port) as client:
            client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", epoch)
    for i, port in enumerate(primaries):
        last = 16383 if i == len(primaries) - 1 else (i + 1) * share - 1
        with _client(port) as client:
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * share, last)
    for port in ports[1:]:
        with _client(port) as client:
            client.execute_command("CLUSTER", "MEET", "127.0.0.1", ports[0])
    _wait_until(ports, lambda c: len(_nodes(c)) == len(ports), "cluster nodes did not meet")
    for i, port in enumerate(ports[len(primaries):]):
        with _client(primaries[i % len(primaries)]) as primary:
            ident = primary.execute_command("CLUSTER", "MYID")
        with _client(port) as client:
            client.execute_command("CLUSTER", "REPLICATE", ident)


@contextlib.contextmanager
def redis_cluster(workdir: Path, nodes: int = 3) -> Iterator[str]:
    """A throwaway Redis Cluster of ``nodes`` primaries; yields its ``redis+cluster://`` URL."""
    with cluster_nodes(workdir, nodes) as cluster:
        yield cluster.url


def _wait_cluster_ok(ports: list[int]) -> None:
    _wait_until(ports, lambda c: "cluster_state:ok" in _text(c, "CLUSTER", "INFO"),
                "redis cluster did not reach cluster_state:ok")


def _wait_replicas_synced(ports: list[int], replicas: list[int]) -> None:
    """Until every replica has its primary's data (one still syncing cannot be promoted) and
    every node knows every replica as one (a primary's failover needs its replica known)."""
    def synced(client: redis.Redis) -> bool:
        info = _text(client, "INFO", "replication")
        return "role:slave" in info and "master_link_status:up" in info

    _wait_until(replicas, synced, "redis cluster replicas did not finish syncing")
    _wait_until(ports, lambda c: sum("slave" in n.flags for n in _nodes(c)) == len(replicas),
                "redis cluster nodes did not all learn the replicas")


def _text(client: redis.Redis, *command: str) -> str:
    answer = client.execute_command(*command)
    if isinstance(answer, dict):  # INFO, parsed by the client: back to "key:value" lines
        return "\n".join(f"{k}:{v}" for k, v in answer.items())
    return str(answer)


def _wait_until(ports: list[int], ok: Callable[[redis.Redis], bool], failure: str) -> None:
    """Until ``ok`` holds on every node in ``ports`` (an error is a no, for now)."""
    deadline = time.monotonic() + READY_TIMEOUT_S * 3
    while time.monotonic() < deadline:
        if all(_holds(port, ok) for port in ports):
            return
        time.sleep(0.1)
    raise RuntimeError(failure)


def _holds(port: int, ok: Callable[[redis.Redis], bool]) -> bool:
    try:
        with _client(port) as client:
            return ok(client)
    except redis.RedisError:
        return False


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = log.read_text() if log.exists() else ""
            raise RuntimeError(f"the Redis server exited: {output}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the Redis server is not listening on {port} after {READY_TIMEOUT_S}s")
