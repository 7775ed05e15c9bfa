"""``gateway spend report``, ``budgets status`` and ``batches running`` with ``--url``: the same
tables as from the store, read from a running gateway's admin API (a real process, on the
embedded store the CLI can also read beside it), the key from ``$GATEWAY_API_KEY``; a refusal
is one line and status 1."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.remote import KEY_ENV
from tests import leaks
from tests.admin.test_cli_admin import run, tables
from tests.procs import ROOT, chat, free_port, gateway_process, mock_upstream

SECRETS = {"app": "sk-remote-acme-app", "globex": "sk-remote-globex-app",
           "viewer": "sk-remote-ops-viewer"}
leaks.SECRETS.update(SECRETS.values())
CONFIG = """
store: "sqlite://{state}"
upstreams:
  mock: {{base_url: "{mock}/v1", api_key: "k"}}
pricing:
  gpt-4o-mini: {{input: 0.15, cached_input: 0.075, output: 0.60}}
  gpt-4o: {{input: 2.50, cached_input: 1.25, output: 10.00}}
tenants:
  acme:
    keys: [{{name: app, sha256: "{app}"}}]
  globex:
    keys: [{{name: globex-app, sha256: "{globex}"}}]
operators:
  - {{name: platform, sha256: "{viewer}", role: viewer}}
budgets:
  - {{name: acme-daily, tenant: acme, max_cost_per_day: 5, max_tokens_per_hour: 100000}}
  - {{name: acme-app, tenant: acme, key: app, model: "gpt-4o*", max_tokens_per_day: 1000000,
      alert_threshold: 0.0001}}
  - {{name: globex-daily, tenant: globex, max_cost_per_day: 0.001}}
