"""The value types of the cost library: what was used, what may be used, what was decided."""

from __future__ import annotations

import enum
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

NANO_PER_USD = 1_000_000_000


def usd_to_nano(usd: float) -> int:
    """Money is integer nano-dollars inside: a 10-token embedding costs 0.2 micro-dollars."""
    return round(usd * NANO_PER_USD)


def nano_to_usd(nano: int) -> float:
    return nano / NANO_PER_USD


BATCH_SUFFIX = ":batch"  # batch work is recorded under its upstream's name with this suffix


def batch_provider(upstream: str) -> str:
    """The usage record's ``provider`` of batch work: reports tell it apart by it."""
    return upstream + BATCH_SUFFIX


def is_batch(provider: str) -> bool:
    return provider.endswith(BATCH_SUFFIX)


@dataclass(frozen=True, slots=True)
class Usage:
    """One call's consumption. Cached tokens are part of input tokens, as OpenAI counts them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    total_tokens: int = 0
    cost: float = 0.0  # USD
    model: str = ""
    provider: str = ""
    tenant_id: str = ""
    timestamp: float = 0.0  # seconds since the epoch, UTC
    estimated: bool = False  # the gateway's bound or count, not the upstream's report
    end_user: str | None = None  # the tenant's end user the request named, if any


usage_values: Callable[[Usage], tuple[Any, ...]] = operator.attrgetter(
    *(f.name for f in fields(Usage)))
"""A Usage's fields in their order, as a tuple (``Usage(*values)`` makes it again). A tuple of
plain values is one the garbage collector stops tracking: 100,000 of them in a usage log add
nothing to its full collections, which walked 100,000 Usage objects in 25-50 ms."""


@dataclass(frozen=True, slots=True)
class Filter:
    """Unset fields match everything, and so do zero values ("" and 0, as the seed has it:
    "Zero-value fields are ignored and match any record."); ``since`` is inclusive, ``until``
    exclusive."""

    tenant_id: str | None = None
    model: str | None = None
    provider: str | None = None
    since: float | None = None
    until: float | None = None
    end_user: str | None = None

    def __post_init__(self) -> None:
        for name in ("tenant_id", "model", "provider", "since", "until", "end_user"):
            if not getattr(self, name):  # "" or 0: unset
                object.__setattr__(self, name, None)

    def matches(self, usage: Usage) -> bool:
        return (
            (self.tenant_id is None or usage.tenant_id == self.tenant_id)
            and (self.model is None or usage.model == self.model)
            and (self.provider is None or usage.provider == self.provider)
            and (self.since is None or usage.timestamp >= self.since)
            and (self.until is None or usage.timestamp < self.until)
            and (self.end_user is None or usage.end_user == self.end_user)
        )


@dataclass(frozen=True, slots=True)
class Summary:
    total_input_tokens: int = 0
    total_output_tokens: int = 0
    total_cost: float = 0.0  # USD
    entry_count: int = 0


class BudgetAction(enum.StrEnum):
    REJECT = "reject"
    THROTTLE = "throttle"
    ALERT = "alert"
    DOWNGRADE = "downgrade"  # past a limit: served by a cheaper model (``fallback_model``)


class Per(enum.StrEnum):
    """What a budget's limits apply to, each on its own: ``end_user``, every end user of the
    tenant (a template: each distinct end user gets their own windows)."""

    END_USER = "end_user"


class Domain(enum.StrEnum):
    LLM = "llm"
    EMBEDDING = "embedding"


class Limit(enum.StrEnum):
    """The five limits a budget may set; the value is the YAML field name."""

    TOKENS_PER_HOUR = "max_tokens_per_hour"
    TOKENS_PER_DAY = "max_tokens_per_day"
    COST_PER_HOUR = "max_cost_per_hour"
    COST_PER_DAY = "max_cost_per_day"
    COST_PER_MONTH = "max_cost_per_month"

    @property
    def is_cost(self) -> bool:
        return self.name.startswith("COST")

    @property
    def window(self) -> str:
        return self.name.rsplit("_", 1)[1].lower()


@dataclass(frozen=True, slots=True)
class Budget:
    """Limits on a tenant's (or one key's, model's, domain's) spend, and what to do past them.

    Token limits count input + output tokens; cost limits are USD. ``None`` means no limit, and
    so does 0, as the seed has it ("0 means no limit"): one meaning for the library, the YAML
    and the admin API, which all build this type (a zero is kept as ``None``).
    """

    name: str = "default"
    tenant: str = ""
    key: str | None = None
    model: str | None = None
    domain: Domain | None = None
    max_tokens_per_hour: int | None = None
    max_tokens_per_day: int | None = None
    max_cost_per_hour: float | None = None
    max_cost_per_day: float | None = None
    max_cost_per_month: float | None = None
    alert_threshold: float | None = None
    action: BudgetAction = BudgetAction.REJECT
    max_wait_s: float = 30.0
    clamp_max_tokens: bool = False
    per: Per | None = None  # None: the budget's scope as a whole; end_user: each end user
    end_user_required: bool = False  # a request it matches must name its end user
    fallback_model: tuple[str, ...] | None = None  # downgrade only: the models tried in order
    source: str = "file"
    id: str | None = None

    def __post_init__(self) -> None:
        for limit in Limit:
            if getattr(self, limit.value) == 0:
                object.__setattr__(self, limit.value, None)

    def limits(self) -> list[tuple[Limit, int]]:
        """The limits this budget sets, tokens as-is and costs in nano-dollars."""
        out: list[tuple[Limit, int]] = []
        for limit in Limit:
            value = getattr(self, limit.value)
            if value is not None:
                out.append((limit, usd_to_nano(value) if limit.is_cost else int(value)))
        return out

    @property
    def ident(self) -> str:
        """What the budget is known by, and its counters follow: its ``id``, else its name."""
        return self.id or self.name

    def to_dict(self) -> dict[str, object]:
        """JSON-safe (enums as their values, tuples as lists, ``None`` kept), for stores and
        the admin API."""
        return {f.name: _json_safe(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Budget:
        """The inverse of ``to_dict``. An unknown key is refused, not dropped: a misspelt limit
        must not come back as no limit. Field types are the caller's to check."""
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise ValueError(f"unknown budget field {key!r}")
        values: dict[str, Any] = dict(data)
        kinds: tuple[tuple[str, type[enum.StrEnum]], ...] = (
            ("domain", Domain), ("action", BudgetAction), ("per", Per))
        for name, kind in kinds:
            value = values.get(name)
            if value is None or isinstance(value, kind):
                continue
            try:
                values[name] = kind(value)
            except ValueError:
                choices = ", ".join(k.value for k in kind)
                problem = f"budget field {name!r}: {value!r} is not one of {choices}"
                raise ValueError(problem) from None
        fallbacks = values.get("fallback_model")
        if isinstance(fallbacks, list):
            values["fallback_model"] = tuple(fallbacks)
        return cls(**values)


def _json_safe(value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.value
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True, slots=True)
class BudgetDecision:
    allowed: bool
    reason: str = ""
    usage_ratio: float = 0.0
