"""``gateway spend end-users``, ``spend report --end-user`` and ``budgets status --end-user``
(issue 19): the admin API's end-user figures, read by the CLI from the store the configuration
names, as tables or as the API's JSON."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.client import SyncClient
from gateway.cost.model import Usage
from gateway.store.memory import MemoryStore
from gateway.store.persist import Persister
from tests.admin.test_cli_admin import SECRETS, SPEND_COLUMNS, at, run, tables, write_config
from tests.procs import gateway_process, mock_upstream

EACH = "  - {name: each, tenant: acme, per: end_user, max_cost_per_day: 2}\n"


def spent(end_user: str | None, cost: float, day: str, tenant: str = "acme") -> Usage:
    return Usage(100, 10, 0, 110, cost, "gpt-4o-mini", "mock", tenant, at(day),
                 end_user=end_user)


RECORDS = [spent("alice", 0.5, "2026-05-01"), spent("bob", 0.25, "2026-05-01"),
           spent("carol", 0.125, "2026-05-01"),  # past the day's cap of 2: (other)
           spent("alice", 1.0, "2026-05-02"), spent("dave", 0.0625, "2026-05-02"),
           spent(None, 9.0, "2026-05-02"),  # names no end user
           spent("alice", 0.001, "2026-05-02", tenant="globex")]


def configured(tmp_path: Path, store: str, mock: str = "http://127.0.0.1:9") -> Path:
    path = write_config(tmp_path / "gateway.yaml", store, mock)
    path.write_text(path.read_text() + EACH)
    return path


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    """A config on ``memory://?persist=`` and its state holding ``RECORDS``, written by a store
    keeping 2 end users a day a row of their own."""
    state = tmp_path / "state.json"
    store = MemoryStore(end_users_max=2)

    async def record() -> None:
        for usage in RECORDS:
            await store.record(usage)

    asyncio.run(record())
    Persister(store, state).save()
    return configured(tmp_path, f"memory://?persist={state}")


def test_end_users_by_spend_per_tenant(saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "spend", "end-users", "--config", str(saved))
    assert (code, err) == (0, "")
    assert out.startswith("Tenant acme: end users by spend, all recorded time (USD)\n")
    assert "\n\nTenant globex: end users by spend" in out
    acme, globex = tables(out)
    acme.assert_aligned(SPEND_COLUMNS)
    assert acme.header.split()[:2] == ["END", "USER"]
    assert acme.rows() == [["alice", "2", "200", "20", "$1.5000"],
                           ["bob", "1", "100", "10", "$0.2500"],
                           ["dave", "1", "100", "10", "$0.0625"],
                           ["(other)", "1", "100", "10", "$0.1250"],
                           ["TOTAL", "5", "500", "50", "$1.9375"]]
    assert globex.row("alice") == ["alice", "1", "100", "10", "$0.0010"]

    code, out, _ = run(capsys, "spend", "end-users", "--config", str(saved), "--tenant", "acme",
                       "--from", "2026-05-02", "--limit", "1")
    assert code == 0 and "Tenant acme: end users by spend, 2026-05-02 to now (USD)" in out
    (table,) = tables(out)
    assert [r[0] for r in table.rows()] == ["alice", "TOTAL"]
    assert out.rstrip().endswith("1 more end users in the total (--limit lists more)")


def test_end_users_json_is_the_apis_body(saved: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    code, out, _ = run(capsys, "spend", "end-users", "--config", str(saved), "--tenant", "acme",
                       "--to", "2026-05-01", "--json")
    assert code == 0
    assert json.loads(out) == {
        "object": "list", "total_cost": 0.875, "currency": "USD", "total_input_tokens": 300,
        "total_output_tokens": 30, "requests": 3, "end_users": 2,
        "data": [{"end_user": "alice", "cost": 0.5, "input_tokens": 100, "output_tokens": 10,
                  "requests": 1},
                 {"end_user": "bob", "cost": 0.25, "input_tokens": 100, "output_tokens": 10,
                  "requests": 1}],
        "other": {"cost": 0.125, "input_tokens": 100, "output_tokens": 10, "requests": 1}}
    code, out, _ = run(capsys, "spend", "end-users", "--config", str(saved), "--json")
    assert list(json.loads(out)) == ["acme", "globex"]


def test_one_end_users_report_and_status(saved: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    code, out, _ = run(capsys, "spend", "report", "--config", str(saved), "--tenant", "acme",
                       "--end-user", "alice")
    assert code == 0
    assert out.startswith("Spend of tenant acme, end user alice, all recorded time, by day")
    (periods,) = tables(out)  # no table by model: an end user's spend is kept per day
    assert [r[0] for r in periods.rows()] == ["2026-05-01", "2026-05-02", "TOTAL"]
    assert periods.row("TOTAL")[4] == "$1.5000"
    code, out, _ = run(capsys, "spend", "report", "--config", str(saved), "--end-user", "alice",
                       "--group-by", "month", "--json")
    body = json.loads(out)
    assert body["end_user"] == "alice" and body["requests"] == 3  # both tenants' alice
    assert "by_model" not in body

    code, out, _ = run(capsys, "budgets", "status", "--config", str(saved), "--tenant", "acme",
                       "--end-user", "alice")
    assert code == 0 and out.startswith("Tenant acme\nSpent by end user alice: 0 tokens in ")
    (table,) = tables(out)
    assert table.row("each")[1] == "per=end_user"


@pytest.mark.parametrize(("args", "message"), [
    (("spend", "report", "--end-user", "bob\n"),
     "error: Invalid end user in the '--end-user' parameter: must be printable"),
    (("spend", "report", "--end-user", "x" * 300), "(limits.end_user_max), got 300."),
    (("spend", "report", "--end-user", "bob", "--group-by", "hour"),
     "error: Invalid '--group-by': an end user's spend is kept per day"),
    (("spend", "report", "--end-user", "bob", "--model", "gpt-4o"),
     "error: Invalid '--model' with '--end-user'"),
    (("spend", "end-users", "--limit", "0"),
     "error: Invalid '--limit': expected a whole number from 1 to 1000, got '0'."),
    (("spend", "end-users", "--from", "2026-05-03", "--to", "2026-05-01"),
     "error: Invalid '--from': it is not before '--to'."),
    (("spend", "end-users", "--tenant", "initech"), "error: no tenant 'initech' in "),
    (("budgets", "status", "--end-user", "bob\u202e"), "'--end-user' parameter"),
])
def test_bad_end_user_arguments_are_one_line_errors(
    saved: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    code, out, err = run(capsys, *args, "--config", str(saved))
    assert (code, out) == (1, "")
    assert message in err and err.startswith("error: ") and "Traceback" not in err
    assert "x" * 20 not in err


@dataclass
class Served:
    config: Path
    answers: dict[str, Any]  # the API's, while the gateway runs


def _chat(url: str, end_user: str) -> None:
    body = {"model": "gpt-4o-mini", "max_tokens": 20, "safety_identifier": end_user,
            "messages": [{"role": "user", "content": "hi"}]}
    request = urllib.request.Request(
        f"{url}/v1/chat/completions", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {SECRETS['app']}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A gateway on its default, durable store (SQLite), which the CLI reads beside it."""
    tmp = tmp_path_factory.mktemp("served")
    with mock_upstream(tmp) as mock:
        config = configured(tmp, f"sqlite://{tmp / 'state.db'}", mock.url)
        with gateway_process(config, tmp / "gateway.log") as gw:
            for end_user in ("alice", "bob", "alice"):
                _chat(gw.url, end_user)
            with SyncClient(gw.url, SECRETS["app"]) as api:
                answers = {"end-users": api.spend.end_users(),
                           "report": api.spend.report(end_user="alice"),
                           "status": api.budgets.status(end_user="alice")}
            yield Served(config, answers)


def test_json_is_what_the_api_answered(served: Served, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    common = ("--config", str(served.config), "--tenant", "acme", "--json")
    code, out, _ = run(capsys, "spend", "end-users", *common)
    assert code == 0 and json.loads(out) == served.answers["end-users"]
    assert [u["end_user"] for u in json.loads(out)["data"]] == ["alice", "bob"]
    code, out, _ = run(capsys, "spend", "report", "--end-user", "alice", *common)
    assert code == 0 and json.loads(out) == served.answers["report"]
    code, out, _ = run(capsys, "budgets", "status", "--end-user", "alice", *common)
    status, answered = json.loads(out), served.answers["status"]
    for body in (status, answered):
        for budget in body["budgets"]:
            for limit in budget["limits"]:
                limit.pop("resets_in_s")  # counts down between the two reads
    assert code == 0 and status == answered
    (each,) = [b for b in status["budgets"] if b["name"] == "each"]
    assert each["limits"][0]["used"] == status["per_day"]["used_usd"] > 0
