"""One mock upstream and one gateway, real processes for the whole session (see ``stack.py``),
and the official openai SDK pointed at the gateway, sync and async alike."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import openai
import pytest

from tests.e2e.stack import (
    KINDS,
    METER_START,
    SECRETS,
    MakeClient,
    Stack,
    render_config,
    write_config,
)
from tests.procs import gateway_process, mock_upstream

SDK_TIMEOUT_S = 20.0

Client = openai.OpenAI | openai.AsyncOpenAI


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("e2e")
    with mock_upstream(tmp) as mock:
        config = tmp / "gateway.yaml"
        write_config(config, render_config(mock.url, 0, dict.fromkeys(KINDS, METER_START)))
        with gateway_process(config, tmp / "gateway.log") as gateway:
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
