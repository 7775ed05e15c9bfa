"""The admin API's HTTP layer: read the request, call the core, shape the answer. Nothing else."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.admin import audit, end_users, report, status
from gateway.admin.budgets import budget_json, may_change_budgets
from gateway.admin.params import bound, choice, count, known, ordered
from gateway.appkeys import ADMIN, CLOCK, CONFIG, STORE
from gateway.http_server import read_body
from gateway.proxy.auth import Principal
from gateway.proxy.end_user import queried
from gateway.proxy.resolve import parse_body


def _principal(request: web.Request) -> Principal:
    return request.app[CONFIG].current.keyring.authenticate(request.headers.get("Authorization"))


async def _body(request: web.Request) -> Any:
    """The JSON object sent, read as a proxied request's body is (bounded in size and time,
    never compressed); a budget needs no more than the app's ``client_max_size``."""
    return parse_body(await read_body(request, request.client_max_size))


def _json(body: Any, status_code: int = 200) -> web.Response:
    return web.json_response(body, status=status_code)


async def whoami(request: web.Request) -> web.Response:
    principal = _principal(request)
    return _json({"tenant": principal.tenant, "key_name": principal.key_name,
                  "role": principal.role.value,
                  "may_change_budgets": may_change_budgets(principal)})


def _range(request: web.Request) -> tuple[float | None, float | None]:
    """``from`` and ``to``, in order."""
    since = bound(request.query.get("from"), "from", end=False)
    until = bound(request.query.get("to"), "to", end=True)
    ordered(since, until)
    return since, until


async def spend_report(request: web.Request) -> web.Response:
    principal = _principal(request)
    query = request.query
    known(query, ("group_by", "from", "to", "model", "end_user"))
    since, until = _range(request)
    end_user = queried(query.get("end_user"), request.app[CONFIG].current.settings)
    result = await report.spend_report(
        request.app[STORE],
        principal.tenant,
        choice(report.GroupBy, query.get("group_by"), "group_by") or report.GroupBy.DAY,
        since=since,
        until=until,
        model=query.get("model") or None,
        end_user=None if end_user is None else end_user.id,
    )
    return _json(result.json())


async def end_user_spend(request: web.Request) -> web.Response:
    principal = _principal(request)
    known(request.query, ("from", "to", "limit"))
    since, until = _range(request)
    limit = count(request.query.get("limit"), "limit", end_users.LIMIT_DEFAULT,
                  end_users.LIMIT_MAX)
    result = await end_users.end_user_spend(request.app[STORE], principal.tenant, since, until,
                                            limit)
    return _json(result.json())


async def list_budgets(request: web.Request) -> web.Response:
    principal = _principal(request)
    budgets = await request.app[ADMIN].list(principal.tenant)
    return _json({"object": "list", "data": [budget_json(b) for b in budgets]})


async def create_budget(request: web.Request) -> web.Response:
    principal = _principal(request)
    budget = await request.app[ADMIN].create(principal, await _body(request))
    return _json(budget_json(budget), 201)


async def get_budget(request: web.Request) -> web.Response:
    principal = _principal(request)
    budget = await request.app[ADMIN].get(principal, request.match_info["id"])
    return _json(budget_json(budget))


async def update_budget(request: web.Request) -> web.Response:
    principal = _principal(request)
    body = await _body(request)
    budget = await request.app[ADMIN].update(principal, request.match_info["id"], body)
    return _json(budget_json(budget))


async def delete_budget(request: web.Request) -> web.Response:
    principal = _principal(request)
    await request.app[ADMIN].delete(principal, request.match_info["id"])
    return web.Response(status=204)


async def budgets_status(request: web.Request) -> web.Response:
    principal = _principal(request)
    query = request.query
    known(query, ("domain", "model", "scope", "end_user"))
    end_user = queried(query.get("end_user"), request.app[CONFIG].current.settings)
    wanted = status.StatusFilter.parse(query.get("domain"), query.get("model"),
                                       query.get("scope"), principal.key_name, end_user)
    budgets = await request.app[ADMIN].list(principal.tenant)
    now = request.app[CLOCK].now()
    store = request.app[STORE]
    limits = await status.budget_status(store, budgets, wanted, now)
    spent = await status.period_spend(store, principal.tenant, wanted.model, now,
                                      None if end_user is None else end_user.id)
    return _json(status.status_json(limits, spent))


async def audit_log(request: web.Request) -> web.Response:
    principal = _principal(request)
    query = request.query
    known(query, ("limit", "budget"))
    limit = count(query.get("limit"), "limit", audit.LIMIT_DEFAULT, audit.LIMIT_MAX)
    entries = await request.app[STORE].audit.recent(principal.tenant, limit,
                                                   query.get("budget") or None)
    return _json({"object": "list", "data": [audit.entry_json(e) for e in entries]})
