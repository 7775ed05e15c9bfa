"""A py-spy profile of one gateway under the bench's load, to see where a request's time goes.

Run from the repository root: ``python -m bench.profile [--store memory|redis] [--seconds S]``.
Starts nginx (the bench's fixed upstream), a redis-server if asked, and the gateway pinned to
CPU 0; drives 16 wrk connections for ``seconds`` while ``py-spy record`` samples the gateway;
prints the functions with the most samples (own time, then with callees) and leaves the raw
profile (speedscope JSON) at the printed path. Its working directory (nginx, the gateway's log,
tens of MB a run) is removed at the end.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import orjson

from bench.bodies import chat_body, write_body
from bench.configs import SECRET, GatewayConfig
from bench.load import wrk
from bench.measure import BODY_SIZE, CHAT_PATH
from bench.services import python_module, require, service
from bench.upstream import JSON_MODEL, JSON_PATH, STREAM_PATH, nginx
from tests.procs import free_port, stop
from tests.servers import start_redis

TOP = 40


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=("memory", "sqlite", "redis"), default="memory")
    parser.add_argument("--forwarder", action="store_true",
                        help="profile the plain forwarder instead, for the baseline")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--budgets", type=int, default=1,
                        help="budgets matching every request (2 limits each)")
    parser.add_argument("--no-profile", action="store_true", help="only the CPU per request")
    args = parser.parse_args()
    py_spy = require("py-spy", "pip install py-spy")
    tmp = Path(tempfile.mkdtemp(prefix="gateway-profile-"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        upstream = stack.enter_context(nginx(tmp))
        store = "memory://"
        if args.store == "redis":
            port = free_port()
            stack.callback(stop, start_redis(tmp, port))
            store = f"redis://127.0.0.1:{port}/0"
        elif args.store == "sqlite":
            store = f"sqlite://{tmp / 'gateway.db'}"
        config = GatewayConfig(store, upstream.url + JSON_PATH, upstream.url + STREAM_PATH,
                               budgets=args.budgets)
        path = config.write(tmp / "gateway.yaml")
        port = free_port()
        command = python_module("gateway.cli", "serve", "--config", str(path), "--port",
                                str(port), "--grace-s", "5")
        if args.forwarder:
            command = python_module("bench.forwarder", "--port", str(port), "--upstream",
                                    upstream.url)
        gateway = stack.enter_context(service(command, port, tmp / "gateway.log", cpu=0))
        body = write_body(tmp, "chat", chat_body(JSON_MODEL, BODY_SIZE))
        wrk(gateway.url + CHAT_PATH, body, SECRET, args.clients, 2)  # warm
        cpu0 = cpu_seconds(gateway.pid)
        plain = wrk(gateway.url + CHAT_PATH, body, SECRET, args.clients, args.seconds)
        used = cpu_seconds(gateway.pid) - cpu0
        print(f"unprofiled: {plain.rps:,.0f} req/s, p50 {plain.p50_ms:.2f} ms, p99 "
              f"{plain.p99_ms:.2f} ms; gateway CPU "
              f"{used / max(plain.requests, 1) * 1e6:.0f} us per request "
              f"(steadier than req/s on a busy machine)")
        if args.no_profile:
            return
        handle, name = tempfile.mkstemp(prefix="gateway-profile-", suffix=".json")
        os.close(handle)
        out = Path(name)
        spy = subprocess.Popen([py_spy, "record", "--pid", str(gateway.pid), "--format",
                                "speedscope", "--rate", "500", "--output", str(out),
                                "--nonblocking"], stdout=subprocess.DEVNULL)
        load = wrk(gateway.url + CHAT_PATH, body, SECRET, args.clients, args.seconds)
        spy.send_signal(2)
        spy.wait(timeout=30)
    print(f"{load.rps:,.0f} req/s, p50 {load.p50_ms:.3f} ms, p99 {load.p99_ms:.3f} ms "
          f"(profiled, so slower than the bench)")
    summarise(out)
    print(f"profile: {out}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/PID/stat``, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summarise(path: Path) -> None:
    doc = orjson.loads(path.read_bytes())
    frames = doc["shared"]["frames"]
    own: collections.Counter[int] = collections.Counter()
    total: collections.Counter[int] = collections.Counter()
    samples = 0
    for profile in doc["profiles"]:
        for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
            samples += weight
            if stack:
                own[stack[-1]] += weight
            for frame in set(stack):
                total[frame] += weight

    def name(i: int) -> str:
        frame = frames[i]
        return f"{frame['name']} ({Path(frame.get('file', '?')).name}:{frame.get('line', 0)})"

    for title, counter in (("own time", own), ("with callees", total)):
        print(f"\n-- top {TOP} by {title} ({samples} samples) --")
        for i, count in counter.most_common(TOP):
            print(f"{100 * count / samples:6.1f}%  {name(i)}")


if __name__ == "__main__":
    main()
