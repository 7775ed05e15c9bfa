"""``gateway spend report`` and ``gateway budgets status``: the admin API's core, run by the CLI
on the store the configuration names (a persisted embedded store's file, or Redis)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import re
import signal
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.admin.tables import count, percent, usd, usd_column
from gateway.cli import main
from gateway.client import SyncClient
from gateway.cost.model import Usage
from gateway.store.memory import MemoryStore
from gateway.store.persist import Persister
from gateway.store.redis import RedisStore
from tests.procs import free_port, gateway_process, mock_upstream, stop
from tests.servers import redis_server
from tests.test_cli import run_into_closed_pipe

SECRETS = {"app": "sk-cli-admin-app", "boss": "sk-cli-admin-boss"}
CONFIG = """
store: "{store}"
upstreams:
  mock: {{base_url: "{mock}/v1", api_key: "k"}}
pricing:
  gpt-4o-mini: {{input: 0.15, cached_input: 0.075, output: 0.60}}
  gpt-4o: {{input: 2.50, cached_input: 1.25, output: 10.00}}
tenants:
  acme:
    keys:
      - {{name: app, sha256: "{app}"}}
      - {{name: boss, sha256: "{boss}", role: admin}}
  globex:
    keys: [{{name: globex-app, sha256: "{globex}"}}]
budgets:
  - {{name: acme-daily, tenant: acme, max_cost_per_day: 5, max_tokens_per_hour: 100000}}
  - {{name: acme-app, tenant: acme, key: app, model: "gpt-4o*", max_tokens_per_day: 1000000,
      alert_threshold: 0.5}}
"""
SPEND_COLUMNS = ("REQUESTS", "INPUT TOKENS", "OUTPUT TOKENS", "COST")
STATUS_NUMERIC = ("USED", "MAX", "USED %")


def write_config(path: Path, store: str, mock: str = "http://127.0.0.1:9") -> Path:
    digests = {name: hashlib.sha256(s.encode()).hexdigest() for name, s in SECRETS.items()}
    path.write_text(CONFIG.format(store=store, mock=mock, globex="0" * 64, **digests))
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# -- reading the tables ----------------------------------------------------------------------

@dataclass
class Table:
    lines: list[str]

    @property
    def header(self) -> str:
        return self.lines[0]

    def rows(self) -> list[list[str]]:
        """Cells of every row below the header (columns are two or more spaces apart)."""
        return [re.split(r"\s{2,}", line.strip()) for line in self.lines[1:]
                if not line.startswith("-")]

    def row(self, first: str) -> list[str]:
        return next(r for r in self.rows() if r[0] == first)

    def assert_aligned(self, numeric: Sequence[str]) -> None:
        """Every cell ends under its numeric column's title and starts under a text one's."""
        titles = re.split(r"\s{2,}", self.header.strip())
        for title in titles:
            start = self.header.index(title)
            end = start + len(title)
            for line in self.lines[1:]:
                if title in numeric:
                    assert line[end - 1] != " " and line[end:end + 1] in ("", " "), (title, line)
                else:
                    assert line[start] != " " and line[start - 1:start] in ("", " "), (
                        title, line)


def tables(out: str) -> list[Table]:
    """The tables of a command's output: blocks whose first line is an upper-case header."""
    found = []
    for block in out.strip().split("\n\n"):
        lines = block.splitlines()
        start = next((i for i, line in enumerate(lines) if line.isupper()), None)
        if start is not None:
            found.append(Table(lines[start:]))
    return found


# -- a state file written as the gateway writes it, with spend at known times ----------------

def at(day: str, hour: int = 10) -> float:
    return dt.datetime.fromisoformat(f"{day}T{hour:02d}:00:00+00:00").timestamp()


