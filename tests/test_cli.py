"""The command line as an operator types it."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_check_config_accepts_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(ROOT / "config" / "gateway.yaml")]) == 0
    assert "OK" in capsys.readouterr().out


def test_check_config_reports_every_problem_with_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (ROOT / "config" / "gateway.yaml").read_text()
        .replace("max_cost_per_day: 5.00", "max_cost_per_dya: 5.00")
        .replace("alert_threshold: 0.8", "alert_threshold: 1.8")
    )
    assert main(["check-config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert re.search(rf"{re.escape(str(bad))}:\d+: budgets\[0\]\.max_cost_per_dya", err)
    assert "did you mean 'max_cost_per_day'" in err
    assert re.search(r":\d+: budgets\[2\]\.alert_threshold", err)
    assert "sets no limit" in err and "3 problem(s) found." in err


def test_check_config_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "nope.yaml")]) == 1
    assert "nope.yaml" in capsys.readouterr().err


def test_keys_new_prints_secret_once_and_its_hash(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "new", "--tenant", "acme", "--name", "ci", "--role", "admin"]) == 0
    out = capsys.readouterr().out
    secret = re.search(r"(sk-gw-\S+)", out)
    assert secret is not None
    digest = hashlib.sha256(secret.group(1).encode()).hexdigest()
    assert f'sha256: "{digest}"' in out and "role: admin" in out and "name: ci" in out


def test_serve_refuses_workers_without_a_shared_store(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--config", str(ROOT / "config" / "gateway.yaml"), "--workers", "2"]) == 1
    assert "needs a shared store" in capsys.readouterr().err


def run_into_closed_pipe(*args: str, cwd: Path = ROOT) -> tuple[int, str]:
    """``gateway ARGS | head -0``, deterministically: stdout is a pipe whose read end is closed
    before the command starts, so its first write fails. The exit status and stderr."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([sys.executable, "-m", "gateway.cli", *args], stdout=write,
                              stderr=subprocess.PIPE, text=True, cwd=cwd, timeout=60,
                              check=False)
    finally:
        os.close(write)
    return done.returncode, done.stderr


@pytest.mark.parametrize("args", [
    ("keys", "new", "--tenant", "acme", "--name", "ci"),
    ("check-config", str(ROOT / "config" / "gateway.yaml")),
])
def test_a_closed_pipe_ends_any_command_quietly(args: tuple[str, ...]) -> None:
    """Whatever the command, a reader that stopped early (| head) gets no BrokenPipeError
    traceback: the command ends with the status of a Unix tool SIGPIPE stopped."""
    assert run_into_closed_pipe(*args) == (128 + signal.SIGPIPE, "")


def test_a_closed_pipe_ends_help_quietly() -> None:
    """argparse drops its own failed write of the help: quiet, and the status of --help."""
    assert run_into_closed_pipe("--help") == (0, "")
