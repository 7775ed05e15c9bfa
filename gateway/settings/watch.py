"""The configuration in force, replaced whole when its file changes and the new one is valid.

Readers take ``current`` once per request and use that one object throughout, so a request never
sees half of an old configuration and half of a new one. A bad edit is logged and ignored: the
last good configuration stays in force.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from gateway.errors import ConfigError, ConfigErrors
from gateway.settings.load import load_settings
from gateway.settings.schema import Settings

T = TypeVar("T")

log = logging.getLogger(__name__)

Stamp = tuple[int, int, int]  # (st_mtime_ns, st_size, st_ino): changes on in-place and atomic saves


def file_stamp(path: str) -> Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class LiveConfig(Generic[T]):
    """Holds the runtime built from the file; ``build`` compiles it once per successful load.

    ``build`` may raise ``ConfigErrors`` for problems only it can see; any other exception from
    it is a bug and propagates.
    """

    def __init__(self, path: str, build: Callable[[Settings], T], initial: T) -> None:
        self.path = path
        self.reloads = 0
        self.reload_failures = 0
        self._build = build
        self._current = initial
        self._seen = file_stamp(path)  # the version of the file last loaded (or tried)
        self._reloading: set[asyncio.Future[bool]] = set()
        self._one_at_a_time = asyncio.Lock()
        self.on_change: Callable[[T, T], None] | None = None  # (old, new) after each swap
        # (old, new) after on_change, awaited by reload_checked (what the watcher and SIGHUP
        # run): work that needs the store, such as auditing what the reload changed
        self.after_change: Callable[[T, T], Awaitable[None]] | None = None
        # problems only the running gateway can see (the store's API budgets), before a swap
        self.check: Callable[[T], Awaitable[list[ConfigError]]] | None = None

    @property
    def current(self) -> T:
        return self._current

    def reload(self) -> bool:
        """Loads, validates and builds; swaps only if all of that succeeded. Neither ``check``
        nor ``after_change`` runs: for callers without an event loop (tests)."""
        self._seen = file_stamp(self.path)  # before reading: a later write is seen as a change
        try:
            runtime = self._load()
        except ConfigErrors as exc:
            return self._refused(exc)
        return self._swap(runtime)

    async def reload_checked(self) -> bool:
        """``reload``, with ``check`` run on the new configuration before it is swapped in.

        The file is read and built on a worker thread: a build can take a while (the first on
        a new day works out that day's prices in a child process, ~0.4 s), and requests in
        flight go on meanwhile. Reloads take turns (the watcher's and SIGHUP's), so one that
        read the file earlier never swaps in over one that read it later."""
        async with self._one_at_a_time:
            self._seen = file_stamp(self.path)
            try:
                runtime = await asyncio.to_thread(self._load)
                problems = [] if self.check is None else await self.check(runtime)
                if problems:
                    raise ConfigErrors(problems)
            except ConfigErrors as exc:
                return self._refused(exc)
            old = self._current
            self._swap(runtime)
            if self.after_change is not None:
                await self.after_change(old, runtime)
            return True

    def _load(self) -> T:
        return self._build(load_settings(self.path))

    def _refused(self, exc: ConfigErrors) -> bool:
        self.reload_failures += 1
        for error in exc.errors:
            log.error("config reload refused: %s:%s: %s: %s", error.file,
                      error.line if error.line is not None else "?", error.field, error.message)
        count = len(exc.errors)
        log.warning("keeping the last good configuration (%d problem%s)", count,
                    "" if count == 1 else "s")
        return False

    def _swap(self, runtime: T) -> bool:
        old, self._current = self._current, runtime
        self.reloads += 1
        log.info("configuration reloaded from %s", self.path)
        if self.on_change is not None:
            self.on_change(old, runtime)
        return True

    async def watch(self, interval_s: float = 1.0) -> None:
        """Polls the file until cancelled, reloading once a change has settled.

        A change is acted on when two polls in a row see the same new version, so an editor's
        half-written save is not reported as an error. A missing file (mid-save, or deleted) is
        logged once and polled for until it is back.
        """
        pending: Stamp | None = None
        missing = False
        while True:
            await asyncio.sleep(interval_s)
            stamp = file_stamp(self.path)
            if stamp is None:
                if not missing:
                    log.warning("config file %s is missing or unreadable; watching", self.path)
                missing, pending = True, None
                continue
            missing = False
            if stamp == self._seen:
                pending = None
            elif stamp != pending:
                pending = stamp
            else:
                pending = None
                await self.reload_checked()

    def install_sighup(self, loop: asyncio.AbstractEventLoop) -> None:
        """``kill -HUP`` reloads at once, for ops who would rather not wait for the poll."""
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)

    def _on_sighup(self) -> None:
        log.info("SIGHUP: reloading %s", self.path)
        task = asyncio.ensure_future(self.reload_checked())
        self._reloading.add(task)
        task.add_done_callback(self._reloading.discard)


def load_live(path: str | os.PathLike[str], build: Callable[[Settings], T]) -> LiveConfig[T]:
    """The first load: unlike a reload, a bad file here raises ``ConfigErrors``."""
    source = os.fspath(path)
    stamp = file_stamp(source)
    live = LiveConfig(source, build, build(load_settings(source)))
    live._seen = stamp  # the version actually loaded: an edit since then will still be picked up
    return live
