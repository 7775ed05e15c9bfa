"""Stage 1: who is calling. A key is looked up by its sha256; the secret is never kept.

A tenant key is a ``Principal``; an operator's key (the platform team's, of no tenant) is an
``Operator``, which the admin API and ``/metrics`` take and the proxy refuses."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gateway.errors import Forbidden, Unauthenticated
from gateway.settings.schema import OperatorRole, OperatorSettings, Role, TenantSettings

# What a key can be made of: visible ASCII (``gateway keys new`` makes ``sk-gw-`` + base64url).
# Anything else is refused as malformed without a lookup, and never echoed.
_SECRET = re.compile(r"[!-~]+")


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str
    key_name: str
    role: Role
    digest: str = field(default="", compare=False, repr=False)  # the key's sha256


@dataclass(frozen=True, slots=True)
class Operator:
    name: str
    role: OperatorRole
    digest: str = field(default="", compare=False, repr=False)  # the key's sha256


class Keyring:
    """sha256(secret) -> Principal or Operator, compiled once per configuration load."""

    def __init__(self, tenants: Mapping[str, TenantSettings],
                 operators: Sequence[OperatorSettings] = ()) -> None:
        self._by_hash = {
            key.sha256: Principal(tenant.name, key.name, key.role, key.sha256)
            for tenant in tenants.values()
            for key in tenant.keys
        }
        self._operators = {op.sha256: Operator(op.name, op.role, op.sha256) for op in operators}

    def __len__(self) -> int:
        return len(self._by_hash)

    def holds(self, principal: Principal) -> bool:
        """The same key is still in this configuration, for the same tenant, name and role (a
        request held across a reload is admitted only if so)."""
        return self._by_hash.get(principal.digest) == principal

    def authenticate(self, authorization: str | None) -> Principal:
        """A tenant key (the proxy's callers): an operator's key is refused, with a 403 that
        says where it belongs."""
        digest, secret = self._digest(authorization)
        principal = self._by_hash.get(digest)
        if principal is None:
            raise self._unknown(digest, secret)
        return principal

    def identify(self, authorization: str | None) -> Principal | Operator:
        """A tenant key or an operator's (the admin API's callers)."""
        digest, secret = self._digest(authorization)
        caller = self._by_hash.get(digest) or self._operators.get(digest)
        if caller is None:
            raise Unauthenticated(f"Incorrect API key provided: {mask(secret)}.")
        return caller

    def operator(self, authorization: str | None) -> Operator | None:
        """The operator whose key ``authorization`` carries, if any (never raises)."""
        try:
            digest, _ = self._digest(authorization)
        except Unauthenticated:
            return None
        return self._operators.get(digest)

    @property
    def has_operators(self) -> bool:
        return bool(self._operators)

    def _unknown(self, digest: str, secret: str) -> Exception:
        operator = self._operators.get(digest)
        if operator is None:
            return Unauthenticated(f"Incorrect API key provided: {mask(secret)}.")
        return Forbidden(
            f"The key '{operator.name}' is an operator key: operator keys read spend and manage "
            "budgets through /api/client/v1 (naming the tenant), and open /metrics. Requests "
            "to the proxy (/v1/...) need a tenant key.", code="operator_key_not_for_proxy")

    @staticmethod
    def _digest(authorization: str | None) -> tuple[str, str]:
        """The sha256 of the Bearer secret, and the secret; 401 if there is none."""
        if not authorization:
            raise Unauthenticated(
                "You didn't provide an API key. Send your tenant key as 'Authorization: Bearer "
                "<key>' (the openai SDK does this from api_key / OPENAI_API_KEY)."
            )
        scheme, _, secret = authorization.partition(" ")
        secret = secret.strip(" \t")
        if scheme.lower() != "bearer" or not _SECRET.fullmatch(secret):
            raise Unauthenticated(
                "Malformed Authorization header: expected 'Bearer <key>', the key in visible "
                "ASCII characters."
            )
        return hashlib.sha256(secret.encode("ascii")).hexdigest(), secret


def mask(secret: str) -> str:
    """Enough for a user to tell which key they sent, never enough to use it."""
    if len(secret) < 12:
        return "****"
    return f"{secret[:3]}****{secret[-4:]}"
