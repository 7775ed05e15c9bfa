"""The validated, frozen configuration. Built by ``load.py``; never mutated, only replaced."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from gateway.cost.model import Budget
from gateway.cost.pricing import Price


class Role(StrEnum):
    MEMBER = "member"
    ADMIN = "admin"
    OWNER = "owner"


class OperatorRole(StrEnum):
    VIEWER = "viewer"  # reads every tenant's spend and budgets
    EDITOR = "editor"  # and creates, changes and deletes any tenant's API budgets


# What an operator names to ask about every tenant at once (``?tenant=all``): no tenant may
# take this name.
ALL_TENANTS = "all"


class StoreErrorPolicy(StrEnum):
    REJECT = "reject"
    ALLOW = "allow"


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    name: str
    base_url: str  # without trailing slash, e.g. "https://api.openai.com/v1"
    api_key: str = field(repr=False)  # the gateway's own key: never logged, never sent back
    models: tuple[str, ...] = ("*",)
    timeout_s: float = 600.0


@dataclass(frozen=True, slots=True)
class KeySettings:
    name: str
    sha256: str  # lowercase hex of the secret; the secret itself is never stored
    role: Role = Role.MEMBER


@dataclass(frozen=True, slots=True)
class TenantSettings:
    name: str
    models: tuple[str, ...] | None = None  # allow-list of globs; None allows every priced model
    keys: tuple[KeySettings, ...] = ()


@dataclass(frozen=True, slots=True)
class OperatorSettings:
    """A key of the platform team that runs the gateway, of no tenant: it names the tenant it
    asks about (or all of them) in the admin API, and opens ``/metrics`` as ``ops.token`` does.
    The proxy (``/v1``) refuses it: requests are always some tenant's."""

    name: str
    sha256: str  # lowercase hex of the secret, unique across operators and tenant keys
    role: OperatorRole = OperatorRole.VIEWER


@dataclass(frozen=True, slots=True)
class AlertSettings:
    webhook_url: str | None = None


@dataclass(frozen=True, slots=True)
class OpsSettings:
    """The operations endpoints: ``/metrics`` shows every tenant's figures, so it is never
    served to tenants. With ``listen`` it moves to that address (off the public port); with
    ``token`` it answers only ``Authorization: Bearer <token>`` (as Prometheus sends it). With
    neither, ``/metrics`` is refused on the public port."""

    token: str | None = field(default=None, repr=False)
    listen: str | None = None


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """What one tenant (or all of them) may hold of the gateway; every size and time a client
    could otherwise choose. Past a count: a 429 at once."""

    max_wait_s: float = 600.0  # the longest any budget may hold a request (caps max_wait_s)
    held_per_tenant: int = 100  # requests held (throttled) per tenant
    held_total: int = 1_000  # requests held in all
    concurrent_per_tenant: int = 1_000  # requests in flight per tenant (streams included)
    concurrent_total: int = 8_000  # requests in flight in all
    api_budgets_per_tenant: int = 100  # budgets created through the admin API, per tenant
    budget_name_max: int = 128  # characters in a budget name
    fallback_models_max: int = 4  # a downgrade budget's fallback models (each one store call)
    header_timeout_s: float = 10.0  # to receive a request's headers, else 408
    body_timeout_s: float = 60.0  # to receive a request's body, else 408
    max_header_bytes: int = 16_384  # one header line (request line included)
    end_user_max: int = 256  # characters in an end user's id (safety_identifier, user, header)
    batches_per_tenant: int = 100  # batches running at once per tenant (each holds its bound)
    objects_per_tenant: int = 100_000  # responses, files, batches a tenant owns through the
    # gateway: past it the tenant's own oldest are forgotten (then a 404 for the tenant)
    batch_poll_s: float = 30.0  # how often running batches are asked whether they have ended
    budget_counters_max: int = 2_000_000  # counters the embedded store keeps (one per limit of
    # a budget, per end user for per: end_user); past it a new counter is a 503. At start only
    end_users_reported_max: int = 1_000  # end users with a spend row of their own, per tenant
    # and day (every store); later ones share the day's "other" row. At start only
    audit_entries_per_tenant: int = 1_000  # budget changes the store keeps per tenant (the
    # newest; the oldest dropped), for GET /api/client/v1/audit
    denials_per_tenant: int = 100  # requests refused by a budget each instance remembers per
    # tenant (the newest), for GET /api/client/v1/denials


@dataclass(frozen=True, slots=True)
class Settings:
    source: str = "<defaults>"  # the file it was loaded from
    listen: str = "127.0.0.1:8080"
    store: str = "sqlite://gateway-state.db"  # durable by default; memory:// keeps nothing
    on_store_error: StoreErrorPolicy = StoreErrorPolicy.REJECT
    max_body_bytes: int = 32 * 1024 * 1024
    upstreams: tuple[UpstreamSettings, ...] = ()
    pricing: Mapping[str, Price] = field(default_factory=dict)  # over the shipped price data
    default_max_output_tokens: int | None = None  # None: the model's own maximum output
    default_max_tool_calls: int = 4  # built-in tool calls allowed when a request sets none
    service_tier: str = "default"  # asked for when a request names none (or "auto")
    tenants: Mapping[str, TenantSettings] = field(default_factory=dict)
    budgets: tuple[Budget, ...] = ()
    operators: tuple[OperatorSettings, ...] = ()
    alerts: AlertSettings = AlertSettings()
    ops: OpsSettings = OpsSettings()
    limits: LimitSettings = LimitSettings()
    end_user_header: str = "x-end-user"  # names the end user when the body does not
