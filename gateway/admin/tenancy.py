"""Whose figures an admin API request is about, and whether its caller may change budgets.

A tenant key asks about its own tenant only: naming it (``?tenant=acme``) changes nothing,
naming any other tenant, or all of them, is a 403. An operator's key (the platform team's, of
no tenant) names the tenant on every request (``?tenant=acme``; a new budget's ``tenant``
field), or asks about every tenant at once with ``?tenant=all`` where a read allows it: naming
none is a 400 saying so, a tenant the configuration does not have a 404 naming it.

Changing budgets needs an ``admin`` or ``owner`` key of the tenant, or an ``editor`` operator.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from gateway.errors import Forbidden, InvalidRequest, NotFound
from gateway.proxy.auth import Operator, Principal
from gateway.settings.schema import ALL_TENANTS, OperatorRole, Role

Caller = Principal | Operator

PARAM = "tenant"
_LISTED = 10  # tenants a message names, at most


@dataclass(frozen=True, slots=True)
class Actor:
    """A caller acting on one tenant's budgets."""

    caller: Caller
    tenant: str

    @property
    def who(self) -> str:
        """The key's name, or the operator's (an audit entry's ``who``)."""
        return self.caller.name if isinstance(self.caller, Operator) else self.caller.key_name

    @property
    def operator(self) -> bool:
        return isinstance(self.caller, Operator)


def may_change_budgets(caller: Caller) -> bool:
    if isinstance(caller, Operator):
        return caller.role is OperatorRole.EDITOR
    return caller.role is not Role.MEMBER


def require_change(actor: Actor) -> None:
    """A 403 unless the caller may create, change and delete the tenant's budgets."""
    caller = actor.caller
    if may_change_budgets(caller):
        return
    if isinstance(caller, Operator):
        message = (f"Changing budgets needs an operator key whose role is editor; the "
                   f"operator '{caller.name}' is a viewer.")
    else:
        message = (f"Changing budgets needs an admin or owner key of tenant '{caller.tenant}'; "
                   f"the key '{caller.key_name}' is a member key.")
    raise Forbidden(message, code="insufficient_permissions")


def tenant_asked(caller: Caller, named: str | None, tenants: Collection[str], *,
                 every: bool) -> str | None:
    """The tenant ``named`` (a request's ``tenant``) as ``caller`` may ask about it; None: every
    tenant, for an operator's ``all`` where ``every`` allows it."""
    if isinstance(caller, Principal):
        if not named or named == caller.tenant:
            return caller.tenant
        raise Forbidden(f"This key is tenant '{caller.tenant}''s: it reads and changes that "
                        "tenant only; name no tenant, or that one.", param=PARAM,
                        code="insufficient_permissions")
    if not named:
        raise InvalidRequest(
            f"An operator key names the tenant it asks about: tenant={_names(tenants)}"
            + (f", or tenant={ALL_TENANTS} for every tenant." if every else "."),
            param=PARAM, code="tenant_required")
    if named == ALL_TENANTS:
        if every:
            return None
        raise InvalidRequest(f"This call is about one tenant: name it (tenant={_names(tenants)})"
                             f"; '{ALL_TENANTS}' is for reading.", param=PARAM,
                             code="one_tenant_required")
    if named not in tenants:
        raise NotFound(f"No tenant named '{named}' in the gateway's configuration (tenants: "
                       f"{_names(tenants, ', ')}).", param=PARAM, code="tenant_not_found")
    return named


def actor(caller: Caller, named: str | None, tenants: Collection[str]) -> Actor:
    """The caller acting on the one tenant ``named`` (its own, for a tenant key)."""
    tenant = tenant_asked(caller, named, tenants, every=False)
    assert tenant is not None, "every=False: one tenant or an error"
    return Actor(caller, tenant)


def _names(tenants: Collection[str], sep: str = "|") -> str:
    ordered = sorted(tenants)
    more = f"{sep}... ({len(ordered)} tenants; GET /me lists them)" if len(ordered) > _LISTED \
        else ""
    return sep.join(ordered[:_LISTED]) + more if ordered else "(none configured)"
