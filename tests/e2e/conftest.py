"""One mock upstream and one gateway, real processes for the whole session (see ``stack.py``),
and the official openai SDK pointed at the gateway, sync and async alike."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import openai
import pytest

from tests.e2e.stack import (
    KINDS,
    METER_START,
    ROOT,
    SECRETS,
    MakeClient,
    Stack,
    render_config,
    write_config,
)
from tests.procs import free_port, running

SDK_TIMEOUT_S = 20.0

Client = openai.OpenAI | openai.AsyncOpenAI


def _child_env() -> dict[str, str]:
    """The children import ``gateway`` from this checkout whatever the working directory."""
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": str(ROOT) if not path else f"{ROOT}{os.pathsep}{path}"}


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("e2e")
    env = _child_env()
    mock_port, gateway_port = free_port(), free_port()
    mock_args = ["mock-upstream", "--host", "127.0.0.1", "--port", str(mock_port)]
    with running(mock_args, mock_port, "/v1/mock/stats", tmp / "mock.log", env) as mock:
        config = tmp / "gateway.yaml"
        write_config(config, render_config(mock.url, 0, dict.fromkeys(KINDS, METER_START)))
        serve_args = ["serve", "--config", str(config), "--host", "127.0.0.1",
                      "--port", str(gateway_port)]
        with running(serve_args, gateway_port, "/healthz", tmp / "gateway.log", env) as gateway:
            yield Stack(mock, gateway, config)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
async def sdk(stack: Stack, kind: str) -> AsyncIterator[MakeClient]:
    """``sdk(tenant)`` (or ``sdk(api_key=...)``): a client of this test's kind, no retries,
    closed when the test ends."""
    made: list[Client] = []

    def make(tenant: str | None = None, *, api_key: str | None = None) -> Client:
        key = api_key if api_key is not None else SECRETS[tenant or "apps"]
        cls = openai.OpenAI if kind == "sync" else openai.AsyncOpenAI
        client = cls(base_url=stack.base_url, api_key=key, max_retries=0, timeout=SDK_TIMEOUT_S)
        made.append(client)
        return client

    yield make
    for client in made:
        if isinstance(client, openai.AsyncOpenAI):
            await client.close()
        else:
            client.close()