"""
REQUESTS = (("app", "gpt-4o"), ("app", "gpt-4o-mini"), ("globex", "gpt-4o-mini"))


@dataclass
class Served:
    url: str
    config: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("remote")
    with mock_upstream(tmp) as mock:
        config = tmp / "gateway.yaml"
        hashes = {name: hashlib.sha256(s.encode()).hexdigest() for name, s in SECRETS.items()}
        config.write_text(CONFIG.format(state=tmp / "state.db", mock=mock.url, **hashes))
        with gateway_process(config, tmp / "gateway.log") as gw:
            for key, model in REQUESTS:
                chat(gw.url, SECRETS[key], model)
            yield Served(gw.url, config)


def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, key: str | None,
        *args: str) -> tuple[int, str, str]:
    if key is None:
        monkeypatch.delenv(KEY_ENV, raising=False)
    else:
        monkeypatch.setenv(KEY_ENV, SECRETS.get(key, key))
    return run(capsys, *args)


def from_store(capsys: pytest.CaptureFixture[str], served: Served, *args: str) -> str:
    """The same command on the store, once it holds every request (written as they settle)."""
    for _ in range(100):
        code, out, err = run(capsys, "spend", "report", "--config", str(served.config),
                             "--json")
        if code == 0 and json.loads(out)["requests"] == len(REQUESTS):
            break
        time.sleep(0.05)
    code, out, err = run(capsys, *args, "--config", str(served.config))
    assert (code, err) == (0, "")
    return out


@pytest.mark.parametrize(("key", "tenant", "same_as"), [
    ("viewer", [], []),  # an operator: every tenant, as the store's report by default
    ("viewer", ["--tenant", "all"], []),
    ("viewer", ["--tenant", "acme"], ["--tenant", "acme"]),
    ("app", [], ["--tenant", "acme"]),  # a tenant key: its own
    ("app", ["--tenant", "acme"], ["--tenant", "acme"]),
])
@pytest.mark.parametrize("command", [
    ("spend", "report"), ("spend", "report", "--group-by", "hour", "--model", "gpt-4o-mini"),
    ("budgets", "status"), ("budgets", "status", "--scope", "token", "--key", "app"),
    ("batches", "running"),
])
def test_the_same_tables_as_from_the_store(
        served: Served, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        key: str, tenant: list[str], same_as: list[str], command: tuple[str, ...]) -> None:
    expected = from_store(capsys, served, *command, *same_as)
    code, out, err = cli(capsys, monkeypatch, key, *command, "--url", served.url, *tenant)
    assert (code, err) == (0, "")
    assert out == expected
    assert command[0] == "batches" or tables(out), "tables, not an empty answer"


def test_json_is_the_apis_answer(served: Served, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.client import SyncClient

    code, out, _ = cli(capsys, monkeypatch, "viewer", "spend", "report", "--url", served.url,
                       "--json", "--group-by", "month")
    with SyncClient(served.url, SECRETS["viewer"], tenant="all") as api:
        assert code == 0 and json.loads(out) == api.spend.report(group_by="month")
    assert [t["tenant"] for t in json.loads(out)["by_tenant"]] == ["acme", "globex"]
    code, out, _ = cli(capsys, monkeypatch, "viewer", "budgets", "status", "--url", served.url,
                       "--json")
    assert code == 0 and list(json.loads(out)) == ["acme", "globex"]
    code, out, _ = cli(capsys, monkeypatch, "viewer", "budgets", "status", "--url", served.url,
                       "--json", "--tenant", "globex")
    assert code == 0 and [b["name"] for b in json.loads(out)["budgets"]] == ["globex-daily"]


_REFUSALS = [
    (None, [], f"needs the key to call the gateway with in ${KEY_ENV}"),
    ("sk-remote-nobody-123456", [], "Incorrect API key provided: sk-****3456. (HTTP 401)"),
    ("app", ["--tenant", "globex"], "it reads and changes that tenant only; name no tenant, or "
                                    "that one. (HTTP 403)"),
    ("app", ["--tenant", "all"], "that tenant only; name no tenant, or that one. (HTTP 403)"),
    ("viewer", ["--tenant", "initech"], "No tenant named 'initech'"),
    ("viewer", ["--from", "2026-02-30"], "Invalid '--from'"),  # the spend report's flag only
]
_COMMANDS = [("spend", "report"), ("budgets", "status"), ("batches", "running")]


@pytest.mark.parametrize(("key", "args", "words", "command"), [
    (key, args, words, command) for key, args, words in _REFUSALS for command in _COMMANDS
    if "--from" not in args or command[0] == "spend"])
def test_a_refusal_is_one_line_and_status_1(
        served: Served, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        key: str | None, args: list[str], words: str, command: tuple[str, ...]) -> None:
    code, out, err = cli(capsys, monkeypatch, key, *command, "--url", served.url, *args)
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and err.startswith("error: ") and words in err, err
    assert not any(secret in err for secret in SECRETS.values())


def test_an_unreachable_gateway_or_a_bad_url_is_one_line(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for url, words in ((f"http://127.0.0.1:{free_port()}", "Cannot connect"),
                       ("127.0.0.1:8080", "--url: expected the gateway's http://")):
        code, out, err = cli(capsys, monkeypatch, "viewer", "budgets", "status", "--url", url)
        assert (code, out) == (1, "") and err.count("\n") == 1 and words in err, err


def test_the_installed_command_reads_the_key_from_the_environment(served: Served) -> None:
    """As a shell runs it: no key on the command line, where ps and the history would show it."""
    gateway = Path(sys.executable).with_name("gateway")
    env = {**os.environ, KEY_ENV: SECRETS["viewer"]}
    done = subprocess.run([str(gateway), "spend", "report", "--url", served.url, "--tenant",
                           "acme"], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=60, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("Spend of tenant acme, all recorded time, by day (USD)")
    help_text = subprocess.run([str(gateway), "budgets", "status", "--help"],
                               capture_output=True, text=True, timeout=60, check=False).stdout
    assert "--url URL" in help_text and KEY_ENV in help_text and "--key" in help_text
