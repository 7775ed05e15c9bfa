"""The shipped price data: genai-prices' dated snapshot of OpenAI's prices, read offline.

genai-prices (Pydantic's maintained price data) is the source for every model's rates per
billed item and service tier and for its context window; ``model_limits.yaml`` adds what it
lacks (maximum output). Nothing here ever fetches: the package's bundled snapshot is used as
installed, so prices change only when the dependency is upgraded, on purpose.

Rates are compiled once per model, for the date they are compiled on (genai-prices dates some
prices); a configuration reload compiles them again.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from collections.abc import Iterator, Mapping
from decimal import Decimal
from functools import cache
from importlib import metadata, resources
from types import MappingProxyType
from typing import Any

import yaml
from genai_prices import data as genai_data
from genai_prices import types as genai

from gateway.cost.pricing import DEFAULT_TIER, Item, Price, PriceTable, Rate, Rates

PROVIDER = "openai"
SOURCE = f"genai-prices {metadata.version('genai-prices')}"
_LIMITS = "model_limits.yaml"
_SIZES = ("context_window", "max_output_tokens")


@cache
def model_limits() -> tuple[tuple[str, Mapping[str, int]], ...]:
    """The shipped table of model sizes, in file order (first match wins)."""
    text = resources.files("gateway.cost").joinpath(_LIMITS).read_text(encoding="utf-8")
    models = yaml.safe_load(text)["models"]
    return tuple((pattern, MappingProxyType(dict(sizes))) for pattern, sizes in models.items())


def limits_for(model: str) -> Mapping[str, int]:
    return next((s for p, s in model_limits() if fnmatch.fnmatchcase(model, p)), {})


class ShippedPrices:
    """genai-prices' OpenAI models as :class:`Price`, compiled on first use of each model."""

    def __init__(self, today: dt.date | None = None) -> None:
        self._when = dt.datetime.combine(today or dt.datetime.now(dt.UTC).date(), dt.time(),
                                         dt.UTC)
        self._models = next(p for p in genai_data.providers if p.id == PROVIDER).models
        self._compiled: dict[str, Price] = {}

    def lookup(self, model: str) -> Price | None:
        info = next((m for m in self._models if m.is_match(model)), None)
        if info is None:
            return None
        price = self._compiled.get(info.id)
        if price is None:
            price = self._compiled[info.id] = self._compile(info, model)
        return price

    def names(self) -> tuple[str, ...]:
        """The exact names genai-prices matches (prefix and pattern matches cannot be listed)."""
        return tuple(name for m in self._models for name in _equals(m.match))

    def _compile(self, info: genai.ModelInfo, model: str) -> Price:
        tiers = {
            tier: _rates(info.get_prices(self._when, context))
            for tier, context in _variants(info)
        }
        sizes = dict(limits_for(info.id) or limits_for(model))
        if info.context_window is not None:
            sizes.setdefault("context_window", info.context_window)
        return Price(
            _rates(info.get_prices(self._when)),
            MappingProxyType(tiers),
            context_window=sizes.get("context_window"),
            max_output_tokens=sizes.get("max_output_tokens"),
            name=info.id,
        )


def shipped_table(overrides: Mapping[str, Price], today: dt.date | None = None) -> PriceTable:
    """The config's ``pricing:`` over the shipped data; an override keeps the shipped sizes."""
    shipped = ShippedPrices(today)

    def fallback(model: str) -> Price | None:
        return shipped.lookup(model)

    return PriceTable(overrides, fallback, shipped.names())


def _variants(info: genai.ModelInfo) -> Iterator[tuple[str, dict[str, str]]]:
    """Each tier genai-prices prices apart: service tiers by name, batch as "batch"."""
    for variant in info.price_variants or ():
        tier = variant.when.get("service_tier")
        if tier is not None and tier != DEFAULT_TIER:
            yield tier, {"service_tier": tier}
        elif variant.when.get("processing") == "batch":
            yield "batch", {"processing": "batch"}


def _rates(model_price: genai.ModelPrice) -> Rates:
    rates: dict[Item, Rate] = {}
    for item in Item:
        value: Any = getattr(model_price, item.value, None)
        if isinstance(value, genai.TieredPrices):
            tiers = tuple((t.start, _pico(item, t.price)) for t in value.tiers)
            rates[item] = Rate(_pico(item, value.base), tiers)
        elif isinstance(value, Decimal):
            rates[item] = Rate(_pico(item, value))
    rates.setdefault(Item.INPUT, Rate(0))
    rates.setdefault(Item.OUTPUT, Rate(0))
    return MappingProxyType(rates)


def _pico(item: Item, usd: Decimal) -> int:
    """Exact where the price has at most 12 decimals per unit (all of OpenAI's); else rounded
    up, so a cost is never under-counted."""
    return -int(-(usd * 10**12 / item.per_usd) // 1)


def _equals(clause: object) -> Iterator[str]:
    if isinstance(clause, genai.ClauseEquals):
        yield clause.equals
    elif isinstance(clause, genai.ClauseOr):
        for part in clause.or_:
            yield from _equals(part)
