"""The CLI's reports from a running gateway (``--url``): the admin API read with
``gateway.client``, printed as the same tables (or JSON) as the store gives, so no shell on
the store's host is needed.

The key comes from ``$GATEWAY_API_KEY`` only, never a flag, which shell history and ``ps``
would show. A tenant key reads its own tenant; an operator's key names one with ``--tenant``,
or reads every tenant (``--tenant all``, its default, as the store's reports default to every
tenant). A refusal is the API's own message, on one line.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.settings.schema import ALL_TENANTS

if TYPE_CHECKING:
    from gateway.admin.report import GroupBy
    from gateway.admin.status import PeriodSpend
    from gateway.client import SyncClient

KEY_ENV = "GATEWAY_API_KEY"
EXIT_OK, EXIT_ERROR = 0, 1

NO_KEY = (f"--url needs the key to call the gateway with in ${KEY_ENV} (a tenant key, or an "
          "operator's key); it is never taken from the command line, where shell history and "
          "ps would show it")


class Refused(Exception):
    """A problem of the command's own, before anything is asked."""


def _one_line(command: Callable[..., int]) -> Callable[..., int]:
    """The API's refusal, or why it could not be asked: ``error: ...`` and status 1."""
    from gateway.client import GatewayAPIError

    @functools.wraps(command)
    def run(*args: Any) -> int:
        try:
            return command(*args)
        except (GatewayAPIError, Refused) as exc:
            status = getattr(exc, "status", None)
            where = "" if status is None else f" (HTTP {status})"
            message = str(getattr(exc, "message", exc)).replace("\n", " ")
            print(f"error: {message}{where}", file=sys.stderr)
            return EXIT_ERROR

    return run


def _client(args: argparse.Namespace) -> SyncClient:
    from urllib.parse import urlsplit

    from gateway.client import SyncClient

    key = os.environ.get(KEY_ENV, "").strip()
    if not key:
        raise Refused(NO_KEY)
    parts = urlsplit(args.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused(f"--url: expected the gateway's http:// or https:// address, got "
                      f"{args.url!r}")
    return SyncClient(args.url, key)


def _named(client: SyncClient, wanted: str | None) -> str | None:
    """The tenant to ask about: ``--tenant``'s; else an operator's key asks about every
    tenant, a tenant key about its own (None: named by the key)."""
    if wanted:
        return wanted
    return ALL_TENANTS if client.me().get("operator") else None


def _print_json(body: object) -> None:
    print(json.dumps(body, indent=2))


@_one_line
def spend_report(args: argparse.Namespace, group_by: GroupBy, span: str) -> int:
    """``span``: the range, in the words of the store's report."""
    from gateway.admin import report, tables

    with _client(args) as client:
        tenant = _named(client, args.tenant)
        body = client.spend.report(group_by.value, args.since, args.until, args.model,
                                   args.end_user, tenant=tenant)
        scope = ("all tenants" if tenant == ALL_TENANTS else
                 f"tenant {tenant or client.me()['tenant']}")
    if args.json:
        _print_json(body)
        return EXIT_OK
    model = f", model {args.model}" if args.model else ""
    whose = f", end user {args.end_user}" if args.end_user else ""
    print(f"Spend of {scope}{model}{whose}, {span}, by {group_by.value} (USD)\n")
    print(tables.spend_tables(report.SpendReport.from_json(body)))
    return EXIT_OK


@_one_line
def budgets_status(args: argparse.Namespace) -> int:
    """One section per tenant, as from the store: every tenant's for ``all``."""
    from gateway.admin import tables

    with _client(args) as client:
        sections = {tenant: _status(client, args, tenant) for tenant in _tenants(client, args)}
    if args.json:
        bodies = {tenant: body for tenant, (body, _) in sections.items()}
        single = args.tenant and args.tenant != ALL_TENANTS
        _print_json(bodies[args.tenant] if single else bodies)
        return EXIT_OK
    print("\n\n".join(f"Tenant {tenant}\n{tables.spent_line(_spent(body))}\n\n"
                      f"{tables.status_table(rows)}"
                      for tenant, (body, rows) in sections.items()))
    return EXIT_OK


def _tenants(client: SyncClient, args: argparse.Namespace) -> list[str]:
    tenant = _named(client, args.tenant)
    if tenant not in (None, ALL_TENANTS):
        return [tenant]
    me = client.me()
    if me.get("operator"):
        tenants: list[str] = me["tenants"]
        return tenants
    return [tenant or me["tenant"]]  # a tenant key's all: refused by the API, as it says


def _status(client: SyncClient, args: argparse.Namespace, tenant: str
            ) -> tuple[dict[str, Any], list[Any]]:
    """One tenant's status as the API answers it, and its rows for the table (each limit with
    its budget, read from ``GET /budgets``); ``--key`` keeps one key's, as from the store."""
    from gateway.admin.budgets import budget_from_json

    body: dict[str, Any] = client.budgets.status(args.domain, args.model, args.scope,
                                                 args.end_user, tenant=tenant)
    budgets = {b["id"]: budget_from_json(b) for b in client.budgets.list(tenant=tenant)}
    if args.key:
        body["budgets"] = [b for b in body["budgets"] if budgets[b["id"]].key == args.key]
    rows = [(budgets[b["id"]], limit) for b in body["budgets"] for limit in b["limits"]]
    return body, rows


def _spent(body: dict[str, Any]) -> PeriodSpend:
    from gateway.admin.status import PeriodSpend

    return PeriodSpend(body["per_hour"]["used_tokens"], body["per_day"]["used_usd"],
                       body["per_month"]["used_usd"], body.get("end_user"))


@_one_line
def batches_running(args: argparse.Namespace) -> int:
    from gateway.admin import tables

    with _client(args) as client:
        running = client.batches.running(tenant=_named(client, args.tenant))
    if args.json:
        _print_json({"object": "list", "data": running})
        return EXIT_OK
    print(tables.running_batches_table(running))
    return EXIT_OK


@_one_line
def audit(args: argparse.Namespace, limit: int) -> int:
    """The recent budget changes, as from the store: every tenant's for an operator's key
    unless ``--tenant`` names one."""
    from gateway.admin import tables
    from gateway.admin.audit import entry_from_json

    with _client(args) as client:
        changes = client.audit(limit, args.budget, tenant=_named(client, args.tenant))
    if args.json:
        _print_json({"object": "list", "data": changes})
        return EXIT_OK
    print(tables.audit_table([entry_from_json(change) for change in changes]))
    return EXIT_OK
