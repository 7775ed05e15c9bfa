"""The durable embedded store: what a settled request charged survives the process, however
it ends; a file it cannot use stops the start with a message naming it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.cost.model import Budget, Filter, Usage
from gateway.cost.windows import HOUR
from gateway.store import sqlite
from gateway.store.base import Line
from gateway.store.sqlite import SqliteStore, StoreFileError

T0 = 1_700_000_000.0
LINE = Line("{t}:b:cap:max_tokens_per_hour", HOUR, 1_000, 100)
CHARGE = Line(LINE.key, HOUR, 1_000, 30)


def usage(tokens: int = 30) -> Usage:
    return Usage(10, tokens - 10, 0, tokens, 0.001, "gpt-4o-mini", "mock", "t", T0)


async def opened(path: Path) -> SqliteStore:
    store = SqliteStore(f"sqlite://{path}")
    await store.connect()
    return store


async def test_a_crashed_stores_settlements_are_all_there_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = await opened(path)
    for i in range(5):
        assert (await store.reserve("t", f"r{i}", [LINE], T0, 60)).ok
        assert await store.settle("t", f"r{i}", [CHARGE], usage(), T0 + 1)
    assert (await store.reserve("t", "held", [LINE], T0 + 2, 60)).ok  # in flight at the crash
    await store.definitions.put(Budget(name="api", tenant="t", id="bud_1", max_tokens_per_day=9))
    assert await store.mark_once("alert-key", T0 + 100, T0)
    # no close(): the process is gone; its commits are all it left, and its lock went with it
    store.journal.unlock()
    again = await opened(path)
    try:
        spent = await again.query(Filter(tenant_id="t"))
        assert (spent.entry_count, spent.total_input_tokens + spent.total_output_tokens) == (5, 150)
        assert await again.peek([LINE], T0 + 3) == [150]  # the held 100 released, not charged
        assert again.released_at_start == 1
        assert [b.id for b in (await again.definitions.list("t"))[1]] == ["bud_1"]
        assert not await again.mark_once("alert-key", T0 + 100, T0 + 1)
        assert not await again.settle("t", "r0", [LINE], usage(), T0 + 4), "settled once only"
    finally:
        await again.close()


async def test_a_snapshot_replaces_the_journal_and_restores_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite, "COMPACT_EVERY", 3)
    path = tmp_path / "state.db"
    store = await opened(path)
    for i in range(7):
        await store.reserve("t", f"r{i}", [LINE], T0, 60)
        await store.settle("t", f"r{i}", [LINE], usage(), T0 + 1)
    await store.close()
    again = await opened(path)
    try:
        assert (await again.query(Filter(tenant_id="t"))).entry_count == 7
        assert await again.peek([LINE], T0 + 2) == [700]
    finally:
        await again.close()


def _replaced_rows(path: Path) -> int:
    """Journal rows the snapshot already holds."""
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT count(*) FROM journal WHERE seq <= "
                              "(SELECT seq FROM snapshot WHERE id = 1)").fetchone()[0])
    finally:
        db.close()


async def test_the_rows_a_snapshot_replaced_are_dropped_a_few_per_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot's commit writes the snapshot only (dropping all the rows it replaced at once
    held the event loop ~50 ms); they go ``TRIM_ROWS`` per later commit. Killed with some of
    them left, the store restores the same from the snapshot and the rows after it."""
    monkeypatch.setattr(sqlite, "COMPACT_EVERY", 10)
    monkeypatch.setattr(sqlite, "TRIM_ROWS", 3)
    path = tmp_path / "state.db"
    store = await opened(path)
    for i in range(6):  # 12 rows: a snapshot after the 10th
        await store.reserve("t", f"r{i}", [LINE], T0, 60)
        await store.settle("t", f"r{i}", [CHARGE], usage(), T0 + 1)
    left = _replaced_rows(path)
    assert 0 < left < 10, "some replaced rows still there, some dropped with later commits"
    store.journal.unlock()  # killed: no close(), no last snapshot
    again = await opened(path)
    try:
        spent = await again.query(Filter(tenant_id="t"))
        assert (spent.entry_count, await again.peek([LINE], T0 + 2)) == (6, [180])
        for i in range(4):  # the rest of the replaced rows go, a few per commit
            await again.settle("t", f"late{i}", [CHARGE], usage(), T0 + 3)
        assert _replaced_rows(path) == 0, "only the rows after the snapshot are left"
    finally:
        await again.close()


