"""The SQLite store's WAL is checkpointed by a thread of its own, never in a commit on the loop."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

import pytest

from gateway.cost.model import Filter, Usage
from gateway.cost.windows import HOUR
from gateway.store import checkpoint
from gateway.store.base import Line
from gateway.store.sqlite import SqliteStore

T0 = 1_700_000_000.0
LINE = Line("{t}:b:cap:max_tokens_per_hour", HOUR, 1_000_000, 100)


async def test_commits_never_checkpoint_and_the_thread_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint, "INTERVAL_S", 0.05)
    path = tmp_path / "state.db"
    store = SqliteStore(f"sqlite://{path}")
    await store.connect()
    journal = store.journal
    assert journal._db is not None and journal._checkpointer is not None
    assert journal._db.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
    for i in range(50):
        await store.reserve("t", f"r{i}", [LINE], T0, 60)
        await store.settle("t", f"r{i}", [LINE], Usage(40, 60, 0, 100, 0.001, "m", "p", "t", T0),
                           T0 + 1)
    for _ in range(2):  # the second whole checkpoint began after these commits
        journal._checkpointer.ran.clear()
        assert await asyncio.to_thread(journal._checkpointer.ran.wait, 10)
    shutil.copy(path, tmp_path / "copy.db")  # the database file alone, without its WAL
    copy = sqlite3.connect(tmp_path / "copy.db")
    try:
        assert copy.execute("SELECT count(*) FROM journal").fetchone()[0] >= 50
    finally:
        copy.close()
    checkpointer = journal._checkpointer
    await store.close()
    assert not checkpointer.alive()
    again = SqliteStore(f"sqlite://{path}")
    await again.connect()
    try:
        assert (await again.query(Filter(tenant_id="t"))).entry_count == 50
    finally:
        await again.close()
