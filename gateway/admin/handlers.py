"""The admin API's HTTP layer: read the request, call the core, shape the answer. Nothing else."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.admin import audit, end_users, report, status, tenancy
from gateway.admin.budgets import budget_json
from gateway.admin.params import bound, choice, count, known, ordered
from gateway.admin.tenancy import PARAM, Actor, Caller
from gateway.appkeys import ADMIN, CLOCK, CONFIG, STORE
from gateway.cost.model import Budget
from gateway.errors import InvalidRequest
from gateway.http_server import read_body
from gateway.ops import access
from gateway.proxy.auth import Operator
from gateway.proxy.end_user import queried
from gateway.proxy.resolve import parse_body


def caller(request: web.Request) -> Caller:
    """A tenant key or an operator's: anything else is a 401. The access line names it (an
    operator as "operator:<name>", of no tenant)."""
    who = request.app[CONFIG].current.keyring.identify(request.headers.get("Authorization"))
    rec = access.record()
    if rec is not None:
        if isinstance(who, Operator):
            rec.key_name = f"operator:{who.name}"
        else:
            rec.tenant, rec.key_name = who.tenant, who.key_name
    return who


def asked(request: web.Request, params: tuple[str, ...] = ()) -> tuple[Caller, str | None]:
    """Who asks, and about which tenant (``?tenant=``; None: every tenant, an operator's
    ``all``); the query holds only ``params`` besides it."""
    who = caller(request)
    known(request.query, (*params, PARAM))
    tenants = request.app[CONFIG].current.settings.tenants
    return who, tenancy.tenant_asked(who, request.query.get(PARAM), tenants, every=True)


def _actor(request: web.Request) -> Actor:
    """The caller acting on the one tenant ``?tenant=`` names (a tenant key: its own)."""
    who = caller(request)
    known(request.query, (PARAM,))
    tenants = request.app[CONFIG].current.settings.tenants
    return tenancy.actor(who, request.query.get(PARAM), tenants)


def _one_tenant(tenant: str | None, param: str) -> str:
    """``param`` is about one tenant's figures: refused with ``tenant=all``."""
    if tenant is None:
        raise InvalidRequest(f"'{param}' is one tenant's: name that tenant (tenant=...), not "
                             "all of them.", param=param)
    return tenant


async def _body(request: web.Request) -> Any:
    """The JSON object sent, read as a proxied request's body is (bounded in size and time,
    never compressed); a budget needs no more than the app's ``client_max_size``."""
    return parse_body(await read_body(request, request.client_max_size))


def _json(body: Any, status_code: int = 200) -> web.Response:
    return web.json_response(body, status=status_code)


async def whoami(request: web.Request) -> web.Response:
    """A tenant key's tenant, name and role (as ever); an operator's name, role and the
    tenants it may name, with ``operator: true``."""
    who = caller(request)
    may_change = tenancy.may_change_budgets(who)
    if isinstance(who, Operator):
        tenants = sorted(request.app[CONFIG].current.settings.tenants)
        return _json({"operator": True, "name": who.name, "role": who.role.value,
                      "tenants": tenants, "may_change_budgets": may_change})
    return _json({"tenant": who.tenant, "key_name": who.key_name, "role": who.role.value,
                  "may_change_budgets": may_change})


def _range(request: web.Request) -> tuple[float | None, float | None]:
    """``from`` and ``to``, in order."""
    since = bound(request.query.get("from"), "from", end=False)
    until = bound(request.query.get("to"), "to", end=True)
    ordered(since, until)
    return since, until


async def spend_report(request: web.Request) -> web.Response:
    _, tenant = asked(request, ("group_by", "from", "to", "model", "end_user"))
    query = request.query
    since, until = _range(request)
    end_user = queried(query.get("end_user"), request.app[CONFIG].current.settings)
    if end_user is not None:
        _one_tenant(tenant, "end_user")
    result = await report.spend_report(
        request.app[STORE],
        tenant,
        choice(report.GroupBy, query.get("group_by"), "group_by") or report.GroupBy.DAY,
        since=since,
        until=until,
        model=query.get("model") or None,
        end_user=None if end_user is None else end_user.id,
    )
    return _json(result.json())