RECORDS = [
    Usage(1_000_000, 250_000, 0, 1_250_000, 617.2839, "gpt-4o", "mock", "acme", at("2026-05-01")),
    Usage(1_000_000, 250_000, 0, 1_250_000, 617.2839, "gpt-4o", "mock", "acme",
          at("2026-05-01", 14)),
    Usage(1_500, 40, 0, 1_540, 0.000249, "gpt-4o-mini", "mock", "acme", at("2026-05-02")),
    Usage(10, 5, 0, 15, 0.000004, "gpt-4o-mini", "mock", "globex", at("2026-06-03")),
]


async def _record_all(store: MemoryStore | RedisStore) -> None:
    for usage in RECORDS:
        await store.record(usage)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    """A config on ``memory://?persist=`` and its state file holding ``RECORDS``."""
    state = tmp_path / "state.json"
    store = MemoryStore()
    asyncio.run(_record_all(store))
    Persister(store, state).save()
    return write_config(tmp_path / "gateway.yaml", f"memory://?persist={state}")


def test_spend_report_over_every_tenant_by_day(saved: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "spend", "report", "--config", str(saved))
    assert (code, err) == (0, "")
    assert out.startswith("Spend of all tenants, all recorded time, by day (USD)")
    periods, models = tables(out)
    for table in (periods, models):
        table.assert_aligned(SPEND_COLUMNS)
        assert table.row("TOTAL") == ["TOTAL", "4", "2,001,510", "500,045", "$1,234.568053"]
    assert periods.header.split()[0] == "DAY"
    assert [r[0] for r in periods.rows()] == ["2026-05-01", "2026-05-02", "2026-06-03", "TOTAL"]
    # every cost with the decimals globex's $0.000004 needs, in both tables
    assert [r[4] for r in periods.rows()] == [
        "$1,234.567800", "$0.000249", "$0.000004", "$1,234.568053"]
    assert models.row("gpt-4o-mini") == ["gpt-4o-mini", "2", "1,510", "45", "$0.000253"]


