"""WAL checkpoints of the SQLite store, off the event loop.

SQLite checkpoints a WAL database in the commit that crosses ``wal_autocheckpoint`` pages: the
WAL is copied into the database file and both are fsynced, a few ms to ~15 ms that the event
loop (where the store commits) would wait out every few hundred requests: it was the store's
p99 at one client. The store's own connection turns that off; this thread, with a connection
of its own, runs a PASSIVE checkpoint every ``interval_s``. PASSIVE never waits for the writer,
and the writer never waits for it (WAL mode), so the loop never waits for a disk sync. Durability
is SQLite's documented trade for ``synchronous=NORMAL`` either way: a commit survives a crash of
the process at once, and a power loss once checkpointed.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

INTERVAL_S = 1.0


class Checkpointer:
    def __init__(self, path: Path, interval_s: float | None = None) -> None:
        self._path = path
        self._interval_s = INTERVAL_S if interval_s is None else interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self.runs = 0  # checkpoints made
        self.ran = threading.Event()  # set after each one (cleared by whoever waits for it)
        self.alive = self._thread.is_alive

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Waits for a checkpoint under way; closing the store's connection then checkpoints
        what is left (SQLite does on the last connection's close)."""
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        db = sqlite3.connect(self._path, timeout=5.0, isolation_level=None)
        try:
            while not self._stop.wait(self._interval_s):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.runs += 1
                    self.ran.set()
                except sqlite3.Error as exc:  # the next one tries again; commits go on
                    log.warning("could not checkpoint the state database %s: %s",
                                self._path, exc)
        finally:
            db.close()
