"""``gateway serve``: one process, or a supervisor and N workers sharing one port.

Graceful shutdown. The first SIGTERM or SIGINT (later ones are logged and ignored):

1. closes the listening socket: a new connection is refused from then on;
2. closes idle keep-alive connections; a busy one is closed once its response is complete, so
   a request sent after the signal on a kept-alive connection is never proxied;
3. waits up to ``grace_s`` for the requests in flight, streams included, to finish;
4. cancels what is still running (a cut-off request is charged for what it produced) and runs
   the app's cleanup: every settlement is written (the settle buffer flushed), the persisted
   state of ``memory://?persist=`` saved, the store and upstream sessions closed;
5. exits 0.

With ``workers > 1`` this process is a supervisor: it starts N workers (``python -m
gateway.cli serve ... --worker I/N``), each binding the same host:port with SO_REUSEPORT so the
kernel spreads connections over them. It forwards SIGTERM (for SIGTERM or SIGINT) and SIGHUP to
every worker, waits for them (``grace_s`` + ``KILL_MARGIN_S``, then SIGKILL) and succeeds only if
every worker exited 0. A worker that exits on its own, whatever its status, is logged and stops
the whole gateway (the others shut down gracefully; the supervisor exits 1): a half-sized
gateway is not left running unnoticed, and the process manager restarts it whole. A worker whose
supervisor disappears (SIGKILL) shuts itself down gracefully.

Workers need a shared store: the embedded store lives inside one process, so each worker would
keep its own budgets (see ``EMBEDDED_STORE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from gateway import heap
from gateway import log as gateway_log
from gateway.appkeys import IN_FLIGHT
from gateway.errors import ConfigError, ConfigErrors
from gateway.http_server import GatewayRunner
from gateway.in_flight import InFlight
from gateway.log import FIELDS
from gateway.runtime import Runtime
from gateway.settings.watch import LiveConfig, load_live

KILL_MARGIN_S = 30.0  # a stopping worker's cleanup time past the grace period, then SIGKILL
CANCEL_WAIT_S = 5.0  # past the grace period: how long cancelled requests get to settle
KEEPALIVE_TIMEOUT_S = 75.0  # as aiohttp's run_app
PARENT_POLL_S = 1.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

EMBEDDED_STORE = (
    "--workers {workers} needs a shared store, but this file sets store: {store!r}. The "
    "embedded store lives inside one process: {workers} workers would each keep their own "
    "budgets and spend, so every limit would let through up to {workers} times its amount "
    "(and each would journal into the same file). Use a Redis store "
    '(store: "redis://127.0.0.1:6379/0"), or serve with one worker.'
)

log = logging.getLogger(__name__)

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


@dataclass(frozen=True, slots=True)
class Bind:
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Slot:
    """Which worker this process is: ``--worker I/N``, set by the supervisor."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Slot:
        index, _, count = text.partition("/")
        slot = cls(int(index), int(count))  # ValueError on anything but "I/N"
        if not 1 <= slot.index <= slot.count:
            raise ValueError(f"worker {text!r}: expected I/N with 1 <= I <= N")
        return slot

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def serve(
    config_path: str,
    *,
    host: str | None,
    port: int | None,
    workers: int,
    grace_s: float,
    worker: str | None = None,
) -> bool:
    """Serves until SIGTERM or SIGINT; True when everything shut down cleanly.

    Raises ``ConfigErrors`` for a configuration that cannot serve as asked (a bad file, or
    workers on the embedded store), before anything starts.
    """
    slot = Slot.parse(worker) if worker is not None else None
    config = load_live(config_path, Runtime.build)
    settings = config.current.settings
    listen_host, _, listen_port = settings.listen.rpartition(":")
    bind = Bind(host or listen_host, int(listen_port) if port is None else port)
    sharing = slot.count if slot is not None else workers
    if sharing > 1:
        _require_shareable(config_path, settings.store, bind, sharing)
    # Until the event loop takes them over: SIGTERM stops like Ctrl+C (nothing is open yet),
    # SIGHUP is moot (the file was just read) rather than fatal.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    gateway_log.configure()
    if workers > 1 and slot is None:
        _tag_logs("supervisor")
        return asyncio.run(Supervisor(_worker_command(config_path, bind, grace_s),
                                      workers, grace_s).run(bind))
    if slot is not None:
        _tag_logs(f"worker {slot}")
    factory = loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve_app(config, bind, grace_s, slot, "uvloop" if factory else "asyncio"))
    return True


