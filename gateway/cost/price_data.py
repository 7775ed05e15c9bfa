"""The shipped price data: genai-prices' dated snapshot of OpenAI's prices, read offline.

genai-prices (Pydantic's maintained price data) is the source for every model's rates per
billed item and service tier and for its context window; ``model_limits.yaml`` adds what it
lacks (maximum output). Nothing here ever fetches: the package's bundled snapshot is used as
installed, so prices change only when the dependency is upgraded, on purpose.

The rates are worked out from genai-prices by a child process (``price_export``), once for each
day they are asked for, so that this process never holds genai-prices and pydantic (~13 MB
resident, in every worker, for the few kilobytes of OpenAI's rates). They are compiled into
``Price`` on first use of each model; a configuration reload on a later day works them out
again, for that day (genai-prices dates some prices).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from functools import cache, lru_cache
from importlib import metadata, resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson
import yaml

from gateway.cost.pricing import Item, Price, PriceTable, Rate, Rates

log = logging.getLogger(__name__)

SOURCE = f"genai-prices {metadata.version('genai-prices')}"
_LIMITS = "model_limits.yaml"
_EXPORT_TIMEOUT_S = 120

JSON = dict[str, Any]


@cache
def model_limits() -> tuple[tuple[str, Mapping[str, int]], ...]:
    """The shipped table of model sizes, in file order (first match wins)."""
    text = resources.files("gateway.cost").joinpath(_LIMITS).read_text(encoding="utf-8")
    models = yaml.safe_load(text)["models"]
    return tuple((pattern, MappingProxyType(dict(sizes))) for pattern, sizes in models.items())


def limits_for(model: str) -> Mapping[str, int]:
    return next((s for p, s in model_limits() if fnmatch.fnmatchcase(model, p)), {})


@lru_cache(maxsize=2)  # the day in force, and the one before it while a reload moves on
def exported(today: dt.date) -> JSON:
    """``price_export``'s answer for ``today``, from a child process; in this one (which then
    holds genai-prices) when no child can be run, as in a frozen or embedded interpreter."""
    package_root = str(Path(__file__).resolve().parents[2])  # the child imports this gateway
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "gateway.cost.price_export", today.isoformat()],
            stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=_EXPORT_TIMEOUT_S,
            check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return _in_process(today, f"{type(exc).__name__}: {exc}")
    if done.returncode != 0:
        return _in_process(today, done.stderr.decode(errors="replace").strip()[-500:])
    result: JSON = orjson.loads(done.stdout)
    return result


def _in_process(today: dt.date, why: str) -> JSON:
    log.warning("price data worked out in this process (it now holds genai-prices): the child "
                "process failed: %s", why)
    from gateway.cost import price_export

    return price_export.export(today)


class ShippedPrices:
    """genai-prices' OpenAI models as :class:`Price`, compiled on first use of each model."""

    def __init__(self, today: dt.date | None = None) -> None:
        data = exported(today or dt.datetime.now(dt.UTC).date())
        self._models = [(matcher(m["match"]), m) for m in data["models"]]
        self._compiled: dict[str, Price] = {}

    def lookup(self, model: str) -> Price | None:
        name = model.lower()  # genai-prices matches names in lower case
        found = next((m for matches, m in self._models if matches(name)), None)
        if found is None:
            return None
        price = self._compiled.get(found["id"])
        if price is None:
            price = self._compiled[found["id"]] = _compile(found, model)
        return price

    def names(self) -> tuple[str, ...]:
        """The exact names genai-prices matches (prefix and pattern matches cannot be listed)."""
        return tuple(name for _, m in self._models for name in _equals(m["match"]))


def shipped_table(overrides: Mapping[str, Price], today: dt.date | None = None) -> PriceTable:
    """The config's ``pricing:`` over the shipped data; an override keeps the shipped sizes."""
    shipped = ShippedPrices(today)

    def fallback(model: str) -> Price | None:
        return shipped.lookup(model)

    return PriceTable(overrides, fallback, shipped.names())


def _compile(model: JSON, asked: str) -> Price:
    sizes = dict(limits_for(model["id"]) or limits_for(asked))
    if model["context_window"] is not None:
        sizes.setdefault("context_window", model["context_window"])
    return Price(
        _rates(model["rates"]),
        MappingProxyType({tier: _rates(rates) for tier, rates in model["tiers"].items()}),
        context_window=sizes.get("context_window"),
        max_output_tokens=sizes.get("max_output_tokens"),
        name=model["id"],
    )


def _rates(exported_rates: JSON) -> Rates:
    rates = {Item(item): Rate(pico, tuple((start, p) for start, p in tiers))
             for item, (pico, tiers) in exported_rates.items()}
    rates.setdefault(Item.INPUT, Rate(0))
    rates.setdefault(Item.OUTPUT, Rate(0))
    return MappingProxyType(rates)


def matcher(clause: JSON) -> Callable[[str], bool]:
    """genai-prices' clause as a test of a lower-case name, with its meaning: each text
    compared in lower case, a regex searched as written."""
    (kind, value), = clause.items()
    if kind in ("or", "and"):
        parts = [matcher(part) for part in value]
        combine = any if kind == "or" else all
        return lambda name: combine(part(name) for part in parts)
    if kind == "regex":
        pattern = re.compile(value)
        return lambda name: pattern.search(name) is not None
    text = value.lower()
    tests: dict[str, Callable[[str], bool]] = {
        "equals": lambda name: name == text,
        "starts_with": lambda name: name.startswith(text),
        "ends_with": lambda name: name.endswith(text),
        "contains": lambda name: text in name,
    }
    return tests[kind]


def _equals(clause: JSON) -> Iterator[str]:
    if "equals" in clause:
        yield clause["equals"]
    for part in clause.get("or", ()):
        yield from _equals(part)
