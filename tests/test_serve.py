"""``gateway serve``: what it refuses before starting, its help, and the supervisor's handling
of its workers (with stand-in worker processes; the real ones are in e2e/test_shutdown.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import pytest

from gateway import serve
from gateway.cli import main
from gateway.serve import Bind, Slot, Supervisor

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "gateway.yaml"
WAIT_S = 10.0


def config_with_store(tmp_path: Path, store: str) -> Path:
    text = EXAMPLE.read_text()
    default = 'store: "sqlite://gateway-state.db"'
    assert default in text
    path = tmp_path / "gateway.yaml"
    path.write_text(text.replace(default, f'store: "{store}"', 1))
    return path


@pytest.mark.parametrize("kind", ["memory", "memory-persist", "sqlite"])
def test_workers_are_refused_on_the_embedded_store(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.json"
    store = {"memory": "memory://", "memory-persist": f"memory://?persist={state}",
             "sqlite": f"sqlite://{state}"}[kind]
    config = config_with_store(tmp_path, store)
    assert main(["serve", "--config", str(config), "--workers", "2"]) == 1
    err = capsys.readouterr().err
    assert "--workers 2 needs a shared store" in err and store in err
    assert "would each keep their own budgets" in err and "redis://" in err
    assert not state.exists(), "refused before anything started"


def test_workers_need_a_fixed_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = config_with_store(tmp_path, "redis://127.0.0.1:1/0")  # never reached
    assert main(["serve", "--config", str(config), "--workers", "2", "--port", "0"]) == 1
    assert "needs a fixed port" in capsys.readouterr().err


def test_help_documents_grace_and_workers(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "--grace-s S" in out and "(default 30)" in out
    assert "SIGTERM" in out and "exit status 1" in out and "--workers N" in out
    assert "--worker " not in out, "the supervisor's flag stays hidden"


@pytest.mark.parametrize(("flag", "value"), [("--workers", "0"), ("--grace-s", "-1"),
                                             ("--grace-s", "inf")])
def test_bad_numbers_are_usage_errors(flag: str, value: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--config", str(EXAMPLE), flag, value])
    assert exited.value.code == 2
    assert flag in capsys.readouterr().err


def test_worker_slots() -> None:
    assert Slot.parse("2/4") == Slot(2, 4) and str(Slot(2, 4)) == "2/4"
    for bad in ("0/2", "3/2", "2", "a/b"):
        with pytest.raises(ValueError):
            Slot.parse(bad)


def test_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvloop  # the test extras install it, so this path is always exercised

    assert serve.loop_factory() is uvloop.new_event_loop
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if not installed
    assert serve.loop_factory() is None


# -- the supervisor, with stand-in workers ---------------------------------------------------

FAKE_WORKER = """
import pathlib, signal, sys, time
ready, mode = pathlib.Path(sys.argv[1]), sys.argv[2]
if mode == "exit3":
    sys.exit(3)
if mode == "deaf":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if mode == "clean":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGHUP, lambda *_: ready.with_suffix(".hup").touch())
ready.touch()
time.sleep(60)
"""


def supervisor(tmp_path: Path, modes: dict[int, str], grace_s: float = 0.2) -> Supervisor:
    def command(slot: Slot) -> list[str]:
        return [sys.executable, "-c", FAKE_WORKER, str(tmp_path / f"w{slot.index}.ready"),
                modes[slot.index]]

    return Supervisor(command, len(modes), grace_s)


async def until_exist(*paths: Path) -> None:
    async with asyncio.timeout(WAIT_S):
        while not all(p.exists() for p in paths):
            await asyncio.sleep(0.02)


async def test_sigterm_stops_every_worker_and_sighup_is_forwarded(tmp_path: Path) -> None:
    run = asyncio.ensure_future(supervisor(tmp_path, {1: "clean", 2: "clean"}).run(
        Bind("127.0.0.1", 1)))
    await until_exist(tmp_path / "w1.ready", tmp_path / "w2.ready")
    os.kill(os.getpid(), signal.SIGHUP)  # handled by the supervisor running in this loop
    await until_exist(tmp_path / "w1.hup", tmp_path / "w2.hup")
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(run, WAIT_S) is True


async def test_a_worker_exiting_on_its_own_stops_the_others_and_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.serve")
    sup = supervisor(tmp_path, {1: "exit3", 2: "sleep"})
    assert await asyncio.wait_for(sup.run(Bind("127.0.0.1", 1)), WAIT_S) is False
    assert "worker 1/2 (pid" in caplog.text
    assert "exited with status 3 unexpectedly: stopping the whole gateway" in caplog.text


async def test_a_worker_ignoring_sigterm_is_killed_after_grace_and_margin(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serve, "KILL_MARGIN_S", 0.3)
    sup = supervisor(tmp_path, {1: "clean", 2: "deaf"})
    run = asyncio.ensure_future(sup.run(Bind("127.0.0.1", 1)))
    await until_exist(tmp_path / "w1.ready", tmp_path / "w2.ready")
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(run, WAIT_S) is False
    assert "worker 2/2" in caplog.text and "still running 0.5s after SIGTERM" in caplog.text
    assert "was killed by SIGKILL while stopping" in caplog.text