def loop_factory() -> LoopFactory | None:
    """uvloop's event loop when it is installed (``pip install 'llm-budget-gateway[uvloop]'``)."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def _require_shareable(config_path: str, store: str, bind: Bind, workers: int) -> None:
    problems = []
    if urlsplit(store).scheme in ("memory", "sqlite"):
        problems.append(ConfigError(config_path, None, "store",
                                    EMBEDDED_STORE.format(workers=workers, store=store)))
    if bind.port == 0:
        problems.append(ConfigError(config_path, None, "listen", (
            f"--workers {workers} needs a fixed port: with port 0 every worker would listen on "
            "a different one. Set listen: or --port.")))
    if problems:
        raise ConfigErrors(problems)


class _ProcessFields(logging.Filter):
    """Workers share one stderr: each JSON log line says which process wrote it."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self._fields = {"process": process, "pid": os.getpid()}

    def filter(self, record: logging.LogRecord) -> bool:
        given = getattr(record, FIELDS, None) or {}
        setattr(record, FIELDS, {**self._fields, **given})
        return True


def _tag_logs(process: str) -> None:
    for handler in logging.getLogger().handlers:
        handler.addFilter(_ProcessFields(process))


# -- one serving process ------------------------------------------------------------------------


class Stop:
    """The first stop signal (or ``request``) asks for a graceful stop; later ones are ignored:
    Ctrl+C reaches a worker both from the terminal and through its supervisor."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 signals: Sequence[signal.Signals] = STOP_SIGNALS) -> None:
        self.reason: str | None = None
        self._event = asyncio.Event()
        self._loop = loop
        self._signals = signals
        for sig in signals:
            loop.add_signal_handler(sig, self.request, sig.name)

    def close(self) -> None:
        for sig in self._signals:
            self._loop.remove_signal_handler(sig)

    def request(self, reason: str) -> None:
        if self.reason is not None:
            log.info("%s: already shutting down (%s)", reason, self.reason)
            return
        self.reason = reason
        self._event.set()

    async def wait(self) -> str:
        await self._event.wait()
        assert self.reason is not None
        return self.reason


async def _serve_app(config: LiveConfig[Runtime], bind: Bind, grace_s: float,
                     slot: Slot | None, loop_name: str) -> None:
    from gateway.app import create_app
    from gateway.ops.server import ops_site

    stop = Stop(asyncio.get_running_loop())
    orphan_watch = asyncio.create_task(_watch_parent(stop, os.getppid())) if slot else None
    app = create_app(config)
    app.cleanup_ctx.append(ops_site(reuse_port=slot is not None))  # ops.listen, if set
    in_flight = app[IN_FLIGHT]
    runner = GatewayRunner(app, limits=lambda: config.current.settings.limits,
                           handle_signals=False, access_log=None,
                           keepalive_timeout=KEEPALIVE_TIMEOUT_S, shutdown_timeout=CANCEL_WAIT_S)
    try:
        await runner.setup()  # the app's start-up: store, persisted state, tokenizers
        heap.settle()
        try:
            if stop.reason is None:  # a signal during start-up: straight to cleanup
                site = web.TCPSite(runner, bind.host, bind.port, reuse_port=slot is not None)
                await site.start()
                role = f"worker {slot}, " if slot else ""
                print(f"gateway listening on {bind.url} ({role}pid {os.getpid()}, {loop_name})",
                      flush=True)
                reason = await stop.wait()
                await site.stop()  # the listening socket is closed: new connections refused
                assert runner.server is not None
                await _drain(runner.server, in_flight, grace_s, reason)
        finally:
            await runner.cleanup()  # closes what is left, then the app's cleanup contexts
    finally:
        stop.close()
        if orphan_watch is not None:
            orphan_watch.cancel()
    log.info("shut down cleanly")


async def _drain(server: web.Server, in_flight: InFlight, grace_s: float, reason: str) -> None:
    """Lets the requests in flight finish, up to ``grace_s``; cuts off the rest and waits
    (``CANCEL_WAIT_S``) while they settle what they produced."""
    await asyncio.sleep(0)  # requests read just before the close reach ``in_flight``
    server.pre_shutdown()  # no further request on any connection once its response is done
    busy = in_flight.connections()
    idle = [conn for conn in server.connections if conn not in busy]
    for conn in idle:
        conn.force_close()
    log.info("%s: stopped accepting connections, closed %d idle ones; waiting up to %gs for "
             "%d requests in flight", reason, len(idle), grace_s, len(in_flight))
    started = time.monotonic()
    if await in_flight.wait(grace_s):
        log.info("every request finished after %.2fs; flushing usage and state",
                 time.monotonic() - started)
        return
    log.warning("grace period of %gs over: cutting off %d requests still in flight (charged "
                "for what they produced)", grace_s, len(in_flight))
    in_flight.cancel()
    if not await in_flight.wait(CANCEL_WAIT_S):
        log.error("%d cut-off requests still running after %gs; closing anyway",
                  len(in_flight), CANCEL_WAIT_S)


async def _watch_parent(stop: Stop, parent: int) -> None:
    """A worker whose supervisor was killed stops on its own rather than serve unsupervised."""
    while os.getppid() == parent:
        await asyncio.sleep(PARENT_POLL_S)
    log.error("the supervisor (pid %d) is gone: shutting down", parent)
    stop.request("supervisor gone")


# -- the supervisor -----------------------------------------------------------------------------


def _worker_command(config_path: str, bind: Bind, grace_s: float) -> Callable[[Slot], list[str]]:
    def command(slot: Slot) -> list[str]:
        return [sys.executable, "-m", "gateway.cli", "serve", "--config", config_path,
                "--host", bind.host, "--port", str(bind.port), "--grace-s", repr(grace_s),
                "--worker", str(slot)]

    return command


@dataclass
class _Worker:
    slot: Slot
    proc: asyncio.subprocess.Process

    def describe_exit(self) -> str:
        code = self.proc.returncode
        if code is not None and code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with status {code}"


class Supervisor:
    def __init__(self, command: Callable[[Slot], list[str]], workers: int,
                 grace_s: float) -> None:
        self._command = command
        self._slots = [Slot(i, workers) for i in range(1, workers + 1)]
        self._grace_s = grace_s
        self._workers: list[_Worker] = []

    async def run(self, bind: Bind) -> bool:
        loop = asyncio.get_running_loop()
        stop = Stop(loop)
        loop.add_signal_handler(signal.SIGHUP, self._forward, signal.SIGHUP)
        print(f"gateway starting {len(self._slots)} workers on {bind.url} "
              f"(supervisor pid {os.getpid()})", flush=True)
        try:
            for slot in self._slots:
                proc = await asyncio.create_subprocess_exec(*self._command(slot))
                self._workers.append(_Worker(slot, proc))
            exits = [asyncio.ensure_future(w.proc.wait()) for w in self._workers]
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait([stopping, *exits], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            died = self._unexpected_exits(stop)
        finally:
            await self._stop_all()  # on any way out: no worker outlives its supervisor
            stop.close()
            loop.remove_signal_handler(signal.SIGHUP)
        return self._report(died)

    def _unexpected_exits(self, stop: Stop) -> list[_Worker]:
        if stop.reason is not None:
            log.info("%s: stopping %d workers gracefully", stop.reason, len(self._workers))
            return []
        died = [w for w in self._workers if w.proc.returncode is not None]
        for worker in died:
            log.error("worker %s (pid %d) %s unexpectedly: stopping the whole gateway, "
                      "exit status 1", worker.slot, worker.proc.pid, worker.describe_exit())
        return died

    def _forward(self, sig: signal.Signals) -> None:
        for worker in self._workers:
            if worker.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(sig)

    async def _stop_all(self) -> None:
        """SIGTERM to every worker; SIGKILL to those still running after grace + margin."""
        self._forward(signal.SIGTERM)
        running = [w.proc.wait() for w in self._workers if w.proc.returncode is None]
        if running:
            await asyncio.wait([asyncio.ensure_future(r) for r in running],
                               timeout=self._grace_s + KILL_MARGIN_S)
        for worker in self._workers:
            if worker.proc.returncode is None:
                log.error("worker %s (pid %d) still running %gs after SIGTERM: killing it",
                          worker.slot, worker.proc.pid, self._grace_s + KILL_MARGIN_S)
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.kill()
                await worker.proc.wait()

    def _report(self, died: list[_Worker]) -> bool:
        # Killed by the forwarded SIGTERM: it had not installed its handler, so it was still
        # starting and had served nothing (a serving worker always handles SIGTERM).
        stopped = (0, -signal.SIGTERM)
        failed = [w for w in self._workers if w.proc.returncode not in stopped and w not in died]
        for worker in failed:
            log.error("worker %s (pid %d) %s while stopping", worker.slot, worker.proc.pid,
                      worker.describe_exit())
        clean = not died and not failed
        if clean:
            log.info("all %d workers stopped cleanly", len(self._workers))
        return clean