async def end_user_spend(request: web.Request) -> web.Response:
    _, tenant = asked(request, ("from", "to", "limit"))
    since, until = _range(request)
    limit = count(request.query.get("limit"), "limit", end_users.LIMIT_DEFAULT,
                  end_users.LIMIT_MAX)
    result = await end_users.end_user_spend(request.app[STORE], tenant, since, until, limit)
    return _json(result.json())


async def _budgets_of(request: web.Request, tenant: str | None) -> list[Budget]:
    """One tenant's budgets, or every tenant's (by tenant, in the configuration's order)."""
    tenants = request.app[CONFIG].current.settings.tenants if tenant is None else (tenant,)
    return [budget for name in tenants for budget in await request.app[ADMIN].list(name)]


async def list_budgets(request: web.Request) -> web.Response:
    _, tenant = asked(request)
    budgets = await _budgets_of(request, tenant)
    return _json({"object": "list", "data": [budget_json(b) for b in budgets]})


async def create_budget(request: web.Request) -> web.Response:
    who = caller(request)
    body = await _body(request)
    tenants = request.app[CONFIG].current.settings.tenants
    actor = tenancy.actor(who, _new_budget_tenant(who, body, request.query.get(PARAM)), tenants)
    budget = await request.app[ADMIN].create(actor, body)
    return _json(budget_json(budget), 201)


def _new_budget_tenant(who: Caller, body: dict[str, Any], query: str | None) -> str | None:
    """The tenant an operator names for a new budget: the body's ``tenant`` field (taken out
    of it) or ``?tenant=``. A tenant key's budgets are its own tenant's: ``tenant`` is not a
    field it sets (a 400, as ever), ``?tenant=`` may name that tenant."""
    if not isinstance(who, Operator) or PARAM not in body:
        return query
    named = body.pop(PARAM)
    if not isinstance(named, str):
        raise InvalidRequest("Invalid 'tenant': expected the name of a tenant (a string).",
                             param=PARAM)
    if query and query != named:
        raise InvalidRequest("The body's 'tenant' and ?tenant= name different tenants; name "
                             "the new budget's tenant once.", param=PARAM)
    return named


async def get_budget(request: web.Request) -> web.Response:
    who, tenant = asked(request)
    budget_id = request.match_info["id"]
    admin = request.app[ADMIN]
    if tenant is None:
        budget = await admin.find(request.app[CONFIG].current.settings.tenants, budget_id)
    else:
        budget = await admin.get(Actor(who, tenant), budget_id)
    return _json(budget_json(budget))


async def update_budget(request: web.Request) -> web.Response:
    actor = _actor(request)
    body = await _body(request)
    budget = await request.app[ADMIN].update(actor, request.match_info["id"], body)
    return _json(budget_json(budget))


async def delete_budget(request: web.Request) -> web.Response:
    await request.app[ADMIN].delete(_actor(request), request.match_info["id"])
    return web.Response(status=204)


async def budgets_status(request: web.Request) -> web.Response:
    who, tenant = asked(request, ("domain", "model", "scope", "end_user"))
    query = request.query
    end_user = queried(query.get("end_user"), request.app[CONFIG].current.settings)
    if end_user is not None:
        _one_tenant(tenant, "end_user")
    key_name = None if isinstance(who, Operator) else who.key_name  # scope=token: any key's
    wanted = status.StatusFilter.parse(query.get("domain"), query.get("model"),
                                       query.get("scope"), key_name, end_user)
    budgets = await _budgets_of(request, tenant)
    now = request.app[CLOCK].now()
    store = request.app[STORE]
    limits = await status.budget_status(store, budgets, wanted, now)
    spent = await status.period_spend(store, tenant, wanted.model, now,
                                      None if end_user is None else end_user.id)
    if tenant is None:
        return _json(status.every_tenant_json(limits, spent))
    return _json(status.status_json(limits, spent))


async def audit_log(request: web.Request) -> web.Response:
    _, tenant = asked(request, ("limit", "budget"))
    query = request.query
    limit = count(query.get("limit"), "limit", audit.LIMIT_DEFAULT, audit.LIMIT_MAX)
    entries = await request.app[STORE].audit.recent(tenant, limit, query.get("budget") or None)
    return _json({"object": "list", "data": [audit.entry_json(e) for e in entries]})
