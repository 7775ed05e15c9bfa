"""``gateway.client``: the async client against the in-process gateway, the sync client against
a real gateway process from plain sync code; every call round-trips, every refusal is typed."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.client import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    Client,
    ConflictError,
    GatewayAPIError,
    NotFoundError,
    PermissionDeniedError,
    SyncClient,
    error_from,
)
from tests.procs import free_port, gateway_process, mock_upstream
from tests.proxy import conftest as harness
from tests.proxy.conftest import KEYS, OPERATOR_KEYS, OPERATORS, MakeHarness

gateway = harness.gateway  # the in-process gateway fixture

YAML_BUDGET = "  - {name: acme-daily, tenant: acme, max_cost_per_day: 5}"
ADMIN = "/api/client/v1"


async def test_async_client_round_trips_every_call(gateway: MakeHarness) -> None:
    gw = await gateway(budgets=YAML_BUDGET)
    assert (await gw.chat()).status == 200
    raw = await gw.client.get(f"{ADMIN}/spend/report", params={"group_by": "hour"},
                              headers={"Authorization": f"Bearer {KEYS['admin']}"})
    base = str(gw.client.make_url("")).rstrip("/")
    async with Client(base, KEYS["admin"]) as client:
        today = dt.datetime.now(dt.UTC).date()
        report = await client.spend.report(group_by="hour", from_=today, to=today.isoformat())
        assert report == await raw.json()
        assert report["requests"] == 1 and report["by_model"][0]["model_key"] == "gpt-4o-mini"
        an_hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)  # "+00:00" survives
        assert (await client.spend.report(from_=an_hour_ago))["requests"] == 1
        assert (await client.spend.report(model="gpt-4o"))["requests"] == 0
        assert (await client.spend.report(to=today - dt.timedelta(days=1)))["requests"] == 0

        assert [(b["name"], b["source"]) for b in await client.budgets.list()] == [
            ("acme-daily", "file")]
        created = await client.budgets.create(monthly_limit_usd=250, model="gpt-4o*")
        assert created["id"].startswith("bud_") and created["source"] == "api"
        assert created["monthly_limit_usd"] == 250 and created["model"] == "gpt-4o*"
        updated = await client.budgets.update(created["id"], monthly_limit_usd=500)
        assert updated["id"] == created["id"] and updated["max_cost_per_month"] == 500
        assert await client.budgets.get(created["id"]) == updated
        assert (await client.budgets.get("acme-daily"))["source"] == "file"
        assert await client.me() == {"tenant": "acme", "key_name": "acme-admin",
                                     "role": "admin", "may_change_budgets": True}
        with pytest.raises(ConflictError) as taken:
            await client.budgets.create(name=created["name"], daily_limit_usd=1)
        assert taken.value.code == "budget_name_taken" and taken.value.param == "name"
        assert [b["id"] for b in await client.budgets.list()] == ["acme-daily", created["id"]]

        status = await client.budgets.status(domain="llm", model="gpt-4o-mini", scope="tenant")
        assert status["per_month"]["limit_usd"] == 500
        assert status["per_day"]["limit_usd"] == 5 and status["per_day"]["used_usd"] > 0
        assert [b["name"] for b in status["budgets"]] == ["acme-daily", created["name"]]

        await client.budgets.delete(created["id"])
        assert [b["id"] for b in await client.budgets.list()] == ["acme-daily"]
        with pytest.raises(NotFoundError):
            await client.budgets.delete(created["id"])

        changes = await client.audit()
        assert [(c["action"], c["who"]) for c in changes] == [
            ("delete", "acme-admin"), ("update", "acme-admin"), ("create", "acme-admin")]
        assert (changes[1]["before"], changes[1]["after"]) == (created, updated)
        assert await client.audit(limit=1, budget=created["id"]) == changes[:1]
        with pytest.raises(BadRequestError) as too_many:
            await client.audit(limit=1001)
        assert too_many.value.param == "limit"


async def test_async_client_raises_the_servers_errors_typed(gateway: MakeHarness) -> None:
    gw = await gateway(budgets=YAML_BUDGET)
    base = str(gw.client.make_url("")).rstrip("/")
    async with Client(base, KEYS["admin"]) as admin, Client(base, KEYS["ci"]) as member:
        with pytest.raises(PermissionDeniedError) as denied:
            await member.budgets.create(monthly_limit_usd=1)
        assert denied.value.status == 403 and denied.value.code == "insufficient_permissions"
        assert "the key 'acme-ci' is a member key" in denied.value.message
        assert denied.value.request_id

        with pytest.raises(NotFoundError) as missing:
            await admin.budgets.update("bud_nope", monthly_limit_usd=1)
        assert missing.value.code == "budget_not_found" and "bud_nope" in missing.value.message

        with pytest.raises(ConflictError) as conflict:
            await admin.budgets.update("acme-daily", daily_limit_usd=9)
        assert conflict.value.status == 409 and "YAML" in conflict.value.message

        with pytest.raises(BadRequestError) as bad:
            await admin.spend.report(group_by="week")
        assert bad.value.param == "group_by" and bad.value.type == "invalid_request_error"
        assert "week" in str(bad.value)

        with pytest.raises(BadRequestError) as invalid:
            await admin.budgets.create(monthly_limit_usd=-1)
        assert invalid.value.param == "max_cost_per_month"

    async with Client(base, "sk-not-a-key") as stranger:
        with pytest.raises(AuthenticationError) as unknown:
            await stranger.budgets.list()
        assert unknown.value.status == 401

    async with Client(f"http://127.0.0.1:{free_port()}", KEYS["admin"], timeout=5) as nowhere:
        with pytest.raises(APIConnectionError) as refused:
            await nowhere.budgets.list()
        assert refused.value.status is None


async def test_async_client_reads_end_users(gateway: MakeHarness) -> None:
    each = "  - {name: each, tenant: acme, per: end_user, max_tokens_per_hour: 100000}"
    gw = await gateway(budgets=each)
    for end_user in ("alice", "bob", "alice"):
        assert (await gw.chat(safety_identifier=end_user)).status == 200
    base = str(gw.client.make_url("")).rstrip("/")
    today = dt.datetime.now(dt.UTC).date()
    async with Client(base, KEYS["ci"]) as client:
        ranked = await client.spend.end_users(from_=today, to=today, limit=1)
        assert [(u["end_user"], u["requests"]) for u in ranked["data"]] == [("alice", 2)]
        assert ranked["end_users"] == 2 and ranked["requests"] == 3
        report = await client.spend.report(end_user="bob", group_by="month")
        assert report["end_user"] == "bob" and report["requests"] == 1
        status = await client.budgets.status(end_user="alice", scope="tenant")
        (each_limit,) = status["budgets"][0]["limits"]
        assert status["end_user"] == "alice" and each_limit["used"] > 0
        assert status["per_hour"]["used_tokens"] == each_limit["used"]
        with pytest.raises(BadRequestError) as bad:
            await client.spend.end_users(limit=1001)
        assert bad.value.param == "limit"
        with pytest.raises(BadRequestError) as malformed:
            await client.budgets.status(end_user="bob\n")
        assert malformed.value.param == "end_user"


async def test_an_operator_client_names_its_tenant_on_every_call(gateway: MakeHarness) -> None:
    """tenant= on the client is sent with every call; a call's own tenant= wins for it."""
    gw = await gateway(budgets=YAML_BUDGET, extra=OPERATORS)
    for key in ("ci", "other"):
        assert (await gw.chat(key=key)).status == 200
    base = str(gw.client.make_url("")).rstrip("/")
    async with Client(base, KEYS["admin"]) as acme, \
            Client(base, OPERATOR_KEYS["editor"], tenant="acme") as ops:
        assert (await ops.me())["tenants"] == ["acme", "globex"]
        assert await ops.spend.report(group_by="hour") == await acme.spend.report(
            group_by="hour")
        assert await ops.budgets.status() == await acme.budgets.status()
        assert await ops.budgets.list() == await acme.budgets.list()
        made = await ops.budgets.create(monthly_limit_usd=9)
        assert made["tenant"] == "acme" and await acme.budgets.get(made["id"]) == made
        assert (await ops.budgets.update(made["id"], monthly_limit_usd=10))[
            "max_cost_per_month"] == 10
        theirs = await ops.budgets.create(tenant="globex", daily_limit_usd=1)
        assert theirs["tenant"] == "globex"
        assert (await ops.budgets.get(theirs["id"], tenant="all"))["id"] == theirs["id"]
        await ops.budgets.delete(theirs["id"], tenant="globex")
        everyone = await ops.spend.report(tenant="all")
        assert [t["tenant"] for t in everyone["by_tenant"]] and everyone["requests"] == 2
        assert (await ops.budgets.status(tenant="all"))["limits"][0]["tenant"] == "acme"
        assert await ops.batches.running(tenant="all") == []
        assert [c["who"] for c in await ops.audit()] == ["ops-editor", "ops-editor"]
        assert await acme.spend.report(tenant="acme") == await acme.spend.report()
        with pytest.raises(PermissionDeniedError):
            await acme.spend.report(tenant="globex")
    async with Client(base, OPERATOR_KEYS["viewer"]) as viewer:
        with pytest.raises(BadRequestError) as unnamed:
            await viewer.budgets.list()
        assert unnamed.value.param == "tenant" and "tenant=all" in unnamed.value.message
        with pytest.raises(NotFoundError):
            await viewer.spend.report(tenant="initech")
        with pytest.raises(PermissionDeniedError) as viewing:
            await viewer.budgets.create(tenant="acme", monthly_limit_usd=1)
        assert "role is editor" in viewing.value.message


