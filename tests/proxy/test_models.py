"""GET /v1/models and GET /v1/models/{id}: allow-list x priced x routed, names from the
configuration and from the upstream's own list (cached, bounded, never a 5xx when it fails)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.appkeys import CONFIG
from gateway.clock import FakeClock
from gateway.mock_upstream import STATS, make_app
from gateway.runtime import Runtime
from gateway.settings.watch import load_live
from tests import leaks
from tests.proxy.conftest import UPSTREAM_KEY

MOCK_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "o4-mini", "text-embedding-3-small",
               "text-embedding-3-large")  # what the mock upstream lists
MOCK_CREATED = 1_700_000_000
TENANTS: dict[str, tuple[str, ...] | None] = {
    "exact": ("gpt-4o-mini", "o4-mini", "acme-private-llm"),  # the last one has no price
    "wild": ("gpt-4o*", "acme-*", "org/*"),
    "open": None,
}
SECRETS = {name: f"sk-test-models-{name}-0123456789" for name in TENANTS}
leaks.SECRETS.update(SECRETS.values())
TTL_S = 300.0  # ListingLimits' defaults
RETRY_S = 30.0


def sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def render(upstreams: Sequence[tuple[str, str, Sequence[str]]]) -> str:
    ups = "".join(
        f'  {name}:\n    base_url: "{url}/v1"\n    api_key: "{UPSTREAM_KEY}"\n'
        f"    models: {orjson.dumps(list(models)).decode()}\n    timeout_s: 2\n"
        for name, url, models in upstreams
    )
    tenants = "".join(
        f"  {name}:\n"
        + ("" if models is None else f"    models: {orjson.dumps(list(models)).decode()}\n")
        + f'    keys:\n      - {{name: {name}-key, sha256: "{sha(SECRETS[name])}"}}\n'
        for name, models in TENANTS.items()
    )
    return f"""
store: "memory://"
upstreams:
{ups}pricing:
  "gpt-4o-*": {{input: 1.0, output: 2.0}}
  "org/*": {{input: 1.0, output: 2.0}}