@pytest.mark.parametrize("content", [b"not a database at all, just text" * 100, b"\x00" * 4096])
async def test_a_file_that_is_not_a_state_database_stops_the_start(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(content)
    with pytest.raises(StoreFileError) as refused:
        await opened(path)
    assert str(path) in str(refused.value) and "move it away" in str(refused.value)


async def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(StoreFileError, match="directory does not exist"):
        await opened(tmp_path / "nowhere" / "state.db")


async def test_a_second_gateway_on_the_same_file_is_refused(tmp_path: Path) -> None:
    """Counters live in the process: two on one file would keep two sets of budgets."""
    path = tmp_path / "state.db"
    first = await opened(path)
    try:
        with pytest.raises(StoreFileError, match="locked by another process"):
            await opened(path)
        reader = SqliteStore(f"sqlite://{path}", read_only=True)  # the CLI beside it: fine
        await reader.connect()
        await reader.close()
    finally:
        await first.close()
    again = await opened(path)  # released with the first
    await again.close()


async def test_a_running_batch_keeps_its_reservation_and_record_across_a_restart(
        tmp_path: Path) -> None:
    """A request's reservation dies with the process; a batch's runs on upstream, so its
    reservation, its record and its files' owners survive a crash, and it settles once."""
    from gateway.store.batches import BatchRecord, HeldLine
    from gateway.store.objects import Owned

    path = tmp_path / "state.db"
    store = await opened(path)
    assert (await store.reserve("t", "batch-rid", [LINE], T0, 90_000)).ok
    assert (await store.reserve("t", "request-rid", [LINE], T0, 60)).ok
    record = BatchRecord("batch-rid", "t", "mock", "gpt-4o-mini", "/chat/completions",
                         (HeldLine(LINE.key, "hour", 1_000, True, False),), 50, 50, 9, T0,
                         T0 + 90_000, "batch_1")
    await store.batches.open(record)
    await store.objects.put("t", "file", "file-1", Owned("mock", None, "{}"), T0)
    store.journal.unlock()  # a crash: no close()
    again = await opened(path)
    try:
        assert again.released_at_start == 1  # the request's, not the batch's
        assert await again.peek([LINE], T0 + 1) == [100]
        assert await again.batches.pending() == [record]
        assert await again.objects.get("t", "file", "file-1", T0) == Owned("mock", None, "{}")
        assert await again.settle("t", "batch-rid", [CHARGE], usage(), T0 + 2)
        await again.batches.close("batch-rid")
        await again.objects.delete("t", "file", "file-1")
    finally:
        await again.close()
    third = await opened(path)
    try:
        assert await third.batches.pending() == []
        assert await third.objects.get("t", "file", "file-1", T0) is None
        assert await third.peek([LINE], T0 + 3) == [30]
    finally:
        await third.close()


async def test_objects_pushed_out_by_the_bound_stay_out_after_a_restart(tmp_path: Path) -> None:
    from gateway.store.objects import Owned

    path = tmp_path / "state.db"
    store = await opened(path)
    for i in range(5):
        await store.objects.put("t", "file", f"file-{i}", Owned("mock"), T0, keep=2)
    store.journal.unlock()  # a crash: no close()
    again = await opened(path)
    try:
        kept = [i for i in range(5)
                if await again.objects.get("t", "file", f"file-{i}", T0) is not None]
        assert kept == [3, 4]
    finally:
        await again.close()


async def test_audit_entries_and_their_once_marks_survive_a_crash_and_a_snapshot(
        tmp_path: Path) -> None:
    from gateway.store.audit import AuditAction, AuditEntry, AuditSource, Once

    def entry(at: float, limit: float) -> AuditEntry:
        return AuditEntry(at, "t", "cap", "cap", AuditAction.UPDATE, "yaml", False,
                          AuditSource.YAML,
                          {"name": "cap", "max_cost_per_day": 1.0},
                          {"name": "cap", "max_cost_per_day": limit})

    path = tmp_path / "state.db"
    store = await opened(path)
    once = Once("cap:abc", T0 + 300)
    for i in range(3):
        assert await store.audit.append(entry(T0 + i, 2.0 + i), keep=2, once=None)
    assert await store.audit.append(entry(T0 + 3, 9.0), keep=2, once=once)
    kept = await store.audit.recent("t", 10)
    store.journal.unlock()  # a crash: no close()
    again = await opened(path)
    try:
        assert await again.audit.recent("t", 10) == kept == [entry(T0 + 3, 9.0),
                                                            entry(T0 + 2, 4.0)]
        assert not await again.audit.append(entry(T0 + 4, 9.0), keep=2, once=once)
    finally:
        await again.close()  # written as one snapshot
    third = await opened(path)
    try:
        assert await third.audit.recent(None, 10) == kept
        assert not await third.audit.append(entry(T0 + 5, 9.0), keep=2, once=once)
    finally:
        await third.close()