def test_errors_that_are_not_openai_shaped_keep_their_status() -> None:
    error = error_from(502, b"<html>Bad Gateway</html>")
    assert type(error).__name__ == "ServerError" and error.status == 502
    assert error.message == "<html>Bad Gateway</html>" and error.code is None
    assert type(error_from(418, b"")) is GatewayAPIError


# -- the sync client, against a real gateway process ---------------------------------------

SECRETS = {"member": "sk-client-test-member", "admin": "sk-client-test-admin",
           "operator": "sk-client-test-operator"}
CONFIG = """
upstreams:
  mock: {{base_url: "{mock}/v1", api_key: "k"}}
pricing:
  gpt-4o-mini: {{input: 0.15, cached_input: 0.075, output: 0.60}}
tenants:
  acme:
    keys:
      - {{name: app, sha256: "{member}"}}
      - {{name: boss, sha256: "{admin}", role: owner}}
budgets:
  - {{name: acme-daily, tenant: acme, max_cost_per_day: 5}}
operators:
  - {{name: platform, sha256: "{operator}", role: editor}}
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A mock upstream and a gateway, real processes; yields the gateway's root URL after one
    chat request has been charged."""
    tmp = tmp_path_factory.mktemp("client")
    with mock_upstream(tmp) as mock:
        config = tmp / "gateway.yaml"
        hashes = {role: hashlib.sha256(s.encode()).hexdigest() for role, s in SECRETS.items()}
        config.write_text(CONFIG.format(mock=mock.url, **hashes))
        with gateway_process(config, tmp / "gateway.log") as gw:
            _chat(gw.url)
            yield gw.url