tenants:
{tenants}budgets: []
"""


@dataclass
class FakeUpstream:
    """``GET /v1/models`` answering whatever a test sets; counts calls and bytes sent."""

    body: bytes = b'{"object": "list", "data": []}'
    status: int = 200
    chunks: Callable[[], Iterable[bytes]] | None = None  # a streamed body instead of ``body``
    calls: int = 0
    sent: int = 0
    authorization: list[str | None] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        return app

    async def models(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        self.authorization.append(request.headers.get("Authorization"))
        if self.chunks is None:
            return web.Response(body=self.body, status=self.status,
                                content_type="application/json")
        response = web.StreamResponse(status=self.status)
        response.content_type = "application/json"
        await response.prepare(request)
        try:
            for chunk in self.chunks():
                await response.write(chunk)
                self.sent += len(chunk)
        except (ConnectionError, RuntimeError):  # the gateway hung up: what it should do
            return response
        await response.write_eof()
        return response


def listing(*names: str, owner: str = "fake-upstream", created: int = 1_600_000_000) -> bytes:
    data = [{"id": n, "object": "model", "created": created, "owned_by": owner} for n in names]
    return orjson.dumps({"object": "list", "data": data})


@dataclass
class Gateway:
    client: TestClient[web.Request, web.Application]
    app: web.Application
    clock: FakeClock

    @property
    def runtime(self) -> Runtime:
        return self.app[CONFIG].current

    async def get(self, path: str, tenant: str | None) -> Any:
        headers = {} if tenant is None else {"Authorization": f"Bearer {SECRETS[tenant]}"}
        return await self.client.get(path, headers=headers)

    async def ids(self, tenant: str) -> list[str]:
        return [entry["id"] for entry in await self.entries(tenant)]

    async def entries(self, tenant: str) -> list[dict[str, Any]]:
        response = await self.get("/v1/models", tenant)
        assert response.status == 200, await response.text()
        body = await response.json()
        assert body["object"] == "list"
        data: list[dict[str, Any]] = body["data"]
        return data

    def configured(self, tenant: str) -> list[str]:
        """The names the configuration spells out that the tenant may use."""
        return self.runtime.models_for(tenant)


Upstreams = Sequence[tuple[str, web.Application | str, Sequence[str]]]  # an app or a URL
MakeGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def gateway(aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path) -> MakeGateway:
    async def make(upstream: web.Application | None = None, *,
                   upstreams: Upstreams | None = None) -> Gateway:
        given = upstreams or [("main", upstream or make_app(require_key=UPSTREAM_KEY), ["*"])]
        served = []
        for name, app, models in given:
            if isinstance(app, str):
                served.append((name, app, models))
                continue
            server: TestServer = await aiohttp_server(app)
            served.append((name, str(server.make_url("")).rstrip("/"), models))
        path = tmp_path / "gateway.yaml"
        path.write_text(render(served))
        clock = FakeClock()
        app = create_app(load_live(str(path), Runtime.build), clock=clock,
                         watch_interval_s=None)
        client = await aiohttp_client(app, trace_configs=[leaks.trace_config()])
        return Gateway(client, app, clock)

    return make


def not_found(model: str) -> dict[str, Any]:
    return {"error": {
        "message": f"The model '{model}' does not exist or you do not have access to it.",
        "type": "invalid_request_error", "param": None, "code": "model_not_found",
    }}


# -- what is listed --------------------------------------------------------------------------


async def test_exact_allow_list_lists_its_priced_models_without_asking_upstream(
    gateway: MakeGateway,
) -> None:
    mock = make_app(require_key=UPSTREAM_KEY)
    gw = await gateway(mock)
    entries = await gw.entries("exact")
    assert [e["id"] for e in entries] == ["gpt-4o-mini", "o4-mini"]  # acme-private-llm: no price
    for entry in entries:
        assert entry == {"id": entry["id"], "object": "model", "created": int(gw.clock.now()),
                         "owned_by": "gateway"}
    assert mock[STATS].requests["/models"] == 0  # the allow-list names every candidate


async def test_no_allow_list_lists_the_upstream_models_and_the_priced_names(
    gateway: MakeGateway,
) -> None:
    mock = make_app(require_key=UPSTREAM_KEY)  # a 401 unless the gateway sends the upstream key
    gw = await gateway(mock)
    entries = {e["id"]: e for e in await gw.entries("open")}
    for name in MOCK_MODELS:
        assert entries[name] == {"id": name, "object": "model", "created": MOCK_CREATED,
                                 "owned_by": "mock-upstream"}
    assert set(gw.configured("open")) <= set(entries)
    assert all(gw.runtime.may_use("open", name) for name in entries)
    assert list(entries) == sorted(entries)
    assert mock[STATS].requests["/models"] == 1


async def test_glob_allow_list_and_glob_prices_list_from_the_upstream_filtered(
    gateway: MakeGateway,
) -> None:
    fake = FakeUpstream(listing(
        "gpt-4o-zeta-preview",  # allowed by "gpt-4o*", priced only by the "gpt-4o-*" key
        "gpt-4o-mini",
        "acme-secret-model",  # allowed by "acme-*", but nothing prices it
        "o4-mini", "whisper-1",  # priced or not, not on the allow-list
        "org/llama-3-70b",  # allowed and priced by "org/*"
    ))
    gw = await gateway(fake.app())
    entries = {e["id"]: e for e in await gw.entries("wild")}
    assert "gpt-4o-zeta-preview" not in gw.configured("wild")  # only the upstream names it
    assert entries["gpt-4o-zeta-preview"] == {
        "id": "gpt-4o-zeta-preview", "object": "model", "created": 1_600_000_000,
        "owned_by": "fake-upstream"}
    assert entries["gpt-4o-mini"]["owned_by"] == "fake-upstream"
    assert entries["org/llama-3-70b"]["owned_by"] == "fake-upstream"
    for name in ("acme-secret-model", "o4-mini", "whisper-1"):
        assert name not in entries
    assert set(gw.configured("wild")) <= set(entries)
    assert all(gw.runtime.may_use("wild", name) for name in entries)
    assert fake.authorization == [f"Bearer {UPSTREAM_KEY}"]


async def test_a_name_is_listed_only_by_the_upstream_it_routes_to(
    gateway: MakeGateway,
) -> None:
    first = FakeUpstream(listing("gpt-4o-mini", owner="first"))
    rest = FakeUpstream(listing("gpt-4o-mini", "gpt-4o-only-rest-has", "gpt-4o-first-glob",
                                owner="rest"))
    gw = await gateway(upstreams=[("first", first.app(), ["gpt-4o-mini", "gpt-4o-first-*"]),
                                  ("rest", rest.app(), ["*"])])
    entries = {e["id"]: e for e in await gw.entries("wild")}
    assert entries["gpt-4o-mini"]["owned_by"] == "first"  # both list it; first serves it
    assert entries["gpt-4o-only-rest-has"]["owned_by"] == "rest"
    assert "gpt-4o-first-glob" not in entries  # rest lists it, but requests for it go to first
    assert (first.calls, rest.calls) == (1, 1)


# -- one model -------------------------------------------------------------------------------


async def test_retrieve_answers_the_same_entry_as_the_list(gateway: MakeGateway) -> None:
    gw = await gateway()
    listed = {e["id"]: e for e in await gw.entries("open")}
    for name in ("gpt-4o-mini", "text-embedding-3-small"):
        response = await gw.get(f"/v1/models/{name}", "open")
        assert response.status == 200
        assert await response.json() == listed[name]
    exact = await gw.get("/v1/models/gpt-4o-mini", "exact")
    assert (await exact.json())["owned_by"] == "gateway"


@pytest.mark.parametrize(("tenant", "model"), [
    ("open", "no-such-model"),
    ("exact", "gpt-4o"),  # priced and routed, not on the allow-list
    ("exact", "acme-private-llm"),  # allowed, not priced
    ("wild", "acme-secret-model"),  # allowed by a glob, not priced
])
async def test_a_model_the_tenant_may_not_use_is_openais_404(
    gateway: MakeGateway, tenant: str, model: str
) -> None:
    gw = await gateway()
    response = await gw.get(f"/v1/models/{model}", tenant)
    assert response.status == 404
    assert await response.json() == not_found(model)
    assert model not in await gw.ids(tenant)


async def test_retrieve_takes_ids_with_a_slash_either_way(gateway: MakeGateway) -> None:
    gw = await gateway(FakeUpstream(listing("org/llama-3-70b")).app())
    for path in ("/v1/models/org/llama-3-70b", "/v1/models/org%2Fllama-3-70b"):
        response = await gw.get(path, "wild")
        assert response.status == 200
        assert (await response.json())["id"] == "org/llama-3-70b"


async def test_retrieve_answers_a_usable_model_the_upstream_cannot_list(
    gateway: MakeGateway,
) -> None:
    gw = await gateway(FakeUpstream(b"oops", status=503).app())
    response = await gw.get("/v1/models/gpt-4o-anything-new", "wild")
    assert response.status == 200
    assert await response.json() == {"id": "gpt-4o-anything-new", "object": "model",
                                      "created": int(gw.clock.now()), "owned_by": "gateway"}


@pytest.mark.parametrize("path", ["/v1/models", "/v1/models/gpt-4o-mini"])
@pytest.mark.parametrize("authorization", [None, "Bearer sk-test-nobody", "Basic abc"])
async def test_both_routes_need_a_tenant_key(
    gateway: MakeGateway, path: str, authorization: str | None
) -> None:
    mock = make_app(require_key=UPSTREAM_KEY)
    gw = await gateway(mock)
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await gw.client.get(path, headers=headers)
    assert response.status == 401
    assert (await response.json())["error"]["code"] == "invalid_api_key"
    assert sum(mock[STATS].requests.values()) + sum(mock[STATS].errors.values()) == 0


# -- an upstream that fails ------------------------------------------------------------------


@pytest.mark.parametrize(("status", "body"), [
    (500, b'{"error": {"message": "boom"}}'),
    (401, b'{"error": {"message": "bad key"}}'),
    (200, b"<html>not json</html>"),
    (200, b'{"object": "list", "data": "nope"}'),
    (200, b"[1, 2, 3]"),
])
async def test_a_failing_upstream_leaves_the_configured_names(
    gateway: MakeGateway, caplog: pytest.LogCaptureFixture, status: int, body: bytes
) -> None:
    fake = FakeUpstream(body, status=status)
    gw = await gateway(fake.app())
    with caplog.at_level(logging.WARNING, logger="gateway.proxy.models"):
        entries = await gw.entries("wild")
    assert [e["id"] for e in entries] == sorted(gw.configured("wild"))
    assert {e["owned_by"] for e in entries} == {"gateway"}
    assert any("'main'" in r.getMessage() for r in caplog.records)
    assert UPSTREAM_KEY not in caplog.text


async def test_an_unreachable_upstream_leaves_the_configured_names(
    gateway: MakeGateway, unused_tcp_port: int,
) -> None:
    closed = f"http://127.0.0.1:{unused_tcp_port}"
    gw = await gateway(upstreams=[("main", closed, ["*"])])
    assert [e["id"] for e in await gw.entries("open")] == sorted(gw.configured("open"))


async def test_a_reload_that_changes_the_upstream_drops_its_cached_list(
    gateway: MakeGateway, tmp_path: Path, aiohttp_server: Any,
) -> None:
    old, new = FakeUpstream(listing("gpt-4o-old")), FakeUpstream(listing("gpt-4o-new"))
    gw = await gateway(old.app())
    assert "gpt-4o-old" in await gw.ids("wild")
    server: TestServer = await aiohttp_server(new.app())
    path = tmp_path / "gateway.yaml"
    old_url = gw.runtime.settings.upstreams[0].base_url
    path.write_text(path.read_text().replace(old_url, str(server.make_url("/v1"))))
    assert gw.app[CONFIG].reload()
    ids = await gw.ids("wild")
    assert "gpt-4o-new" in ids
    assert "gpt-4o-old" not in ids


async def test_a_failure_is_asked_again_after_the_retry_delay(gateway: MakeGateway) -> None:
    fake = FakeUpstream(b"garbage")
    gw = await gateway(fake.app())
    await gw.ids("wild")
    await gw.ids("wild")
    assert fake.calls == 1
    fake.body = listing("gpt-4o-back-again")
    gw.clock.advance(RETRY_S + 1)
    assert "gpt-4o-back-again" in await gw.ids("wild")
    assert fake.calls == 2


# -- the cache -------------------------------------------------------------------------------


async def test_the_list_is_cached_per_upstream_and_expires(gateway: MakeGateway) -> None:
    mock = make_app(require_key=UPSTREAM_KEY)
    gw = await gateway(mock)
    first = await gw.ids("open")
    assert await gw.ids("open") == first
    assert await gw.ids("wild")  # another tenant, the same upstream: the same cache
    assert (await gw.get("/v1/models/gpt-4o-mini", "open")).status == 200
    assert mock[STATS].requests["/models"] == 1
    gw.clock.advance(TTL_S - 1)
    await gw.ids("open")
    assert mock[STATS].requests["/models"] == 1
    gw.clock.advance(2)
    assert await gw.ids("open") == first
    assert mock[STATS].requests["/models"] == 2


async def test_concurrent_lists_ask_the_upstream_once(gateway: MakeGateway) -> None:
    mock = make_app(require_key=UPSTREAM_KEY)
    gw = await gateway(mock)
    answers = await asyncio.gather(*(gw.ids("open") for _ in range(20)))
    assert all(answer == answers[0] for answer in answers)
    assert mock[STATS].requests["/models"] == 1


# -- a hostile upstream ----------------------------------------------------------------------


async def test_a_million_ids_are_refused_by_size(gateway: MakeGateway) -> None:
    names = [f"gpt-4o-x{i}" for i in range(1_000_000)]  # about 17 MB: over 8 MiB
    gw = await gateway(FakeUpstream(listing(*names)).app())
    assert await gw.ids("wild") == sorted(gw.configured("wild"))


async def test_a_50_mb_stream_is_cut_off(gateway: MakeGateway) -> None:
    item = b'{"id":"gpt-4o-pad","object":"model","created":1,"owned_by":"x"},'
    per_chunk = (1024**2 // len(item)) * item

    def fifty_mb() -> Iterable[bytes]:
        yield b'{"object":"list","data":['
        for _ in range(50):
            yield per_chunk

    fake = FakeUpstream(chunks=fifty_mb)
    gw = await gateway(fake.app())
    assert await gw.ids("wild") == sorted(gw.configured("wild"))
    assert fake.sent < 40 * 1024**2  # the gateway stopped reading (and hung up) early


async def test_only_the_first_ten_thousand_ids_are_kept(gateway: MakeGateway) -> None:
    names = [f"gpt-4o-x{i:05d}" for i in range(20_000)]
    gw = await gateway(FakeUpstream(listing(*names, owner="many")).app())
    entries = await gw.entries("wild")
    kept = {e["id"] for e in entries if e["owned_by"] == "many"}
    assert kept == set(names[:10_000])


async def test_malformed_entries_are_skipped(gateway: MakeGateway) -> None:
    data: list[Any] = [
        "gpt-4o-a-string", 7, None, {"id": 5}, {"id": ""}, {"id": "gpt-4o-" + "x" * 300},
        {"id": "gpt-4o-sparse"},  # no created, no owner: the gateway's
        {"id": "gpt-4o-odd", "created": "yesterday", "owned_by": ["x"]},
        {"id": "gpt-4o-fine", "created": 5, "owned_by": "them"},
        {"id": "gpt-4o-fine", "created": 6, "owned_by": "a duplicate"},
    ]
    gw = await gateway(FakeUpstream(orjson.dumps({"data": data})).app())
    entries = {e["id"]: e for e in await gw.entries("wild")}
    now = int(gw.clock.now())
    assert entries["gpt-4o-sparse"] == {"id": "gpt-4o-sparse", "object": "model",
                                        "created": now, "owned_by": "gateway"}
    assert entries["gpt-4o-odd"]["created"] == now
    assert entries["gpt-4o-fine"]["owned_by"] == "them"
    assert not any(len(name) > 256 for name in entries)

