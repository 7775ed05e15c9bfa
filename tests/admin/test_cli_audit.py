"""``gateway audit``: the store's recent budget changes, of every tenant or one, as a table
or the API's JSON (``GET /api/client/v1/audit``)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest

from gateway.admin.audit import Auditor, entry_from_json, entry_json
from gateway.admin.tables import audit_table
from gateway.cli import main
from gateway.clock import FakeClock
from gateway.cost.model import Budget
from gateway.remote import KEY_ENV
from gateway.runtime import Runtime
from gateway.settings.load import load_settings
from gateway.store.sqlite import SqliteStore
from tests.admin.test_cli_admin import run, write_config
from tests.proxy.conftest import KEYS, OPERATOR_KEYS, OPERATORS, MakeHarness

T0 = 1_780_000_000.0  # 2026-05-28T20:26:40Z


@pytest.fixture
def changed(tmp_path: Path) -> Path:
    """acme's budget created then raised through the API, one of globex's removed from the
    file; each a second apart."""
    config = write_config(tmp_path / "gateway.yaml", f"sqlite://{tmp_path / 'state.db'}")
    runtime = Runtime.build(load_settings(str(config)))

    async def change() -> None:
        store = SqliteStore(f"sqlite://{tmp_path / 'state.db'}")
        await store.connect()
        clock = FakeClock(T0)
        auditor = Auditor(store, clock, lambda: runtime)
        cap = Budget(name="cap", tenant="acme", max_cost_per_day=1.0, source="api",
                     id="bud_1")
        await auditor.changed("boss", False, None, cap)
        clock.advance(1)
        await auditor.changed("ops-alice", True, cap, dataclasses.replace(
            cap, max_cost_per_day=2.5, alert_threshold=0.5))
        clock.advance(1)
        old = dataclasses.replace(runtime, settings=dataclasses.replace(
            runtime.settings, budgets=(*runtime.settings.budgets,
                                       Budget(name="g", tenant="globex", max_tokens_per_day=9))))
        await auditor.reloaded(old, runtime)
        await store.close()

    asyncio.run(change())
    return config


def test_every_tenants_changes_newest_first_with_what_changed(
    changed: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "audit", "--config", str(changed))
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["At", "(UTC)", "Tenant", "Budget", "Action", "Who", "Change"]
    assert [row.split()[2:5] for row in rows] == [["globex", "g", "delete"],
                                                  ["acme", "cap", "(bud_1)"],
                                                  ["acme", "cap", "(bud_1)"]]
    deleted, updated, created = rows
    assert deleted.startswith("2026-05-28 20:26:42") and "yaml" in deleted
    assert deleted.endswith("max_tokens_per_day 9")
    assert "ops-alice (operator)" in updated
    assert updated.endswith("max_cost_per_day 1.0 -> 2.5, alert_threshold none -> 0.5")
    assert created.endswith("max_cost_per_day 1.0")


def test_one_tenant_one_budget_as_json(changed: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    code, out, _ = run(capsys, "audit", "--config", str(changed), "--tenant", "acme",
                       "--budget", "bud_1", "--limit", "1", "--json")
    assert code == 0
    [entry] = json.loads(out)["data"]
    assert {k: entry[k] for k in ("at", "tenant", "budget_id", "action", "who", "operator",
                                  "source")} == {
        "at": "2026-05-28T20:26:41.000Z", "tenant": "acme", "budget_id": "bud_1",
        "action": "update", "who": "ops-alice", "operator": True, "source": "api"}
    assert (entry["before"]["daily_limit_usd"], entry["after"]["daily_limit_usd"]) == (1.0, 2.5)


def test_a_bad_limit_or_tenant_is_an_error(changed: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    code, _, err = run(capsys, "audit", "--config", str(changed), "--limit", "0")
    assert code == 1 and "--limit" in err
    code, _, err = run(capsys, "audit", "--config", str(changed), "--tenant", "initech")
    assert code == 1 and "initech" in err


async def test_from_a_running_gateway_the_same_as_from_its_store(
    gateway: MakeHarness, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--url: the API's answers, as the same table (an operator's key: every tenant's unless
    --tenant names one; a tenant key: its own)."""
    gw = await gateway(extra=OPERATORS)
    for key, body in (("admin", {"daily_limit_usd": 1}), ("other_admin", {"name": "g",
                                                                           "daily_limit_usd": 2})):
        headers = {"Authorization": f"Bearer {KEYS[key]}"}
        assert (await gw.client.post("/api/client/v1/budgets", json=body, headers=headers)
                ).status == 201
    url = str(gw.client.make_url("")).rstrip("/")

    async def cli(key: str, *args: str) -> str:
        monkeypatch.setenv(KEY_ENV, key)
        code = await asyncio.to_thread(main, ["audit", "--url", url, *args])
        out, err = capsys.readouterr()
        assert code == 0, err
        return out

    stored = await gw.store.audit.recent(None, 100)
    assert await cli(OPERATOR_KEYS["viewer"]) == audit_table(stored) + "\n"
    answered = json.loads(await cli(OPERATOR_KEYS["viewer"], "--tenant", "globex", "--json"))
    assert answered["data"] == [entry_json(e) for e in stored if e.tenant == "globex"]
    assert [entry_json(entry_from_json(e)) for e in answered["data"]] == answered["data"]
    assert await cli(KEYS["ci"], "--limit", "5") == audit_table(
        [e for e in stored if e.tenant == "acme"]) + "\n"
