"""``memory://?persist=PATH``: the embedded store's state survives restarts.

The whole state (counters, reservations in flight, settled ids, alert marks, usage records and
API-created budgets) is saved every few seconds and once more at shutdown, each time into a
temporary file in the same directory that is fsynced and then renamed over the old one: a
crash at any moment leaves the previous file or the new one, never half of one. A crash loses
at most the last interval's usage (a Redis store loses none). A state file that exists but
cannot be read back stops the start: starting empty would silently forget every budget's spend.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import orjson

from gateway.store.base import Store
from gateway.store.factory import persist_path
from gateway.store.memory import MemoryStore

FORMAT = "llm-budget-gateway/memory-store"
VERSION = 1  # raise when the shape of "state" changes; an older gateway then refuses the file

log = logging.getLogger(__name__)


class PersistError(Exception):
    """The state file cannot be used: raised at start-up, which stops rather than start empty."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"state file {path}: {problem} (fix it, or move it away to start with "
                         "an empty store)")


class Persister:
    def __init__(self, store: MemoryStore, path: Path, interval_s: float = 5.0) -> None:
        self.store = store
        self.path = path
        self.interval_s = interval_s
        self._lock = threading.Lock()  # one writer at a time: a periodic save may be in a thread
        self._taken = 0  # snapshots taken, numbered so an older one never replaces a newer one
        self._written = 0
        self._digest = b""  # of the last file written: an idle gateway does not rewrite it

    def load(self) -> None:
        """Restores the saved state; a missing file is a fresh start, a bad one a PersistError."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            if not self.path.parent.is_dir():
                raise PersistError(self.path, "its directory does not exist") from None
            log.info("state file %s not found: starting with an empty store", self.path)
            return
        except OSError as exc:
            raise PersistError(self.path, f"cannot be read: {exc.strerror or exc}") from exc
        try:
            self.store.restore(self._state(raw))
        except ValueError as exc:
            raise PersistError(self.path, f"malformed state: {exc}") from exc
        log.info("state restored from %s", self.path)

    def _state(self, raw: bytes) -> Mapping[str, object]:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise PersistError(self.path, f"not valid JSON, perhaps truncated ({exc})") from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise PersistError(self.path, f'not a gateway state file (no "format": "{FORMAT}")')
        if doc.get("version") != VERSION:
            raise PersistError(self.path, f"state version {doc.get('version')!r}; this gateway "
                                          f"reads version {VERSION}")
        state = doc.get("state")
        if not isinstance(state, dict):
            raise PersistError(self.path, 'no "state" object')
        return state

    def save(self) -> None:
        """Writes the current state now, even if unchanged; raises OSError if it cannot."""
        self._write(*self._take(), force=True)

    async def run(self) -> None:
        """Saves every ``interval_s`` until cancelled, then once more. A failed save is logged
        and retried at the next interval: requests go on being served from memory."""
        try:
            while True:
                await asyncio.sleep(self.interval_s)
                seq, doc = self._take()  # on the loop: no request changes the state mid-copy
                try:
                    await asyncio.to_thread(self._write, seq, doc, force=False)
                except OSError as exc:
                    log.error("could not save state to %s: %s; retrying in %ss",
                              self.path, exc, self.interval_s)
        finally:
            try:
                self.save()
            except OSError as exc:
                log.error("could not save state to %s at shutdown: %s", self.path, exc)

    def _take(self) -> tuple[int, dict[str, object]]:
        self._taken += 1
        return self._taken, {"format": FORMAT, "version": VERSION, "state": self.store.snapshot()}

    def _write(self, seq: int, doc: dict[str, object], *, force: bool) -> None:
        payload = orjson.dumps(doc)
        digest = hashlib.blake2b(payload, digest_size=16).digest()
        with self._lock:
            if seq <= self._written or (digest == self._digest and not force):
                return
            self._replace(payload)
            self._written, self._digest = seq, digest

    def _replace(self, payload: bytes) -> None:
        """Temp file in the same directory, fsync, rename over: the old file or the new one."""
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp",
                                   dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(payload)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if os.name == "posix":  # the rename survives a power cut once its directory is synced
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def read_state(path: Path) -> Mapping[str, object]:
    """The state in a JSON state file (an earlier release's ``memory://?persist=``), checked
    whole; a PersistError naming the file otherwise."""
    store = MemoryStore()
    persister = Persister(store, path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PersistError(path, f"cannot be read: {exc.strerror or exc}") from exc
    state = persister._state(raw)
    try:
        store.restore(state)
    except ValueError as exc:
        raise PersistError(path, f"malformed state: {exc}") from exc
    return state


async def persistence(store: Store, url: str, interval_s: float = 5.0) -> AsyncIterator[None]:
    """The app's cleanup context for ``store: memory://?persist=PATH`` (nothing otherwise):
    loads the state before serving, saves it periodically, and a final time on exit."""
    path = persist_path(url)
    if path is None or type(store) is not MemoryStore:  # the durable store keeps itself
        yield
        return
    persister = Persister(store, path, interval_s)
    persister.load()
    try:
        persister.save()  # a file that cannot be written fails the start, not hours later
    except OSError as exc:
        raise PersistError(path, f"cannot be written: {exc}") from exc
    task = asyncio.create_task(persister.run())
    await asyncio.sleep(0)  # run() enters its try now, so even an immediate cancel saves
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
