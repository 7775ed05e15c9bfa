"""Live reload: a valid edit is picked up, an invalid one is refused and the old value stays."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.errors import ConfigErrors
from gateway.settings.schema import Settings
from gateway.settings.watch import LiveConfig, load_live

INTERVAL = 0.05
LOGGER = "gateway.settings.watch"


def config_text(listen: str, extra: str = "") -> str:
    return (
        f'listen: "{listen}"\n'
        "upstreams:\n"
        "  mock:\n"
        '    base_url: "http://127.0.0.1:9000/v1"\n'
        '    api_key: ""\n' + extra
    )


def listen_of(settings: Settings) -> str:
    return settings.listen


async def eventually(condition: Callable[[], bool]) -> None:
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(INTERVAL)
    raise AssertionError("condition not met within 100 polls")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    file = tmp_path / "gateway.yaml"
    file.write_text(config_text("127.0.0.1:8080"))
    return file


@pytest.fixture
async def watched(path: Path) -> AsyncIterator[LiveConfig[str]]:
    live = load_live(path, listen_of)
    task = asyncio.create_task(live.watch(INTERVAL))
    yield live
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_valid_edit_is_picked_up_and_an_invalid_one_refused(
    path: Path, watched: LiveConfig[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    assert watched.current == "127.0.0.1:8080"

    path.write_text(config_text("127.0.0.1:18081"))
    await eventually(lambda: watched.current == "127.0.0.1:18081")
    assert (watched.reloads, watched.reload_failures) == (1, 0)

    path.write_text(config_text("127.0.0.1:8082", extra="bogus_field: 1\n"))
    await eventually(lambda: watched.reload_failures == 1)
    assert watched.current == "127.0.0.1:18081"
    assert watched.reloads == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        f"config reload refused: {path}:6: bogus_field: unknown field 'bogus_field'"
        "; expected one of: listen, store, on_store_error, max_body_bytes, "
        "upstreams, pricing, default_max_output_tokens, default_max_tool_calls, service_tier, "
        "tenants, budgets, operators, alerts, ops, limits, end_user_header"
    ]


async def test_a_missing_file_is_waited_for(
    path: Path, watched: LiveConfig[str], caplog: pytest.LogCaptureFixture
) -> None:
    path.unlink()
    await asyncio.sleep(INTERVAL * 4)
    assert any("missing" in r.getMessage() for r in caplog.records)
    assert watched.reload_failures == 0  # an editor's save in progress is not an error

    path.write_text(config_text("127.0.0.1:9999"))
    await eventually(lambda: watched.current == "127.0.0.1:9999")


async def test_sighup_reloads(path: Path) -> None:
    live = load_live(path, listen_of)
    loop = asyncio.get_running_loop()
    live.install_sighup(loop)
    try:
        path.write_text(config_text("127.0.0.1:7777"))
        os.kill(os.getpid(), signal.SIGHUP)
        await eventually(lambda: live.reloads == 1)
        assert live.current == "127.0.0.1:7777"
    finally:
        loop.remove_signal_handler(signal.SIGHUP)


async def test_a_reload_builds_off_the_event_loop(path: Path) -> None:
    """A build may take a while (the first on a new day works out its prices in a child
    process): the event loop serves requests meanwhile."""
    served = threading.Event()

    def build(settings: Settings) -> str:
        if settings.listen == "127.0.0.1:9090":
            assert served.wait(5), "the event loop stood still while the new config was built"
        return settings.listen

    live = load_live(path, build)
    path.write_text(config_text("127.0.0.1:9090"))

    async def serve() -> None:
        await asyncio.sleep(0)  # the reload has started
        served.set()

    reloaded, _ = await asyncio.gather(live.reload_checked(), serve())
    assert reloaded and live.current == "127.0.0.1:9090"


def test_reload_keeps_the_old_value_on_error(path: Path) -> None:
    live = LiveConfig(str(path), listen_of, "initial")
    path.write_text("listen: [")
    assert live.reload() is False
    assert (live.current, live.reloads, live.reload_failures) == ("initial", 0, 1)
    path.write_text(config_text("127.0.0.1:1234"))
    assert live.reload() is True
    assert (live.current, live.reloads, live.reload_failures) == ("127.0.0.1:1234", 1, 1)


def test_a_bad_initial_file_raises(path: Path) -> None:
    path.write_text("listen: 8080\n")
    with pytest.raises(ConfigErrors):
        load_live(path, listen_of)
