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
class AlertSettings:
    webhook_url: str | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    source: str = "<defaults>"  # the file it was loaded from
    listen: str = "127.0.0.1:8080"
    store: str = "memory://"
    on_store_error: StoreErrorPolicy = StoreErrorPolicy.REJECT
    max_body_bytes: int = 32 * 1024 * 1024
    upstreams: tuple[UpstreamSettings, ...] = ()
    pricing: Mapping[str, Price] = field(default_factory=dict)  # over the shipped price data
    default_max_output_tokens: int | None = None  # None: the model's own maximum output
    default_max_tool_calls: int = 4  # built-in tool calls allowed when a request sets none
    service_tier: str = "default"  # asked for when a request names none (or "auto")
    tenants: Mapping[str, TenantSettings] = field(default_factory=dict)
    budgets: tuple[Budget, ...] = ()
    alerts: AlertSettings = AlertSettings()
