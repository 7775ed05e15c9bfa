"""``sqlite://PATH``: the embedded store, durable. Counters are served from memory (the
``MemoryStore``, atomic by construction on one event loop); SQLite is its journal.

Every change that must outlive the process (a settlement and its usage record, usage that
reserved nothing, the API budgets, an alert's mark) is appended to the ``journal`` table, and
the call that made it returns only once that row is committed: a settled request's usage is
on disk before its answer is finished, so killing the process at any moment loses none of it.
Commits are grouped: every row queued during one turn of the event loop goes into one
transaction, committed on the loop (in WAL mode without fsync, a write to the file: cheaper
than handing it to a thread), so the request path waits for a commit, never for a commit each.

WAL mode with ``synchronous=NORMAL``: a committed row survives a crash of the process at once,
and a power loss once the WAL is checkpointed (SQLite's documented trade: the last commits
before a power cut may be lost, the database is never corrupted; checkpoints run every second
on a thread of their own, ``gateway/store/checkpoint.py``, never in a commit on the loop);
``?synchronous=FULL`` makes each commit wait for the disk. Every ``COMPACT_EVERY`` rows the
whole state is written as one snapshot row, and the journal before it is dropped over the next
commits (``TRIM_ROWS`` each), so a restart reads one snapshot and the short journal after it.
Reservations in flight are not journaled: they were never charged, and a restart releases them
(counted in the log).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

import orjson

from gateway.cost.model import Budget, Usage
from gateway.store.audit import AuditEntry, MemoryAudit, Once
from gateway.store.base import Line, ReserveResult
from gateway.store.batches import BatchRecord, MemoryBatches
from gateway.store.checkpoint import Checkpointer
from gateway.store.end_user_days import END_USERS_REPORTED_MAX
from gateway.store.memory import COUNTERS_MAX, LineState, MemoryStore, Pending
from gateway.store.memory_budgets import MemoryBudgetDefinitions
from gateway.store.objects import OBJECT_TTL_S, PER_TENANT, MemoryObjects, Owned, object_key
from gateway.store.snapshot import usage_from_row, usage_row

log = logging.getLogger(__name__)

COMPACT_EVERY = 50_000  # journal rows between snapshots
TRIM_ROWS = 250  # journal rows a snapshot replaced, dropped per commit after it (~0.3 ms)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (seq INTEGER PRIMARY KEY, entry BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS snapshot (id INTEGER PRIMARY KEY CHECK (id = 1),
                                     seq INTEGER NOT NULL, state BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
FORMAT = "llm-budget-gateway/sqlite-store/1"
ROW, SNAPSHOT = "row", "snapshot"  # what a queued write is
_SYNC = ("NORMAL", "FULL")


class StoreFileError(Exception):
    """The database file cannot be used: the gateway stops rather than start empty."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        super().__init__(f"state database {path}: {problem} (fix it or move it away; the "
                         "gateway never starts empty over a file it cannot read)")


def sqlite_path(url: str) -> tuple[Path, str]:
    """``sqlite://PATH[?synchronous=NORMAL|FULL]``: the file (relative to the current
    directory, ``~`` expanded) and the synchronous setting."""
    parts = urlsplit(url)
    raw = parts.netloc + parts.path
    if not raw:
        raise ValueError(f"store {url!r}: expected sqlite://PATH, e.g. sqlite://gateway-state.db")
    sync = parse_qs(parts.query).get("synchronous", ["NORMAL"])[-1].upper()
    if sync not in _SYNC:
        raise ValueError(f"store {url!r}: synchronous= is NORMAL or FULL")
    return Path(raw).expanduser().absolute(), sync


