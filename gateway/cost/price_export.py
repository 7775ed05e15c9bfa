"""genai-prices' OpenAI models as plain data, worked out in a process of its own.

genai-prices holds every provider's models as pydantic classes; importing it costs a process
~13 MB resident (pydantic, its compiled core, the whole data set) that it would keep for its
life, though the gateway needs a few kilobytes of it: OpenAI's rates per billed item and tier,
their context windows and the names they match. ``price_data`` runs this module with the
gateway's interpreter (``python -m gateway.cost.price_export DATE``), which prints that, as of
DATE, as JSON on stdout, and keeps none of genai-prices; it calls ``export`` in process when no
child process can be run.

The JSON: ``{"source", "date", "models": [{"id", "match", "context_window", "rates",
"tiers"}]}``. ``match`` is genai-prices' clause tree, each clause an object of one key
(``equals``, ``starts_with``, ``ends_with``, ``contains``, ``regex``, ``or``, ``and``).
``rates`` maps an item (genai-prices' price key) to ``[pico, [[start, pico], ...]]``; ``tiers``
maps a tier ("priority", "flex", "batch"...) to its own rates.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson
from genai_prices import data as genai_data
from genai_prices import types as genai

from gateway.cost.price_data import JSON, SOURCE
from gateway.cost.pricing import DEFAULT_TIER, Item

PROVIDER = "openai"


def export(today: dt.date) -> JSON:
    """The OpenAI models' prices as of ``today`` (UTC midnight), in genai-prices' order: the
    first model whose clause matches a name prices it."""
    when = dt.datetime.combine(today, dt.time(), dt.UTC)
    models = next(p for p in genai_data.providers if p.id == PROVIDER).models
    return {
        "source": SOURCE,
        "date": today.isoformat(),
        "models": [
            {
                "id": info.id,
                "match": clause(info.match),
                "context_window": info.context_window,
                "rates": _rates(info.get_prices(when)),
                "tiers": {tier: _rates(info.get_prices(when, context))
                          for tier, context in _variants(info)},
            }
            for info in models
        ],
    }


def clause(match: object) -> JSON:
    """A match clause as plain data; one this gateway does not know fails the export loudly
    (a name matched by nothing would silently go unpriced)."""
    for cls, key in _LEAVES:
        if isinstance(match, cls):
            return {key: getattr(match, key)}
    if isinstance(match, genai.ClauseOr):
        return {"or": [clause(part) for part in match.or_]}
    if isinstance(match, genai.ClauseAnd):
        return {"and": [clause(part) for part in match.and_]}
    raise TypeError(f"genai-prices match clause {type(match).__name__} is not known to this "
                    "gateway: upgrade the gateway, or pin the genai-prices it was tested with")


_LEAVES = ((genai.ClauseEquals, "equals"), (genai.ClauseStartsWith, "starts_with"),
           (genai.ClauseEndsWith, "ends_with"), (genai.ClauseContains, "contains"),
           (genai.ClauseRegex, "regex"))


def _variants(info: genai.ModelInfo) -> Iterator[tuple[str, dict[str, str]]]:
    """Each tier genai-prices prices apart: service tiers by name, batch as "batch"."""
    for variant in info.price_variants or ():
        tier = variant.when.get("service_tier")
        if tier is not None and tier != DEFAULT_TIER:
            yield tier, {"service_tier": tier}
        elif variant.when.get("processing") == "batch":
            yield "batch", {"processing": "batch"}


def _rates(model_price: genai.ModelPrice) -> JSON:
    rates: JSON = {}
    for item in Item:
        value: Any = getattr(model_price, item.value, None)
        if isinstance(value, genai.TieredPrices):
            rates[item.value] = [_pico(item, value.base),
                                 [[t.start, _pico(item, t.price)] for t in value.tiers]]
        elif isinstance(value, Decimal):
            rates[item.value] = [_pico(item, value), []]
    return rates


def _pico(item: Item, usd: Decimal) -> int:
    """Exact where the price has at most 12 decimals per unit (all of OpenAI's); else rounded
    up, so a cost is never under-counted."""
    return -int(-(usd * 10**12 / item.per_usd) // 1)


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        sys.exit("usage: python -m gateway.cost.price_export YYYY-MM-DD")
    sys.stdout.buffer.write(orjson.dumps(export(dt.date.fromisoformat(argv[0]))))


if __name__ == "__main__":
    main(sys.argv[1:])
