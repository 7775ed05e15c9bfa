"""An invalid budget's 400 lists every field at fault (issue 18): ``error.errors``, one
``{param, message}`` each, beside the OpenAI-shaped ``message`` and ``param`` that stay as
they were (every problem in the message, the first one's field in ``param``)."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from gateway.admin.openapi import document
from tests.proxy.conftest import KEYS, MakeHarness

API = "/api/client/v1"


def _error_schema() -> dict[str, Any]:
    """The document's Error schema, its references resolved against the document."""
    return {**document(), "$ref": "#/components/schemas/Error"}


async def _refused(gateway: MakeHarness, method: str, path: str, body: dict[str, Any]
                   ) -> dict[str, Any]:
    gw = await gateway()
    if method == "PATCH":
        created = await gw.client.post(f"{API}/budgets", json={"max_tokens_per_day": 10},
                                       headers={"Authorization": f"Bearer {KEYS['admin']}"})
        assert created.status == 201
        path = f"{path}/{(await created.json())['id']}"
    resp = await gw.client.request(method, API + path, json=body,
                                   headers={"Authorization": f"Bearer {KEYS['admin']}"})
    assert resp.status == 400
    answer: dict[str, Any] = await resp.json()
    jsonschema.validate(answer, _error_schema())
    return answer["error"]


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_every_field_at_fault_is_listed(gateway: MakeHarness, method: str) -> None:
    error = await _refused(gateway, method, "/budgets", {
        "max_tokens_per_hour": 2**60, "max_cost_per_day": -5, "alert_threshold": 2})
    assert error["code"] == "invalid_budget"
    listed = {e["param"]: e["message"] for e in error["errors"]}
    assert set(listed) == {"max_tokens_per_hour", "max_cost_per_day", "alert_threshold"}
    assert listed["max_cost_per_day"] == "must be between 0 and 9e+06, got -5"
    assert error["param"] == error["errors"][0]["param"]  # as before: the first one
    for param, message in listed.items():  # and the message still says all of them
        assert f"{param}: {message}" in error["message"]


async def test_a_problem_of_the_whole_budget_has_no_param(gateway: MakeHarness) -> None:
    error = await _refused(gateway, "POST", "/budgets", {"name": "empty"})
    assert error["param"] is None
    assert [e["param"] for e in error["errors"]] == [None]
    assert "sets no limit" in error["errors"][0]["message"]


async def test_read_only_fields_and_disagreeing_aliases_are_listed_together(
        gateway: MakeHarness) -> None:
    error = await _refused(gateway, "POST", "/budgets", {
        "id": "mine", "tenant": "acme", "daily_limit_usd": 1, "max_cost_per_day": 2})
    assert [(e["param"], e["message"]) for e in error["errors"]] == [
        ("id", "cannot be set"), ("tenant", "cannot be set"),
        ("daily_limit_usd", "disagrees with 'max_cost_per_day'")]
    assert error["param"] == "id"


async def test_other_errors_carry_no_list(gateway: MakeHarness) -> None:
    """Only an invalid budget lists fields: other 400s keep the plain OpenAI shape."""
    gw = await gateway()
    resp = await gw.client.get(f"{API}/spend/report?groupBy=day",
                               headers={"Authorization": f"Bearer {KEYS['admin']}"})
    assert resp.status == 400
    assert "errors" not in (await resp.json())["error"]