def test_spend_report_for_one_tenant_a_range_and_a_model(
    saved: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("spend", "report", "--config", str(saved), "--tenant", "acme", "--group-by", "month",
            "--from", "2026-05-02", "--to", "2026-06-30")
    code, out, _ = run(capsys, *args)
    assert code == 0 and "Spend of tenant acme, 2026-05-02 to 2026-06-30, by month" in out
    periods, _ = tables(out)
    assert periods.rows() == [["2026-05", "1", "1,500", "40", "$0.0002"],
                              ["TOTAL", "1", "1,500", "40", "$0.0002"]]

    code, out, _ = run(capsys, *args, "--json")
    assert code == 0
    assert json.loads(out) == {
        "total_cost": 0.000249, "currency": "USD", "total_input_tokens": 1500,
        "total_output_tokens": 40, "requests": 1, "group_by": "month",
        "by_model": [{"model_key": "gpt-4o-mini", "cost": 0.000249, "input_tokens": 1500,
                      "output_tokens": 40, "requests": 1}],
        "batch": {"cost": 0.0, "input_tokens": 0, "output_tokens": 0, "requests": 0},
        "timeseries": [{"period": "2026-05", "cost": 0.000249, "input_tokens": 1500,
                        "output_tokens": 40, "requests": 1, "batch_cost": 0.0,
                        "by_model": [{"model_key": "gpt-4o-mini", "cost": 0.000249,
                                      "input_tokens": 1500, "output_tokens": 40,
                                      "requests": 1}]}],
    }
    code, out, _ = run(capsys, "spend", "report", "--config", str(saved), "--model", "gpt-4o",
                       "--group-by", "hour", "--json")
    assert [p["period"] for p in json.loads(out)["timeseries"]] == [
        "2026-05-01T10:00:00Z", "2026-05-01T14:00:00Z"]


def test_an_empty_range_says_so(saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "spend", "report", "--config", str(saved), "--from", "2030-01-01")
    assert code == 0 and "No spend recorded in this range." in out


def test_the_state_file_is_only_read(saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = saved.parent / "state.json"
    before = (state.read_bytes(), state.stat().st_mtime_ns)
    assert run(capsys, "spend", "report", "--config", str(saved))[0] == 0
    assert run(capsys, "budgets", "status", "--config", str(saved))[0] == 0
    assert (state.read_bytes(), state.stat().st_mtime_ns) == before
    assert sorted(p.name for p in saved.parent.iterdir()) == ["gateway.yaml", "state.json"]


def test_the_config_defaults_to_GATEWAY_CONFIG(
    saved: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_CONFIG", str(saved))
    code, out, _ = run(capsys, "spend", "report", "--json")
    assert code == 0 and json.loads(out)["requests"] == 4


# -- mistakes an operator can make: one line, exit 1, never a traceback ------------------------

@pytest.mark.parametrize(("args", "message"), [
    (("spend", "report", "--from", "2026-13-01"), "error: Invalid '--from': expected an ISO date"),
    (("spend", "report", "--to", "soon"), "error: Invalid '--to'"),
    (("spend", "report", "--group-by", "week"),
     "error: Invalid '--group-by': expected one of hour, day, month, got 'week'."),
    (("spend", "report", "--tenant", "initech"), "error: no tenant 'initech' in "),
    (("budgets", "status", "--tenant", "initech"), "(tenants: acme, globex)"),
])
def test_bad_arguments_are_one_line_errors(
    saved: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    code, out, err = run(capsys, *args, "--config", str(saved))
    assert (code, out) == (1, "")
    assert message in err and err.startswith("error: ") and "Traceback" not in err


def test_a_range_that_ends_before_it_starts_is_an_error(
    saved: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not "No spend": the API's 400 for the same range, naming the CLI's flag."""
    code, out, err = run(capsys, "spend", "report", "--config", str(saved),
                         "--from", "2026-11-05", "--to", "2026-11-01")
    assert (code, out, err) == (1, "", "error: Invalid '--from': it is not before '--to'.\n")
    code, out, _ = run(capsys, "spend", "report", "--config", str(saved),
                       "--from", "2026-05-01", "--to", "2026-05-01")  # one whole day
    assert code == 0 and "2026-05-01" in out
    code, _, err = run(capsys, "spend", "report", "--config", str(saved),
                       "--from", "2026-05-01T12:00:00", "--to", "2026-05-01T12:00:00")
    assert code == 1 and "'--from'" in err


def test_the_embedded_store_without_persistence_cannot_be_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "gateway.yaml", "memory://")
    for command in (("spend", "report"), ("budgets", "status")):
        code, out, err = run(capsys, *command, "--config", str(config))
        assert (code, out) == (1, "")
        assert err.startswith(f"error: {config} uses store: 'memory://'")
        assert "lives inside the gateway process" in err
        assert "memory://?persist=" in err and "redis://" in err


def test_a_missing_state_file_is_an_error_not_an_empty_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "nowhere" / "state.json"
    config = write_config(tmp_path / "gateway.yaml", f"memory://?persist={state}")
    code, _, err = run(capsys, "spend", "report", "--config", str(config))
    assert code == 1 and f"state file {state}" in err and "does not exist" in err


def test_a_corrupt_state_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    state = tmp_path / "state.json"
    state.write_text("{not json")
    config = write_config(tmp_path / "gateway.yaml", f"memory://?persist={state}")
    code, _, err = run(capsys, "budgets", "status", "--config", str(config))
    assert code == 1 and f"error: state file {state}: not valid JSON" in err


def test_a_bad_config_lists_its_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    code, _, err = run(capsys, "spend", "report", "--config", str(tmp_path / "none.yaml"))
    assert code == 1 and "none.yaml: (file): cannot read" in err


# -- redis ---------------------------------------------------------------------------------

def test_spend_report_and_status_read_redis(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with redis_server(tmp_path) as url:
        store = RedisStore.from_url(url)

        async def fill() -> None:
            await _record_all(store)
            await store.close()

        asyncio.run(fill())
        config = write_config(tmp_path / "gateway.yaml", url)
        code, out, _ = run(capsys, "spend", "report", "--config", str(config), "--json")
        assert code == 0 and json.loads(out)["total_cost"] == 1234.568053
        code, out, _ = run(capsys, "budgets", "status", "--config", str(config))
        assert code == 0 and "acme-daily" in out


def test_an_unreachable_redis_is_one_line_without_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    config = write_config(tmp_path / "gateway.yaml", f"redis://:hunter2@127.0.0.1:{port}/0")
    code, out, err = run(capsys, "budgets", "status", "--config", str(config))
    assert (code, out) == (1, "")
    assert err.startswith(f"error: cannot read the store redis://127.0.0.1:{port}/0: ")
    assert "hunter2" not in err and "Traceback" not in err


# -- against what a real gateway wrote, and what its API said -------------------------------

@dataclass
class Served:
    config: Path
    report: dict[str, Any]  # the API's answers just before the gateway stopped
    status: dict[str, Any]
    api_budget: str


def _chat(url: str, model: str) -> None:
    body = {"model": model, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    request = urllib.request.Request(
        f"{url}/v1/chat/completions", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {SECRETS['app']}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A gateway on ``memory://?persist=`` served three requests and one API budget, was asked
    for its report and status, and stopped (saving its state)."""
    tmp = tmp_path_factory.mktemp("served")
    with mock_upstream(tmp) as mock:
        config = write_config(tmp / "gateway.yaml", f"memory://?persist={tmp / 'state.json'}",
                              mock.url)
        with gateway_process(config, tmp / "gateway.log") as gw:
            for model in ("gpt-4o", "gpt-4o", "gpt-4o-mini"):
                _chat(gw.url, model)
            with SyncClient(gw.url, SECRETS["boss"]) as api:
                budget = api.budgets.create(name="acme-monthly", monthly_limit_usd=0.01,
                                            alert_threshold=0.0001)
                _chat(gw.url, "gpt-4o-mini")  # counted by the new budget too
                report = api.spend.report(group_by="hour")
                status = api.budgets.status()
            stop(gw.popen, signal.SIGTERM)  # graceful: the state is saved on the way out
    yield Served(config, report, status, budget["name"])


def _later(status: dict[str, Any], earlier: dict[str, Any]) -> bool:
    """The same status read later: equal but for resets_in_s, which only counts down."""
    def split(body: dict[str, Any]) -> tuple[str, list[int | None]]:
        limits = [limit for b in body["budgets"] for limit in b["limits"]]
        resets = [limit.pop("resets_in_s") for limit in limits]
        return json.dumps(body, sort_keys=True), resets

    (now, resets), (then, before) = split(json.loads(json.dumps(status))), split(
        json.loads(json.dumps(earlier)))
    assert [r is None for r in resets] == [r is None for r in before]
    return now == then and all(r is None or r <= b for r, b in zip(resets, before, strict=True)
                               if b is not None)


def test_json_is_what_the_api_answered(served: Served, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    code, out, _ = run(capsys, "spend", "report", "--config", str(served.config),
                       "--tenant", "acme", "--group-by", "hour", "--json")
    assert code == 0 and json.loads(out) == served.report
    assert served.report["requests"] == 4
    code, out, _ = run(capsys, "budgets", "status", "--config", str(served.config),
                       "--tenant", "acme", "--json")
    assert code == 0 and _later(json.loads(out), served.status)
    code, out, _ = run(capsys, "budgets", "status", "--config", str(served.config), "--json")
    everyone = json.loads(out)
    assert list(everyone) == ["acme", "globex"] and _later(everyone["acme"], served.status)
    assert everyone["globex"]["budgets"] == []


def test_budgets_status_table_shows_every_limit(served: Served,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "budgets", "status", "--config", str(served.config))
    assert code == 0
    assert out.startswith("Tenant acme\nSpent: ")
    assert ("\n\nTenant globex\nSpent: 0 tokens in the last hour, $0.0000 in the last 24 hours, "
            "$0.0000 this month (UTC)\n\nNo budgets.") in out
    (table,) = tables(out)
    table.assert_aligned(STATUS_NUMERIC)
    limits = {(b["name"], limit["limit"]): limit
              for b in served.status["budgets"] for limit in b["limits"]}
    rows = {(r[0], r[3]): r for r in table.rows()}
    assert set(rows) == set(limits) == {
        ("acme-daily", "max_cost_per_day"), ("acme-daily", "max_tokens_per_hour"),
        ("acme-app", "max_tokens_per_day"), (served.api_budget, "max_cost_per_month")}
    costs = [key for key in rows if key[1].startswith("max_cost")]
    for column, name in ((4, "used"), (5, "max")):  # dollars: one precision per column
        assert [rows[key][column] for key in costs] == usd_column([limits[k][name] for k in costs])
    for key, row in rows.items():
        figures = limits[key]
        if key not in costs:
            assert row[4:6] == [count(figures["used"]), count(figures["max"])]
        assert row[6] == percent(figures["ratio"])
    assert rows[("acme-app", "max_tokens_per_day")][1:3] == ["key=app model=gpt-4o*", "reject"]
    assert rows[("acme-daily", "max_cost_per_day")][1] == "tenant"
    monthly = rows[(served.api_budget, "max_cost_per_month")]
    assert monthly[5] == "$0.0100" and monthly[7] == "alert"
    assert rows[("acme-daily", "max_tokens_per_hour")][7] == "ok"


def test_money_tokens_and_ratios_read_well() -> None:
    assert usd(1234.5678) == "$1,234.5678" and usd(0) == "$0.0000" and usd(5) == "$5.0000"
    assert usd(0.000249) == "$0.0002" and usd(0.000004) == "$0.000004"
    assert usd(0.000000001) == "$0.000000001"
    assert count(2_001_510) == "2,001,510" and count(0) == "0"
    assert percent(0.8123) == "81.2%" and percent(1.5) == "150.0%"


def test_budgets_status_takes_the_apis_filters(served: Served,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Seed (Cognipeer): "status() accepts an optional { domain, model, scope } filter (scope is
    tenant or token)": the CLI takes the same, and --model narrows the spend shown too."""
    def names(*filters: str) -> tuple[set[str], dict[str, Any]]:
        code, out, err = run(capsys, "budgets", "status", "--config", str(served.config),
                             "--tenant", "acme", "--json", *filters)
        assert code == 0, err
        body = json.loads(out)
        return {b["name"] for b in body["budgets"]}, body

    everything, _ = names()
    assert everything == {"acme-daily", "acme-app", served.api_budget}
    assert names("--scope", "token")[0] == {"acme-app"}
    assert names("--scope", "token", "--key", "app")[0] == {"acme-app"}
    assert names("--scope", "token", "--key", "other")[0] == set()
    assert names("--scope", "tenant")[0] == {"acme-daily", served.api_budget}
    assert names("--domain", "embedding")[0] == everything  # none is scoped to a domain
    found, body = names("--model", "gpt-4.1")
    assert found == {"acme-daily", served.api_budget} and body["per_month"]["used_usd"] == 0.0
    mini = {m["model_key"]: m["cost"] for m in served.report["by_model"]}["gpt-4o-mini"]
    assert names("--model", "gpt-4o-mini")[1]["per_month"]["used_usd"] == pytest.approx(mini)
    with pytest.raises(SystemExit) as exited:
        run(capsys, "budgets", "status", "--config", str(served.config), "--scope", "keys")
    assert exited.value.code == 2 and "invalid choice: 'keys'" in capsys.readouterr().err


# -- a reader that stops early (| head) --------------------------------------------------------

@pytest.mark.parametrize("command", [("spend", "report"), ("budgets", "status")])
def test_a_closed_pipe_ends_the_report_quietly(saved: Path, command: tuple[str, ...]) -> None:
    """``gateway spend report | head -1``: no BrokenPipeError traceback, the status of a Unix
    tool SIGPIPE stopped (the read end is closed before the command writes, so every write
    fails)."""
    code, err = run_into_closed_pipe(*command, "--config", str(saved))
    assert (code, err) == (128 + signal.SIGPIPE, "")
