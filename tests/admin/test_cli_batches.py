"""``gateway batches running``: the store's running batches, per tenant, as a table or the
API's JSON (``GET /api/client/v1/batches/running``, with each batch's tenant)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gateway.store.batches import BatchRecord, HeldLine
from gateway.store.sqlite import SqliteStore
from tests.admin.test_cli_admin import run, write_config

T0 = 1_780_000_000.0  # 2026-05-28T20:26:40Z


def record(rid: str, tenant: str, batch_id: str | None, cost_nano: int) -> BatchRecord:
    return BatchRecord(rid, tenant, "mock", "gpt-4o-mini", "/chat/completions",
                       (HeldLine("{acme}:b:acme-daily:max_cost_per_day", "day", 5 * 10**9,
                                 True, True),), 1_200, 3_000, cost_nano, T0, T0 + 90_000,
                       batch_id)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    async def save() -> None:
        store = SqliteStore(f"sqlite://{tmp_path / 'state.db'}")
        await store.connect()
        await store.batches.open(record("r1", "acme", "batch_abc", 1_234_500_000))
        await store.batches.open(record("r2", "acme", None, 7_000))
        await store.batches.open(record("r3", "globex", "batch_xyz", 10**9))
        await store.close()

    asyncio.run(save())
    return write_config(tmp_path / "gateway.yaml", f"sqlite://{tmp_path / 'state.db'}")


def test_running_batches_of_every_tenant_as_a_table(saved: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "batches", "running", "--config", str(saved))
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["Tenant", "Batch", "Model", "Reserved", "Tokens", "Deadline",
                              "(UTC)"]
    assert [row.split()[:2] for row in rows] == [["acme", "batch_abc"], ["acme", "(being"],
                                                 ["globex", "batch_xyz"]]
    assert "$1.2345" in rows[0] and "4,200" in rows[0] and "2026-05-29T21:26:40Z" in rows[0]


def test_one_tenant_as_json(saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "batches", "running", "--config", str(saved), "--tenant",
                       "globex", "--json")
    assert code == 0
    assert json.loads(out) == {"object": "list", "data": [{
        "tenant": "globex", "batch_id": "batch_xyz", "model": "gpt-4o-mini",
        "endpoint": "/v1/chat/completions", "created_at": "2026-05-28T20:26:40Z",
        "deadline": "2026-05-29T21:26:40Z", "reserved_usd": 1.0, "reserved_tokens": 4200}]}


def test_none_running_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async def empty() -> None:
        store = SqliteStore(f"sqlite://{tmp_path / 'state.db'}")
        await store.connect()
        await store.close()

    asyncio.run(empty())
    config = write_config(tmp_path / "gateway.yaml", f"sqlite://{tmp_path / 'state.db'}")
    code, out, _ = run(capsys, "batches", "running", "--config", str(config))
    assert (code, out.strip()) == (0, "No running batches.")


def test_the_spend_report_says_what_the_batch_api_cost(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    from gateway.cost.model import Usage, batch_provider

    async def spend() -> None:
        store = SqliteStore(f"sqlite://{tmp_path / 'state.db'}")
        await store.connect()
        await store.record(Usage(1000, 200, 0, 1200, 0.25, "gpt-4o-mini", "mock", "acme", T0))
        await store.record(Usage(9000, 3000, 0, 12000, 0.5, "gpt-4o-mini",
                                 batch_provider("mock"), "acme", T0 + 60))
        await store.close()

    asyncio.run(spend())
    config = write_config(tmp_path / "gateway.yaml", f"sqlite://{tmp_path / 'state.db'}")
    code, out, _ = run(capsys, "spend", "report", "--config", str(config))
    assert code == 0
    assert out.rstrip().endswith("Of which the Batch API: 1 batch, $0.5000")
    code, out, _ = run(capsys, "spend", "report", "--config", str(config), "--json")
    assert json.loads(out)["batch"] == {"cost": 0.5, "input_tokens": 9000,
                                        "output_tokens": 3000, "requests": 1}
