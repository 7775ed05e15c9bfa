"""``memory://?persist=PATH``: what the embedded store knew before a restart, it knows after."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import orjson
import pytest

from gateway.cost.model import Budget, BudgetAction, Filter, Usage
from gateway.cost.windows import DAY, HOUR
from gateway.store.base import Line
from gateway.store.factory import open_store, persist_path
from gateway.store.memory import MemoryStore
from gateway.store.persist import FORMAT, VERSION, Persister, PersistError, persistence

T0 = 1_700_000_000.0
TOKENS = Line("{t}:b:x:tokens", HOUR, 1000, 100)
COST = Line("{t}:b:x:cost", DAY, 10**9, 5000)
USAGE = Usage(input_tokens=20, output_tokens=10, cached_tokens=5, total_tokens=30, cost=0.25,
              model="gpt-4o-mini", provider="openai", tenant_id="t", timestamp=T0 + 1)
BUDGET = Budget(name="api-1", tenant="t", max_cost_per_day=5.0, action=BudgetAction.THROTTLE,
                source="api", id="b1")


async def busy_store() -> MemoryStore:
    """Settled usage, a reservation in flight, an alert mark, usage records, an API budget."""
    store = MemoryStore()
    await store.reserve("t", "r1", [TOKENS, COST], T0, 600)
    await store.settle("t", "r1", [TOKENS, COST], USAGE, T0 + 1)
    await store.reserve("t", "r2", [TOKENS, COST], T0 + 2, 600)
    await store.record(Usage(input_tokens=7, total_tokens=7, tenant_id="u", timestamp=T0 + 3))
    await store.mark_once("{t}:alert:x", T0 + 3600, T0)
    await store.definitions.put(BUDGET)
    return store


async def test_save_and_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    before = await busy_store()
    Persister(before, path).save()

    after = MemoryStore()
    Persister(after, path).load()
    now = T0 + 10
    assert await after.peek([TOKENS, COST], now) == await before.peek([TOKENS, COST], now)
    assert await after.peek([TOKENS, COST], now) == [200, 10_000]
    assert await after.in_flight(now) == 1
    assert await after.query(Filter()) == await before.query(Filter())
    assert await after.query(Filter(tenant_id="t")) == await before.query(Filter(tenant_id="t"))
    assert not await after.mark_once("{t}:alert:x", T0 + 3600, now), "the mark survived"
    assert not await after.settle("t", "r1", [TOKENS], None, now), "settled ids survived"
    assert await after.definitions.list("t") == await before.definitions.list("t")
    assert await after.definitions.list("t") == (1, [BUDGET])


async def test_a_restored_reservation_settles_and_expires_as_before(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    Persister(await busy_store(), path).save()
    after = MemoryStore()
    Persister(after, path).load()
    assert await after.settle("t", "r2", [Line(TOKENS.key, HOUR, 1000, 40)], None, T0 + 5)
    assert await after.peek([TOKENS], T0 + 5) == [140]

    again = MemoryStore()
    Persister(again, path).load()
    assert await again.peek([TOKENS], T0 + 2 + 600) == [100], "r2 expired on schedule"


async def test_save_is_atomic_a_failed_write_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    store = await busy_store()
    persister = Persister(store, path)
    persister.save()
    old = path.read_bytes()
    await store.definitions.delete("t", "b1")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        persister.save()
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"], "no temp file left behind"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        pytest.param(b'{"format": "llm-bud', "not valid JSON", id="truncated"),
        pytest.param(b"[1, 2]", "not a gateway state file", id="not-an-object"),
        pytest.param(orjson.dumps({"format": FORMAT, "version": VERSION + 1, "state": {}}),
                     f"state version {VERSION + 1}", id="newer-version"),
        pytest.param(orjson.dumps({"format": FORMAT, "version": VERSION}), 'no "state"',
                     id="no-state"),
    ],
)
def test_a_bad_file_stops_the_start_naming_it(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with pytest.raises(PersistError) as caught:
        Persister(MemoryStore(), path).load()
    assert str(path) in str(caught.value) and problem in str(caught.value)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        pytest.param(lambda s: s["usage"][0].__setitem__(0, "20"), "usage[0].input_tokens",
                     id="usage-type"),
        pytest.param(lambda s: s["lines"]["{t}:b:x:tokens"].__setitem__("buckets", {}),
                     "lines.{t}:b:x:tokens.buckets", id="buckets-shape"),
        pytest.param(lambda s: s["budgets"]["t"]["budgets"][0].__setitem__("max_cost_per_dya", 1),
                     "max_cost_per_dya", id="budget-unknown-field"),
        pytest.param(lambda s: s.pop("marks"), "marks", id="missing-section"),
    ],
)
async def test_malformed_state_is_refused_whole(tmp_path: Path, change, problem: str) -> None:
    path = tmp_path / "state.json"
    Persister(await busy_store(), path).save()
    doc = orjson.loads(path.read_bytes())
    change(doc["state"])
    path.write_bytes(orjson.dumps(doc))
    store = MemoryStore()
    with pytest.raises(PersistError, match="malformed state") as caught:
        Persister(store, path).load()
    assert problem in str(caught.value) and str(path) in str(caught.value)
    assert await store.peek([TOKENS], T0) == [0] and await store.definitions.list("t") == (0, [])


def test_an_unreadable_file_is_an_error_not_a_fresh_start(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.mkdir()
    with pytest.raises(PersistError, match="cannot be read"):
        Persister(MemoryStore(), path).load()


async def test_a_missing_file_is_a_fresh_start(tmp_path: Path) -> None:
    store = MemoryStore()
    Persister(store, tmp_path / "state.json").load()
    assert await store.peek([TOKENS], T0) == [0]
    assert (await store.query(Filter())).entry_count == 0
    with pytest.raises(PersistError, match="directory does not exist"):
        Persister(store, tmp_path / "nowhere" / "state.json").load()


async def test_persistence_loads_saves_periodically_and_on_exit(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    Persister(await busy_store(), path).save()
    store = MemoryStore()
    context = persistence(store, f"memory://?persist={path}", interval_s=0.01)
    await anext(context)
    assert await store.definitions.list("t") == (1, [BUDGET]), "loaded before serving"

    await store.definitions.delete("t", "b1")
    for _ in range(500):  # bounded poll for the periodic save
        if orjson.loads(path.read_bytes())["state"]["budgets"]["t"]["budgets"] == []:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("no periodic save within 5 s")

    await store.mark_once("{t}:alert:y", T0 + 60, T0)
    with pytest.raises(StopAsyncIteration):
        await anext(context)
    assert "{t}:alert:y" in orjson.loads(path.read_bytes())["state"]["marks"], "final save"


async def test_persistence_saves_on_exit_even_right_after_start(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = MemoryStore()
    context = persistence(store, f"memory://?persist={path}", interval_s=3600)
    await anext(context)
    await store.definitions.put(BUDGET)
    await context.aclose()
    assert orjson.loads(path.read_bytes())["state"]["budgets"]["t"]["version"] == 1


async def test_a_failing_periodic_save_is_logged_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.json"
    store = MemoryStore()
    persister = Persister(store, path, interval_s=0.01)
    real_replace, failures = os.replace, [1]

    def flaky(src: str, dst: Path) -> None:
        if failures:
            failures.pop()
            raise OSError(5, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    task = asyncio.create_task(persister.run())
    for _ in range(500):
        if path.exists():
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert path.exists() and "could not save state" in caplog.text


async def test_persistence_is_a_no_op_without_persist(tmp_path: Path) -> None:
    context = persistence(MemoryStore(), "memory://")
    await anext(context)
    with pytest.raises(StopAsyncIteration):
        await anext(context)
    assert list(tmp_path.iterdir()) == []


def test_persist_path_from_the_store_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert persist_path("memory://?persist=state.json") == tmp_path / "state.json"
    assert persist_path(f"memory://?persist={tmp_path}/a%20b.json") == tmp_path / "a b.json"
    assert persist_path("memory://") is None
    assert persist_path("redis://127.0.0.1:6379/0") is None
    with pytest.raises(ValueError, match="persist= needs one file path"):
        open_store("memory://?persist=")
    assert isinstance(open_store("memory://?persist=state.json"), MemoryStore)


def test_a_state_file_from_before_the_estimate_mark_still_loads() -> None:
    from gateway.store.snapshot import usage_from_row, usage_row

    old = [1, 2, 0, 3, 0.5, "m", "p", "t", 1.0]
    assert usage_from_row(old, "entries[0]").estimated is False
    marked = usage_from_row([*old, True], "entries[0]")
    assert marked.estimated is True and usage_from_row(usage_row(marked), "e") == marked
