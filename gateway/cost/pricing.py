"""Prices per model and the one rule that turns token counts into money.

Prices are USD per 1M tokens at the edges (YAML) and integer pico-dollars per token inside,
so that every cost is an exact integer of nano-dollars, rounded up once per call.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

PICO_PER_NANO = 1000


def _per_token_pico(usd_per_million: float) -> int:
    return round(usd_per_million * 1_000_000)


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens. ``cached_input`` defaults to ``input``; ``output`` to zero."""

    input: float
    cached_input: float | None = None
    output: float = 0.0
    # integer pico-dollars per token, derived once when the price is made (at config load)
    input_pico_per_token: int = field(init=False, repr=False, compare=False)
    cached_pico_per_token: int = field(init=False, repr=False, compare=False)
    output_pico_per_token: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        cached = self.input if self.cached_input is None else self.cached_input
        object.__setattr__(self, "input_pico_per_token", _per_token_pico(self.input))
        object.__setattr__(self, "cached_pico_per_token", _per_token_pico(cached))
        object.__setattr__(self, "output_pico_per_token", _per_token_pico(self.output))

    def cost_nano(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> int:
        """Cached tokens are inside ``input_tokens`` (OpenAI's convention): each counted once."""
        cached = min(max(cached_tokens, 0), input_tokens)
        pico = (
            (input_tokens - cached) * self.input_pico_per_token
            + cached * self.cached_pico_per_token
            + output_tokens * self.output_pico_per_token
        )
        return -(-pico // PICO_PER_NANO)


class PriceTable:
    """Exact names first, then globs, the most specific (longest literal prefix) first."""

    def __init__(self, prices: Mapping[str, Price]) -> None:
        self._exact = {k: v for k, v in prices.items() if not _is_glob(k)}
        globs = [(k, v) for k, v in prices.items() if _is_glob(k)]
        globs.sort(key=lambda kv: (-len(_literal_prefix(kv[0])), -len(kv[0])))
        self._globs = globs
        self._cache: dict[str, Price | None] = {}

    def lookup(self, model: str) -> Price | None:
        try:
            return self._cache[model]
        except KeyError:
            pass
        price = self._exact.get(model)
        if price is None:
            price = next((p for pat, p in self._globs if fnmatch.fnmatchcase(model, pat)), None)
        if len(self._cache) < 10_000:  # bounded: model names come from clients
            self._cache[model] = price
        return price

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(self._exact)


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _literal_prefix(pattern: str) -> str:
    for i, c in enumerate(pattern):
        if c in "*?[":
            return pattern[:i]
    return pattern


def max_output_within(price: Price, nano: int, input_tokens: int) -> int:
    """The most output tokens that keep a call's cost within ``nano``, given its input."""
    room_pico = nano * PICO_PER_NANO - input_tokens * price.input_pico_per_token
    if room_pico < 0:
        return 0
    per_token = price.output_pico_per_token
    return room_pico // per_token if per_token else 2**62
