"""YAML file -> validated, frozen ``Settings``, or ``ConfigErrors`` naming every problem.

Everything is checked here, once per load, so that a reload either swaps in a configuration
that is wholly valid or keeps the last good one; nothing downstream re-validates.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping
from dataclasses import fields, replace
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import SplitResult, parse_qs, urlsplit

import yaml
from yaml.nodes import Node

from gateway.cost.model import Budget, BudgetAction, Domain, Limit, Per
from gateway.cost.price_data import shipped_table
from gateway.cost.pricing import Price
from gateway.errors import ConfigError, ConfigErrors
from gateway.settings import checks
from gateway.settings.models import ModelAccess
from gateway.settings.schema import (
    ALL_TENANTS,
    AlertSettings,
    KeySettings,
    LimitSettings,
    OperatorRole,
    OperatorSettings,
    OpsSettings,
    Role,
    Settings,
    StoreErrorPolicy,
    TenantSettings,
    UpstreamSettings,
)
from gateway.settings.yamlpos import Fields, Reader, index, join, line_of, suggest
from gateway.store import url as store_url
from gateway.store.sqlite import sqlite_path

T = TypeVar("T")

TOP_LEVEL = (
    "listen",
    "store",
    "on_store_error",
    "max_body_bytes",
    "upstreams",
    "pricing",
    "default_max_output_tokens",
    "default_max_tool_calls",
    "service_tier",
    "tenants",
    "budgets",
    "operators",
    "alerts",
    "ops",
    "limits",
    "end_user_header",
)
UPSTREAM_FIELDS = ("base_url", "api_key", "models", "timeout_s")
# USD per 1M tokens, per 1,000 calls for the tool fees (as OpenAI quotes them).
RATE_FIELDS = ("input", "cached_input", "output", "cache_write", "input_audio",
               "cached_audio_input", "output_audio", "web_search", "file_search")
SIZE_FIELDS = ("context_window", "max_output_tokens", "default_max_output_tokens")
PRICE_FIELDS = (*RATE_FIELDS, *SIZE_FIELDS, "tiers")
TENANT_FIELDS = ("models", "keys")
KEY_FIELDS = ("name", "sha256", "role")
LIMIT_FIELDS = tuple(limit.value for limit in Limit)
API_ID_PREFIX = "bud_"  # the admin API's budget ids; the file's own ids may not take it
BUDGET_FIELDS = (
    "name",
    "tenant",
    "key",
    "model",
    "domain",
    *LIMIT_FIELDS,
    "alert_threshold",
    "action",
    "max_wait_s",
    "clamp_max_tokens",
    "per",
    "end_user_required",
    "fallback_model",
)
FILE_BUDGET_FIELDS = (*BUDGET_FIELDS, "id")
STORE_SCHEMES = ("memory", "sqlite", "redis", "rediss", "redis+cluster")

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


# Counters are integer nano-dollars and tokens, exact in Redis's Lua numbers (doubles) up to
# 2**53; a larger limit would also let reservations overflow Redis's 64-bit integers.
MAX_COST_USD = 9_000_000.0
MAX_TOKENS = 2**53


def load_settings(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Settings:
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as file:
            text = file.read()
    except OSError as exc:
        message = f"cannot read: {exc.strerror or exc}"
        raise ConfigErrors([ConfigError(source, None, "(file)", message)]) from None
    except UnicodeDecodeError as exc:
        message = f"not UTF-8 text (byte {exc.start})"
        raise ConfigErrors([ConfigError(source, None, "(file)", message)]) from None
    return parse_settings(text, source, env)


def parse_settings(text: str, source: str, env: Mapping[str, str] | None = None) -> Settings:
    reader = Reader(source, os.environ if env is None else env)
    top = reader.document(text, TOP_LEVEL)
    settings = _settings(top) if top is not None else None
    if settings is None or reader.errors:
        raise ConfigErrors(_in_file_order(reader.errors))
    return settings


def _or(value: T | None, default: T) -> T:
    return default if value is None else value


def _in_file_order(errors: list[ConfigError]) -> list[ConfigError]:
    """Sorted by line, each once: an aliased node is walked once per alias."""
    unique = {(e.line, e.field, e.message): e for e in errors}
    return sorted(unique.values(), key=lambda e: e.line or 0)


def _settings(top: Fields) -> Settings:
    defaults = Settings()
    hashes: dict[str, str] = {}  # sha256 -> where it was first seen: tenant keys, operators
    tenants, key_names = _tenants(top, hashes)
    limits = _limits(top)
    upstreams, pricing = _upstreams(top), MappingProxyType(_pricing(top))
    access = ModelAccess(tenants, upstreams, shipped_table(pricing))
    return Settings(
        source=top.reader.source,
        listen=_or(_listen(top), defaults.listen),
        store=_or(_store(top), defaults.store),
        on_store_error=_or(top.choice("on_store_error", StoreErrorPolicy), defaults.on_store_error),
        max_body_bytes=_or(top.integer("max_body_bytes", minimum=1), defaults.max_body_bytes),
        upstreams=upstreams,
        pricing=pricing,
        default_max_output_tokens=top.integer("default_max_output_tokens", minimum=1),
        default_max_tool_calls=_or(
            top.integer("default_max_tool_calls", minimum=1), defaults.default_max_tool_calls
        ),
        service_tier=_or(top.string("service_tier"), defaults.service_tier),
        tenants=MappingProxyType(tenants),
        budgets=_budgets(top, key_names, limits, access),
        operators=_operators(top, hashes),
        alerts=_alerts(top),
        ops=_ops(top),
        limits=limits,
        end_user_header=_or(_header_name(top, "end_user_header"), defaults.end_user_header),
    )


def _listen(top: Fields) -> str | None:
    value = top.string("listen")
    if value is None:
        return None
    host, colon, port = value.rpartition(":")
    if not (colon and host and port.isdigit() and 1 <= int(port) <= 65535):
        top.error("listen", f'expected "host:port" with a port in 1-65535, got {value!r}')
        return None
    return value


def _store(top: Fields) -> str | None:
    value = top.string("store")
    if value is None:
        return None
    parts = store_url.split(value)
    if parts.scheme not in STORE_SCHEMES or "://" not in value:
        schemes = ", ".join(f"{s}://" for s in STORE_SCHEMES)
        top.error("store", f"expected a URL starting with one of {schemes}")
        return None
    if parts.scheme == "sqlite":
        try:
            sqlite_path(value)
        except ValueError as exc:
            top.error("store", str(exc).split(": ", 1)[-1])
        return value
    if parts.scheme != "memory":
        _redis_store(top, parts)
        return value
    options = parse_qs(parts.query, keep_blank_values=True)
    if parts.netloc or parts.path or parts.fragment or set(options) - {"persist"}:
        top.error("store", "expected memory:// or memory://?persist=PATH")
    elif "persist" in options and not all(options["persist"]):
        top.error("store", "persist= needs a file path")
    return value


def _redis_store(top: Fields, parts: SplitResult) -> None:
    if not parts.netloc:
        top.error("store", "expected a host, as in redis://127.0.0.1:6379/0")
    elif "," in parts.netloc and parts.scheme != "redis+cluster":
        top.error("store", "several hosts are for redis+cluster:// (one Redis: one host)")
    elif not all(_host_port(h) for h in parts.netloc.rpartition("@")[2].split(",")):
        top.error("store", "expected host:port, or for a cluster host:port,host:port,...")
    _store_bound(top, parse_qs(parts.query, keep_blank_values=True))


def _host_port(address: str) -> bool:
    host, colon, port = address.rpartition(":")
    if not colon:
        return bool(address)
    return bool(host) and port.isdigit() and 0 < int(port) < 65_536


def _store_bound(top: Fields, options: Mapping[str, list[str]]) -> None:
    """``max_connections`` (a whole number >= 1) and ``wait_s`` (seconds > 0) on a Redis URL."""
    for name, kind in (("max_connections", int), ("wait_s", float)):
        for given in options.get(name, ()):
            try:
                ok = kind(given) > 0
            except ValueError:
                ok = False
            if not ok:
                what = "a whole number >= 1" if kind is int else "a number of seconds > 0"
                top.error("store", f"{name}= expects {what}, got {given!r}")


def _header_name(top: Fields, name: str) -> str | None:
    """An HTTP header name (an RFC 9110 token), kept lowercase as aiohttp compares them."""
    value = top.string(name)
    if value is not None and not _TOKEN.fullmatch(value):
        top.error(name, "expected an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)")
        return None
    return None if value is None else value.lower()


def _http_url(fields: Fields, name: str, *, query_ok: bool) -> str | None:
    value = fields.string(name)
    if value is None:
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        fields.error(name, "expected an http:// or https:// URL")
        return None
    if not query_ok and (parts.query or parts.fragment):
        fields.error(name, "must not have a query or fragment")
    return value


def _upstreams(top: Fields) -> tuple[UpstreamSettings, ...]:
    entries = top.pairs("upstreams")
    if entries == []:
        top.error("upstreams", "at least one upstream is required")
    upstreams = []
    for name, key_node, node in entries or ():
        up = top.reader.fields(node, join("upstreams", name), UPSTREAM_FIELDS, at=key_node)
        if up is None:
            continue
        up.require("base_url", "api_key")
        base_url = _http_url(up, "base_url", query_ok=False)
        upstreams.append(
            UpstreamSettings(
                name=name,
                base_url=_or(base_url, "").rstrip("/"),
                api_key=_or(up.string("api_key", empty_ok=True), ""),
                models=_or(up.strings("models"), ("*",)),
                timeout_s=_or(up.number("timeout_s", positive=True), 600.0),
            )
        )
    return tuple(upstreams)


def _pricing(top: Fields) -> dict[str, Price]:
    """The config's prices; each entry replaces the shipped data's for the models it matches
    (sizes it leaves out are still the shipped ones)."""
    prices = {}
    for model, key_node, node in top.pairs("pricing") or ():
        entry = top.reader.fields(node, join("pricing", model), PRICE_FIELDS, at=key_node)
        if entry is None:
            continue
        entry.require("input")
        tiers = {}
        for tier, tier_key, tier_node in entry.pairs("tiers") or ():
            rates = top.reader.fields(tier_node, join(entry.path("tiers"), tier), RATE_FIELDS,
                                      at=tier_key)
            if rates is not None:
                rates.require("input")
                tiers[tier] = _rates(rates).rates
        prices[model] = replace(
            _rates(entry),
            tiers=MappingProxyType(tiers),
            context_window=entry.integer("context_window", minimum=1),
            max_output_tokens=entry.integer("max_output_tokens", minimum=1),
            default_max_output_tokens=entry.integer("default_max_output_tokens", minimum=1),
        )
    return prices


def _rates(entry: Fields) -> Price:
    rates = {name: entry.number(name) for name in RATE_FIELDS}
    return Price.per_million(
        input=_or(rates.pop("input"), 0.0),
        cached_input=rates.pop("cached_input"),
        output=_or(rates.pop("output"), 0.0),
        cache_audio_read=rates.pop("cached_audio_input"),
        **rates,
    )


def _tenants(top: Fields, hashes: dict[str, str]
             ) -> tuple[dict[str, TenantSettings], dict[str, set[str]]]:
    """The tenants, and every tenant's key names (even where a key is otherwise invalid).

    Budgets are checked against the names, so one broken key does not also make every budget
    naming it an error.
    """
    tenants: dict[str, TenantSettings] = {}
    key_names: dict[str, set[str]] = {}
    for name, key_node, node in top.pairs("tenants") or ():
        problem = "must not be empty" if not name else checks.unprintable(name)
        if name == ALL_TENANTS:
            problem = (f"'{ALL_TENANTS}' is reserved: operators ask about every tenant with "
                       f"?tenant={ALL_TENANTS}")
        if problem is not None:  # a name no key could be shown or logged by
            top.reader.error(key_node, join("tenants", name), f"tenant name {problem}")
        names = key_names.setdefault(name, set())
        tenant = top.reader.fields(node, join("tenants", name), TENANT_FIELDS, at=key_node)
        if tenant is None:
            continue
        keys = _keys(tenant, names, hashes)
        tenants[name] = TenantSettings(name, tenant.strings("models", empty_ok=True), keys)
    return tenants, key_names


def _keys(tenant: Fields, names: set[str], hashes: dict[str, str]) -> tuple[KeySettings, ...]:
    keys = []
    first: dict[str, Node] = {}
    for i, node in enumerate(tenant.sequence("keys")):
        key = tenant.reader.fields(node, index(tenant.path("keys"), i), KEY_FIELDS)
        if key is None:
            continue
        name, digest = _credential(key, node, first, "key name in this tenant", hashes)
        if name is not None:
            names.add(name)
        role = _or(key.choice("role", Role), Role.MEMBER)
        keys.append(KeySettings(_or(name, ""), _or(digest, ""), role))
    return tuple(keys)


def _operators(top: Fields, hashes: dict[str, str]) -> tuple[OperatorSettings, ...]:
    """The platform team's keys: like a tenant's keys (a name, the secret's sha256 unique
    across operators and tenant keys), with a role of their own (viewer by default)."""
    operators = []
    first: dict[str, Node] = {}
    for i, node in enumerate(top.sequence("operators")):
        entry = top.reader.fields(node, index("operators", i), KEY_FIELDS)
        if entry is None:
            continue
        name, digest = _credential(entry, node, first, "operator name", hashes)
        role = _or(entry.choice("role", OperatorRole), OperatorRole.VIEWER)
        operators.append(OperatorSettings(_or(name, ""), _or(digest, ""), role))
    return tuple(operators)


def _credential(key: Fields, node: Node, first: dict[str, Node], what: str,
                hashes: dict[str, str]) -> tuple[str | None, str | None]:
    """A key's name (printable, unique among ``first``'s) and sha256 (unique in ``hashes``,
    every key and operator of the file), each ``None`` if missing or invalid."""
    key.require("name", "sha256")
    name, digest = key.string("name"), _sha256(key)
    if name is not None:
        _check_unique(key, name, node, first, what)
        if (problem := checks.unprintable(name)) is not None:
            key.error("name", problem)
    if digest is not None:
        where = f"{key.path()} (line {line_of(node)})"
        if hashes.setdefault(digest, where) != where:
            key.error("sha256", f"the same key hash is already used by {hashes[digest]}")
    return name, digest


def _check_unique(fields: Fields, name: str, node: Node, first: dict[str, Node], what: str) -> None:
    """``first`` maps each name to the list item that used it first (by identity, not line)."""
    if first.setdefault(name, node) is not node:
        fields.error("name", f"duplicate {what} (first at line {line_of(first[name])})")


def _sha256(key: Fields) -> str | None:
    value = key.string("sha256")
    if value is not None and not _HEX64.fullmatch(value):
        key.error("sha256", "expected 64 hex characters, as printed by `gateway keys new`")
        return None
    return None if value is None else value.lower()


def _budgets(
    top: Fields, key_names: Mapping[str, set[str]], limits: LimitSettings, access: ModelAccess
) -> tuple[Budget, ...]:
    """The file's budgets. Each is known by its ``id`` if it has one, else by its name: its
    counters follow that, so a budget with an ``id`` keeps its usage through a rename."""
    budgets = []
    first: dict[str, Node] = {}
    first_id: dict[str, Node] = {}
    for i, node in enumerate(top.sequence("budgets")):
        budget = top.reader.fields(node, index("budgets", i), FILE_BUDGET_FIELDS)
        if budget is None:
            continue
        name, ident = budget.string("name"), budget.string("id")
        if name is not None:
            _check_unique(budget, name, node, first, "budget name")
        if ident is not None:
            _check_id(budget, ident, node, first_id, limits)
        budgets.append(replace(_checked_budget(budget, key_names, limits, access), id=ident))
    return tuple(budgets)


def _check_id(budget: Fields, ident: str, node: Node, first: dict[str, Node],
              limits: LimitSettings) -> None:
    problem = checks.name_problem(ident, limits)
    if ident.startswith(API_ID_PREFIX):
        problem = f"ids starting with {API_ID_PREFIX!r} are the admin API's"
    if problem is not None:
        budget.error("id", problem)
    elif ident in first:
        budget.error("id", f"duplicate budget id (first at line {line_of(first[ident])})")
    else:
        first[ident] = node


def parse_budget(
    data: Mapping[str, object],
    key_names: Mapping[str, set[str]],
    limits: LimitSettings,
    source: str = "request",
    access: ModelAccess | None = None,
) -> Budget:
    """A budget from JSON-like data (the admin API), held to exactly the YAML file's rules;
    its fallback models checked against ``access`` (the configuration in force), if given.

    Raises ConfigErrors naming every field at fault (with no line: there is no file).
    """
    node = yaml.SafeDumper(io.StringIO()).represent_data(dict(data))
    reader = Reader(source, env={})
    budget = reader.fields(node, "", BUDGET_FIELDS)
    result = (_checked_budget(budget, key_names, limits, access) if budget is not None
              else None)
    if reader.errors or result is None:
        raise ConfigErrors(reader.errors)
    return result


def _checked_budget(
    budget: Fields, key_names: Mapping[str, set[str]], limits: LimitSettings,
    access: ModelAccess | None,
) -> Budget:
    """Every rule one budget must meet on its own (uniqueness and the API's count are the
    caller's), for the file and the admin API alike; the rules on names, globs and waits are
    ``checks``'s."""
    budget.require("name", "tenant")
    name, tenant, key = budget.string("name"), budget.string("tenant"), budget.string("key")
    _check_references(budget, tenant, key, key_names)
    errors = len(budget.reader.errors)
    result = _budget(budget, _or(name, ""), _or(tenant, ""), key, limits)
    if not any(budget.has(limit) for limit in LIMIT_FIELDS):
        budget.error(None, f"sets no limit; set at least one of {', '.join(LIMIT_FIELDS)}")
    elif len(budget.reader.errors) == errors and not result.limits():  # (a value refused,
        # too large say, is not converted)
        budget.error(None, "sets every limit to 0, and 0 means no limit (as in the seed); set "
                           "at least one above 0 (to stop a tenant, remove its keys)")
    _check_fields(budget, result, limits)
    read = budget.path("fallback_model")
    if not any(e.field.startswith(read) for e in budget.reader.errors):  # else said already
        for problem in checks.fallback_problems(result, limits, access):
            budget.error("fallback_model", problem)
    return result


def _check_fields(budget: Fields, result: Budget, limits: LimitSettings) -> None:
    """The rules on the values read (a field that could not be read has its error already)."""
    problems = (
        ("name", checks.name_problem(result.name, limits)),
        ("model", None if result.model is None else checks.glob_problem(result.model)),
        ("max_wait_s", checks.wait_problem(result.max_wait_s, limits)),
    )
    for field, problem in problems:
        if problem is not None:
            budget.error(field, problem)


def _budget(budget: Fields, name: str, tenant: str, key: str | None, limits: LimitSettings
            ) -> Budget:
    defaults = Budget()
    return Budget(
        name=name,
        tenant=tenant,
        key=key,
        model=budget.string("model"),
        domain=budget.choice("domain", Domain),
        max_tokens_per_hour=budget.integer("max_tokens_per_hour", minimum=0, maximum=MAX_TOKENS),
        max_tokens_per_day=budget.integer("max_tokens_per_day", minimum=0, maximum=MAX_TOKENS),
        max_cost_per_hour=budget.number("max_cost_per_hour", maximum=MAX_COST_USD),
        max_cost_per_day=budget.number("max_cost_per_day", maximum=MAX_COST_USD),
        max_cost_per_month=budget.number("max_cost_per_month", maximum=MAX_COST_USD),
        alert_threshold=budget.number("alert_threshold", maximum=1.0),
        action=_or(budget.choice("action", BudgetAction), defaults.action),
        max_wait_s=_or(budget.number("max_wait_s"), min(defaults.max_wait_s, limits.max_wait_s)),
        clamp_max_tokens=_or(budget.boolean("clamp_max_tokens"), defaults.clamp_max_tokens),
        per=budget.choice("per", Per),
        end_user_required=_or(budget.boolean("end_user_required"), defaults.end_user_required),
        fallback_model=budget.one_or_more("fallback_model"),
        source="file",
    )


def _check_references(
    budget: Fields, tenant: str | None, key: str | None, key_names: Mapping[str, set[str]]
) -> None:
    if tenant is None:
        return
    if tenant not in key_names:
        budget.error("tenant", f"no tenant named {tenant!r}{suggest(tenant, list(key_names))}")
    elif key is not None and key not in key_names[tenant]:
        names = sorted(key_names[tenant])
        budget.error("key", f"tenant {tenant!r} has no key named {key!r}{suggest(key, names)}")


def _ops(top: Fields) -> OpsSettings:
    ops = top.fields("ops", ("token", "listen"))
    if ops is None:
        return OpsSettings()
    token = ops.string("token")
    if token is not None and len(token) < 16:
        ops.error("token", "expected at least 16 characters (a scraper's bearer token)")
    return OpsSettings(token=token, listen=_listen(ops))


_LIMIT_FIELDS = tuple(f.name for f in fields(LimitSettings))


def _limits(top: Fields) -> LimitSettings:
    limits = top.fields("limits", _LIMIT_FIELDS)
    if limits is None:
        return LimitSettings()
    defaults = LimitSettings()
    values: dict[str, Any] = {}
    for name in _LIMIT_FIELDS:
        default = getattr(defaults, name)
        if isinstance(default, float):
            values[name] = _or(limits.number(name, positive=True), default)
        else:
            values[name] = _or(limits.integer(name, minimum=1), default)
    return LimitSettings(**values)


def _alerts(top: Fields) -> AlertSettings:
    alerts = top.fields("alerts", ("webhook_url",))
    if alerts is None:
        return AlertSettings()
    return AlertSettings(webhook_url=_http_url(alerts, "webhook_url", query_ok=True))