def _chat(url: str) -> None:
    body = {"model": "gpt-4o-mini", "max_tokens": 10, "user": "alice",
            "messages": [{"role": "user", "content": "hello"}]}
    request = urllib.request.Request(
        f"{url}/v1/chat/completions", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {SECRETS['member']}",
                 "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200


def _client_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "gateway-client"]


def test_sync_client_round_trips_every_call(served: str) -> None:
    with SyncClient(served, SECRETS["admin"]) as client:
        report = client.spend.report(group_by="day")
        assert report["requests"] == 1 and report["total_cost"] > 0
        assert report["timeseries"][0]["period"] == dt.datetime.now(dt.UTC).date().isoformat()

        created = client.budgets.create(daily_limit_usd=2, max_tokens_per_hour=50_000)
        assert created["source"] == "api" and created["max_cost_per_day"] == 2
        updated = client.budgets.update(created["id"], max_tokens_per_hour=60_000)
        assert updated["max_tokens_per_hour"] == 60_000
        assert client.budgets.get(created["id"]) == updated
        assert client.me()["role"] in ("admin", "owner")
        listed: list[dict[str, Any]] = client.budgets.list()
        assert [b["source"] for b in listed] == ["file", "api"]

        status = client.budgets.status()
        assert status["per_hour"]["limit_tokens"] == 60_000
        assert {b["name"] for b in status["budgets"]} == {"acme-daily", created["name"]}

        client.budgets.delete(created["id"])
        assert [b["name"] for b in client.budgets.list()] == ["acme-daily"]
        assert [c["action"] for c in client.audit(budget=created["id"])] == [
            "delete", "update", "create"]

        ranked = client.spend.end_users(limit=5)
        assert [u["end_user"] for u in ranked["data"]] == ["alice"]
        assert client.spend.report(end_user="alice")["requests"] == 1
        assert client.budgets.status(end_user="alice")["end_user"] == "alice"
        assert _client_threads()
    assert not _client_threads(), "close() ends the client's thread"


def test_sync_client_raises_the_same_typed_errors(served: str) -> None:
    with SyncClient(served, SECRETS["member"]) as member:
        with pytest.raises(PermissionDeniedError) as denied:
            member.budgets.create(monthly_limit_usd=1)
        assert "'app' is a member key" in denied.value.message
        with pytest.raises(BadRequestError):
            member.spend.report(from_="yesterday")
    with SyncClient(served, SECRETS["admin"]) as admin:
        with pytest.raises(NotFoundError):
            admin.budgets.delete("bud_missing")
        with pytest.raises(ConflictError):
            admin.budgets.update("acme-daily", daily_limit_usd=9)
    with pytest.raises(RuntimeError, match="closed"):
        member.budgets.list()


def test_sync_client_works_where_an_event_loop_is_running(served: str) -> None:
    """Called from inside a coroutine (as in a notebook), it still blocks correctly."""

    async def inside_a_loop() -> int:
        with SyncClient(served, SECRETS["member"]) as client:
            requests: int = client.spend.report()["requests"]
            return requests

    assert asyncio.run(inside_a_loop()) >= 1


def test_sync_client_names_a_tenant_and_changes_it_between_calls(served: str) -> None:
    with SyncClient(served, SECRETS["operator"], tenant="acme") as ops, \
            SyncClient(served, SECRETS["member"]) as member:
        assert ops.spend.report(group_by="day") == member.spend.report(group_by="day")
        ops.tenant = "all"
        assert ops.tenant == "all"
        report = ops.spend.report()
        assert [t["tenant"] for t in report["by_tenant"]] == ["acme"]
        assert [b["tenant"] for b in ops.budgets.list()] == ["acme"]
        ops.tenant = None
        with pytest.raises(BadRequestError):
            ops.budgets.status()
