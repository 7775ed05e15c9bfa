"""GET /openapi.json: a valid OpenAPI document that lists every route the app serves (and no
other), and that the admin API's answers keep to (a bounded schemathesis run against a real
in-process gateway in front of the mock upstream)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.admin.budgets import budget_json
from gateway.admin.openapi import document
from gateway.admin.routes import PREFIX
from gateway.cost.model import Budget
from tests.proxy.conftest import KEYS, OPERATOR_KEYS, OPERATORS, MakeHarness

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
FILE_BUDGET = """
  - {name: acme-file, tenant: acme, max_tokens_per_hour: 100000, max_cost_per_day: 5,
     max_cost_per_month: 50, alert_threshold: 0.8}
"""
# The operations fuzzed: the admin API, the model list and the ops routes (the metered /v1
# routes forward to an upstream and are covered by the proxy tests).
FUZZED = r"^(/api/client/v1/|/v1/models$|/healthz$|/readyz$|/openapi\.json$)"
POSITIVE = schemathesis.GenerationMode.POSITIVE
ADMIN_AUTH = {"Authorization": f"Bearer {KEYS['admin']}"}
OPERATOR_AUTH = {"Authorization": f"Bearer {OPERATOR_KEYS['editor']}"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
FUZZ_SETTINGS = settings(
    max_examples=25, deadline=None, derandomize=True, database=None,
    phases=[Phase.explicit, Phase.generate],  # a failure is reported as found, not shrunk
    suppress_health_check=list(HealthCheck), print_blob=False,
)


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for path, item in doc["paths"].items():
        for method in item.keys() & HTTP_METHODS:
            yield method.upper(), path


def test_document_is_valid_openapi() -> None:
    validate(document())


async def test_every_route_is_documented_and_nothing_else(gateway: MakeHarness) -> None:
    gw = await gateway()
    served = {(route.method, route.resource.canonical)
              for route in gw.app.router.routes()
              if route.resource is not None and route.method != "HEAD"}  # HEAD: aiohttp's own
    assert served == set(_operations(document()))
    assert any(path.startswith(PREFIX) for _, path in served)


async def test_document_is_served_without_a_key(gateway: MakeHarness) -> None:
    gw = await gateway()
    response = await gw.client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == document()


def test_budget_schema_names_exactly_the_fields_answered() -> None:
    schema = document()["components"]["schemas"]["Budget"]
    answered = budget_json(Budget(name="b", tenant="t", max_cost_per_day=1.0))
    assert set(schema["properties"]) == set(schema["required"]) == set(answered)


@pytest.mark.parametrize("auth", [ADMIN_AUTH, OPERATOR_AUTH], ids=["tenant-key", "operator"])
async def test_admin_api_keeps_to_the_document(gateway: MakeHarness, auth: dict[str, str]
                                               ) -> None:
    """A tenant's admin key; an operator's editor key, its requests pinned to name acme, or
    all, besides the random ones (which mostly name no tenant, or one that does not exist)."""
    gw = await gateway(budgets=FILE_BUDGET, extra=OPERATORS)
    for end_user in (None, "alice"):  # some spend, so reports and status carry rows
        assert (await gw.chat(**({"user": end_user} if end_user else {}))).status == 200
    created = await gw.client.post(
        f"{PREFIX}/budgets", json={"name": "acme-api", "daily_limit_usd": 2},
        headers=ADMIN_AUTH)
    assert created.status == 201
    budget_ids = ["acme-file", (await created.json())["id"]]
    base_url = str(gw.client.make_url("")).rstrip("/")
    tenants = ["acme", "all"] if auth is OPERATOR_AUTH else [None]
    failures = await asyncio.to_thread(_fuzz, base_url, budget_ids, auth, tenants)
    assert not failures, (
        f"{len(failures)} way(s) the gateway departs from its OpenAPI document; the request "
        "and response under each (a failure may come from a budget an earlier POST or PATCH "
        "of the run created):\n\n" + "\n\n".join(failures.values()))


def _fuzz(base_url: str, budget_ids: list[str], auth: dict[str, str],
          tenants: list[str | None]) -> dict[tuple[str, str], str]:
    """Every fuzzed operation with valid and invalid data; failures by operation and kind."""
    schema = schemathesis.openapi.from_dict(document(), config=schemathesis.Config())
    failures: dict[tuple[str, str], str] = {}
    with requests.Session() as session:
        for result in schema.include(path_regex=FUZZED).get_all_operations():
            assert isinstance(result, Ok), result  # else the document describes it badly
            operation = result.ok()
            for mode in schemathesis.GenerationMode:
                pins = [_naming(pin, tenant) for pin in [{}, *_pinned(operation.path, budget_ids)]
                        for tenant in tenants] if mode is POSITIVE else []
                cases = st.one_of(*(
                    operation.as_strategy(generation_mode=mode, headers=auth, **pin)
                    for pin in [{}, *pins]))
                try:
                    _exercise(cases, base_url, session, failures)
                except Unsatisfiable:
                    if mode is POSITIVE:
                        raise  # else the operation takes no input that could be made invalid
    return failures


def _pinned(path: str, budget_ids: list[str]) -> list[dict[str, Any]]:
    """Inputs worth sending besides random ones: budgets that exist, the calendar's ends."""
    if path.endswith("{id}"):
        return [{"path_parameters": {"id": budget_id}} for budget_id in budget_ids]
    ends = {"from": "0001-01-01", "to": "9999-12-31"}
    if path.endswith("/spend/report"):
        return [{"query": ends}, {"query": {**ends, "end_user": "alice", "group_by": "month"}}]
    if path.endswith("/spend/end_users"):
        return [{"query": ends}, {"query": {**ends, "limit": 1}}]
    if path.endswith("/budgets/status"):
        return [{"query": {"end_user": "alice"}}]
    return []


def _naming(pin: dict[str, Any], tenant: str | None) -> dict[str, Any]:
    """``pin`` with ``?tenant=`` naming ``tenant`` (None: as it is)."""
    if tenant is None:
        return pin
    return {**pin, "query": {**pin.get("query", {}), "tenant": tenant}}


def _exercise(cases: st.SearchStrategy[schemathesis.Case[Any]], base_url: str,
              session: requests.Session, failures: dict[tuple[str, str], str]) -> None:
    @FUZZ_SETTINGS
    @given(case=cases)
    def run(case: schemathesis.Case[Any]) -> None:
        try:
            case.call_and_validate(base_url=base_url, session=session, checks=CHECKS)
        except FailureGroup as group:
            titles = ", ".join(sorted(failure.title for failure in group.exceptions))
            failures.setdefault((case.operation.label, titles), str(group))

    run()