class Journal:
    """The database: rows appended through one writer thread, committed in groups."""

    def __init__(self, path: Path, synchronous: str = "NORMAL", read_only: bool = False) -> None:
        self.path = path
        self._sync = synchronous
        self.read_only = read_only  # a reader beside the gateway (the CLI): never writes
        self._queue: list[tuple[str, int, bytes, asyncio.Future[None] | None]] = []
        self._db: sqlite3.Connection | None = None
        self._flushing = False  # a flush is scheduled for this turn of the loop
        self._lock: IO[str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.seq = 0  # the last row numbered
        self.since_snapshot = 0
        self._trim_upto = 0  # journal rows up to here are in the snapshot: dropped bit by bit
        self._checkpointer: Checkpointer | None = None

    def open(self) -> tuple[Mapping[str, object] | None, list[tuple[int, Any]]]:
        """The last snapshot and the journal after it; a file that is not ours, is corrupt or
        is locked is a StoreFileError naming it."""
        if not self.path.parent.is_dir():
            raise StoreFileError(self.path, "its directory does not exist")
        if self.read_only and not self.path.is_file():
            raise StoreFileError(self.path, "does not exist: has the gateway run with it yet? "
                                            "(a relative path is relative to the directory "
                                            "the gateway started in)")
        try:
            db = self._connect()
            try:
                row = db.execute("SELECT seq, state FROM snapshot WHERE id = 1").fetchone()
                base = 0 if row is None else int(row[0])
                entries = db.execute("SELECT seq, entry FROM journal WHERE seq > ? ORDER BY seq",
                                     (base,)).fetchall()
            finally:
                db.close()
        except sqlite3.DatabaseError as exc:
            raise StoreFileError(self.path, _problem(exc)) from exc
        state = None if row is None else orjson.loads(row[1])
        journal = [(int(seq), orjson.loads(entry)) for seq, entry in entries]
        self._trim_upto = base  # rows a snapshot replaced that may be left: dropped as it runs
        self.seq = max([base, *(seq for seq, _ in journal)])
        self.since_snapshot = len(journal)
        return state, journal

    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            db = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, timeout=5.0,
                                 isolation_level=None)
            _check_format(db)
            return db
        db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None,
                             check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self._sync}")
        db.executescript(_SCHEMA)
        if db.execute("SELECT value FROM meta WHERE name = 'format'").fetchone() is None:
            db.execute("INSERT INTO meta VALUES ('format', ?)", (FORMAT,))
        _check_format(db)
        return db

    def lock(self) -> None:
        """One gateway per file: its counters live in that process, so a second one on the
        same file would keep budgets of its own. Held (``PATH.lock``) until the process ends."""
        if not self.path.parent.is_dir():
            raise StoreFileError(self.path, "its directory does not exist")
        lock_path = self.path.with_name(self.path.name + ".lock")
        handle = lock_path.open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise StoreFileError(self.path, f"locked by another process ({lock_path}): another "
                                            "gateway runs on this file; stop it, or give this "
                                            "one a file of its own") from None
        self._lock = handle

    def write_now(self, state: Mapping[str, object]) -> None:
        """A first snapshot, written before the journal starts."""
        db = self._connect()
        try:
            self._commit_rows(db, [(SNAPSHOT, self.seq, orjson.dumps(state))])
        finally:
            db.close()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._db = self._connect()
        self._db.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints: off the loop
        self._checkpointer = Checkpointer(self.path)
        self._checkpointer.start()

    def append(self, entry: object) -> asyncio.Future[None]:
        """Queues ``entry``; the future is done once it is committed."""
        assert self._loop is not None
        done: asyncio.Future[None] = self._loop.create_future()
        self.seq += 1
        self.since_snapshot += 1
        self._put(ROW, self.seq, orjson.dumps(entry), done)
        return done

    def note(self, entry: object) -> None:
        """Queues ``entry`` to ride with the next commit, never making one of its own."""
        self.seq += 1
        self.since_snapshot += 1
        self._queue.append((ROW, self.seq, orjson.dumps(entry), None))

    def snapshot(self, state: Mapping[str, object]) -> None:
        """Writes ``state`` (everything up to the last row numbered) and drops that journal."""
        self.since_snapshot = 0
        self._put(SNAPSHOT, self.seq, orjson.dumps(state), None)

    def _put(self, kind: str, seq: int, data: bytes, done: asyncio.Future[None] | None
             ) -> None:
        self._queue.append((kind, seq, data, done))
        if not self._flushing and self._loop is not None:
            self._flushing = True
            self._loop.call_soon(self._flush)  # once per turn of the loop: a group commit

    def _flush(self) -> None:
        """Everything queued during this turn of the loop, in one transaction. On the loop:
        a WAL commit without fsync is a write to the file, cheaper than a thread's handoff."""
        self._flushing = False
        batch, self._queue = self._queue, []
        if not batch or self._db is None:
            return
        error: BaseException | None = None
        try:
            self._commit_rows(self._db, [(kind, seq, data) for kind, seq, data, _ in batch])
        except sqlite3.Error as exc:
            log.error("could not write the state database %s: %s", self.path, exc)
            error = exc
        for *_, done in batch:
            if done is not None:
                _settle_future(done, error)

    def _commit_rows(self, db: sqlite3.Connection, rows: list[tuple[str, int, bytes]]) -> None:
        """Journal rows and snapshots (the state up to their seq), in one transaction. The rows
        a snapshot replaces are dropped afterwards, ``TRIM_ROWS`` per commit (``_trim``):
        dropping ``COMPACT_EVERY`` of them in the snapshot's commit held the event loop ~50 ms.
        Left over, they are harmless: a start reads only the rows after the snapshot."""
        db.execute("BEGIN IMMEDIATE")
        try:
            for kind, seq, data in rows:
                if kind == ROW:
                    db.execute("INSERT INTO journal VALUES (?, ?)", (seq, data))
                else:
                    db.execute("INSERT OR REPLACE INTO snapshot VALUES (1, ?, ?)", (seq, data))
                    self._trim_upto = seq
            self._trim(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _trim(self, db: sqlite3.Connection) -> None:
        """Drops up to ``TRIM_ROWS`` of the journal rows the snapshot replaced (in the commit
        under way)."""
        if not self._trim_upto:
            return
        done = db.execute(
            "DELETE FROM journal WHERE seq IN "
            "(SELECT seq FROM journal WHERE seq <= ? ORDER BY seq LIMIT ?)",
            (self._trim_upto, TRIM_ROWS)).rowcount
        if done < TRIM_ROWS:
            self._trim_upto = 0

    def close(self) -> None:
        self._flush()
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        if self._db is not None:
            self._db.close()
            self._db = None
        self.unlock()

    def unlock(self) -> None:
        """Lets another gateway have the file (as the end of this process does)."""
        if self._lock is not None:
            self._lock.close()  # and with it the lock
            self._lock = None


def _check_format(db: sqlite3.Connection) -> None:
    try:
        found = db.execute("SELECT value FROM meta WHERE name = 'format'").fetchone()
    except sqlite3.OperationalError:
        found = None
    if found is None or found[0] != FORMAT:
        db.close()
        raise sqlite3.DatabaseError(f"not a gateway state database (format {FORMAT!r})")


def _settle_future(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(OSError(f"state database write failed: {error}"))


def _problem(exc: sqlite3.DatabaseError) -> str:
    text = str(exc)
    if "locked" in text:
        return "locked by another process (another gateway on this file?)"
    if "not a database" in text or "malformed" in text:
        return f"not a readable SQLite database ({text})"
    return text


class SqliteStore(MemoryStore):
    """The embedded store with a journal: restored on ``connect``, written as it changes."""

    def __init__(self, url: str, *, read_only: bool = False, legacy: Path | None = None,
                 counters_max: int = COUNTERS_MAX,
                 end_users_max: int = END_USERS_REPORTED_MAX) -> None:
        super().__init__(counters_max=counters_max, end_users_max=end_users_max)
        self._legacy = legacy  # a JSON state file of an earlier release, carried over once
        path, sync = sqlite_path(url)
        self.journal = Journal(path, sync, read_only)
        self._budgets = _JournaledBudgets(self)
        self.definitions = self._budgets
        self.batches = _JournaledBatches(self)
        self.audit = _JournaledAudit(self)
        self._objects = _JournaledObjects(self)
        self.objects = self._objects
        self.released_at_start = 0

    async def connect(self) -> None:
        if not self.journal.read_only:
            self.journal.lock()
        state, entries = self.journal.open()
        if state is None and not entries and self._legacy is not None:
            state = self._carry_over(self._legacy)
        if state is not None:
            self.restore(state)
        held: set[str] = set()
        for _, entry in entries:
            self._replay(entry, held)
        for record in self.batches.records.values():
            held.discard(record.rid)
            self._hold_again(record)
        self.released_at_start = self._release_all() + len(held)
        if self.journal.read_only:
            return
        if entries or self.released_at_start:  # the restored state, released holds and all
            self.journal.write_now(self.snapshot())
        self.journal.start(asyncio.get_running_loop())
        log.info("state restored from %s (%d journal rows after its snapshot); %d reservations "
                 "in flight at the last stop released", self.journal.path, len(entries),
                 self.released_at_start)

    async def close(self) -> None:
        if self.journal.read_only:
            return
        self.journal.snapshot(self.snapshot())
        self.journal.close()

    def _carry_over(self, legacy: Path) -> Mapping[str, object] | None:
        """The JSON state an earlier release kept (``memory://?persist=``), as this store's
        first snapshot; the file is renamed ``*.migrated`` once the snapshot is written."""
        from gateway.store.persist import read_state

        if not legacy.is_file() or legacy == self.journal.path:
            return None
        state = read_state(legacy)
        if self.journal.read_only:
            return state
        self.journal.write_now(state)
        legacy.rename(legacy.with_name(legacy.name + ".migrated"))
        log.warning("carried the state file %s over into %s (renamed %s.migrated)", legacy,
                    self.journal.path, legacy.name)
        return state

    def _hold_again(self, record: BatchRecord) -> None:
        """A running batch's reservation, as its record says (journaled after the last
        snapshot, only the record has it); not one settled already."""
        if record.rid in self._settled:
            return
        for line in record.held(record.tokens, record.cost_nano):
            state = self._lines.setdefault(line.key, LineState())
            if record.rid not in state.pending:
                state.hold(record.rid, Pending(line.amount, line.window.bucket(record.created),
                                               record.expires_at))

    def _release_all(self) -> int:
        """Reservations of requests that died with the last process; a batch's lives on
        (its record says so) until the batch is settled."""
        running = set(self.batches.records)
        held = {rid for state in self._lines.values() for rid in state.pending} - running
        for state in self._lines.values():
            for rid in held.intersection(state.pending):
                state.release(rid)
        return len(held)

    async def settle(
        self, tenant: str, rid: str, lines: Sequence[Line], usage: Usage | None, now: float
    ) -> bool:
        if not await super().settle(tenant, rid, lines, usage, now):
            return False
        charges = [[line.key, line.window.bucket(now), line.amount] for line in lines]
        await self._write(["settle", rid, charges, None if usage is None else usage_row(usage)])
        return True

    async def reserve(
        self, tenant: str, rid: str, lines: Sequence[Line], now: float, ttl_s: float,
        version: int | None = None, expected_s: float | None = None,
    ) -> ReserveResult:
        """Journaled with the next commit, never waited for: a reservation is never charged,
        only counted when a restart releases it (one made just before a crash may go
        uncounted)."""
        result = await super().reserve(tenant, rid, lines, now, ttl_s, version, expected_s)
        if result.ok and lines:
            self.journal.note(["reserve", rid])
        return result

    async def record(self, usage: Usage) -> None:
        self.keep(usage)
        await self._write(["record", usage_row(usage)])

    async def mark_once(self, key: str, until: float, now: float) -> bool:
        first = await super().mark_once(key, until, now)
        if first:
            await self._write(["mark", key, until])
        return first

    async def _write(self, entry: list[object]) -> None:
        await self.journal.append(entry)
        if self.journal.since_snapshot >= COMPACT_EVERY:
            self.journal.snapshot(self.snapshot())

    def _replay(self, entry: list[Any], held: set[str]) -> None:
        """One journal row, applied to the state restored so far (``held``: reservations
        not settled yet)."""
        kind = entry[0]
        if kind == "reserve":
            held.add(entry[1])
        elif kind == "settle":
            held.discard(entry[1])
            self._replay_settle(*entry[1:])
        elif kind == "record":
            self._replay_usage(entry[1])
        elif kind == "mark":
            self._marks[entry[1]] = float(entry[2])
        elif kind == "budgets":
            self._budgets.restore(entry[1])
        else:
            self._replay_kept(kind, entry[1])

    def _replay_settle(self, rid: str, charges: list[Any], row: Any) -> None:
        self._settled[rid] = None
        for key, bucket, amount in charges:
            state = self._lines.setdefault(key, LineState())
            state.release(rid)  # held in the snapshot, settled after it
            state.buckets[bucket] = state.buckets.get(bucket, 0) + amount
            state.settled_total += amount
        if row is not None:
            self._replay_usage(row)

    def _replay_kept(self, kind: str, value: Any) -> None:
        """A batch record or an owned object, written or dropped."""
        if kind == "batch":
            record = BatchRecord.loads(value)
            self.batches.records[record.rid] = record
        elif kind == "batch-":
            self.batches.records.pop(value, None)
        elif kind == "object":
            MemoryObjects.restore_into(self._objects, [value])
        elif kind == "object-":
            self._objects.forget(value)
        elif kind == "audit":
            raw, keep, marked = value
            self.audit.add(AuditEntry.loads(raw), keep, None if marked is None else Once(*marked))

    def _replay_usage(self, row: Any) -> None:
        self.keep(usage_from_row(row, "journal"))


class _JournaledBatches(MemoryBatches):
    def __init__(self, store: SqliteStore) -> None:
        super().__init__()
        self._store = store

    async def open(self, record: BatchRecord) -> None:
        await super().open(record)
        await self._store._write(["batch", record.dumps().decode()])

    async def close(self, rid: str) -> None:
        await super().close(rid)
        await self._store._write(["batch-", rid])


class _JournaledAudit(MemoryAudit):
    """An entry kept is journaled with its bound and ``once`` key (``_replay_kept`` adds it
    again the same way)."""

    def __init__(self, store: SqliteStore) -> None:
        super().__init__()
        self._store = store

    async def append(self, entry: AuditEntry, keep: int, once: Once | None = None) -> bool:
        if not self.add(entry, keep, once):
            return False
        marked = None if once is None else [once.key, once.until]
        await self._store._write(["audit", [entry.dumps().decode(), keep, marked]])
        return True


class _JournaledObjects(MemoryObjects):
    def __init__(self, store: SqliteStore) -> None:
        super().__init__()
        self._store = store

    async def put(self, tenant: str, kind: str, oid: str, owned: Owned, now: float,
                  keep: int = PER_TENANT) -> None:
        key = object_key(tenant, kind, oid)
        out = self.add(key, owned, now + OBJECT_TTL_S, tenant, keep)
        await self._store._write(["object", self.row(key)])
        for gone in out:  # replayed as written: the bound of the day is in the journal
            await self._store._write(["object-", gone])

    async def delete(self, tenant: str, kind: str, oid: str) -> None:
        await super().delete(tenant, kind, oid)
        await self._store._write(["object-", object_key(tenant, kind, oid)])


class _JournaledBudgets(MemoryBudgetDefinitions):
    """API budgets, with every change journaled (the tenant's whole set: a few rows)."""

    def __init__(self, store: SqliteStore) -> None:
        super().__init__()
        self._store = store

    async def put(self, budget: Budget) -> int:
        version = await super().put(budget)
        await self._store._write(["budgets", self.snapshot()])
        return version

    async def delete(self, tenant: str, budget_id: str) -> bool:
        deleted = await super().delete(tenant, budget_id)
        if deleted:
            await self._store._write(["budgets", self.snapshot()])
        return deleted
