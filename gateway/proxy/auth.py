"""Stage 1: who is calling. A tenant key is looked up by its sha256; the secret is never kept."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.errors import Unauthenticated
from gateway.settings.schema import Role, TenantSettings

# What a key can be made of: visible ASCII (``gateway keys new`` makes ``sk-gw-`` + base64url).
# Anything else is refused as malformed without a lookup, and never echoed.
_SECRET = re.compile(r"[!-~]+")


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str
    key_name: str
    role: Role
    digest: str = field(default="", compare=False, repr=False)  # the key's sha256


class Keyring:
    """sha256(secret) -> Principal, compiled once per configuration load."""

    def __init__(self, tenants: Mapping[str, TenantSettings]) -> None:
        self._by_hash = {
            key.sha256: Principal(tenant.name, key.name, key.role, key.sha256)
            for tenant in tenants.values()
            for key in tenant.keys
        }

    def __len__(self) -> int:
        return len(self._by_hash)

    def holds(self, principal: Principal) -> bool:
        """The same key is still in this configuration, for the same tenant, name and role (a
        request held across a reload is admitted only if so)."""
        return self._by_hash.get(principal.digest) == principal

    def authenticate(self, authorization: str | None) -> Principal:
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
        digest = hashlib.sha256(secret.encode("ascii")).hexdigest()
        principal = self._by_hash.get(digest)
        if principal is None:
            raise Unauthenticated(f"Incorrect API key provided: {mask(secret)}.")
        return principal


def mask(secret: str) -> str:
    """Enough for a user to tell which key they sent, never enough to use it."""
    if len(secret) < 12:
        return "****"
    return f"{secret[:3]}****{secret[-4:]}"
