"""Prices per model and the one rule that turns usage into money.

Prices are USD per 1M tokens (or per call) at the edges and integer pico-dollars per unit
inside, so that every cost is an exact integer of nano-dollars, rounded up once per call.

Every billed item has its own rate, as genai-prices models them: uncached, cached-read and
cache-write input, audio in and out, output (reasoning inside it), and per-call tool fees; each
service tier (priority, flex, ...) has its own set. Usage is split into items the way
genai-prices splits it (``compute_leaf_values``): a count is priced at the most specific item
that has a price, its parent item pays for the rest, so no token is counted twice.
"""

from __future__ import annotations

import enum
import fnmatch
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from types import MappingProxyType

PICO_PER_NANO = 1000
PICO_PER_USD = 10**12
DEFAULT_TIER = "default"


class Item(enum.StrEnum):
    """A billed item; the value is genai-prices' price key for it."""

    INPUT = "input_mtok"
    CACHE_READ = "cache_read_mtok"
    CACHE_WRITE = "cache_write_mtok"
    INPUT_AUDIO = "input_audio_mtok"
    CACHE_AUDIO_READ = "cache_audio_read_mtok"
    OUTPUT = "output_mtok"
    OUTPUT_AUDIO = "output_audio_mtok"
    WEB_SEARCH = "web_searches_kcount"
    FILE_SEARCH = "storage_searches_kcount"

    @property
    def per_usd(self) -> int:
        """Units per price quote: a price is USD per 1M tokens or per 1,000 calls."""
        return 1000 if self.value.endswith("_kcount") else 1_000_000


# Each token item's dimensions (genai-prices' registry): an item is a descendant of another when
# its dimensions include the other's, and a descendant's tokens are inside its ancestor's count.
_DIMENSIONS: dict[Item, frozenset[str]] = {
    Item.INPUT: frozenset({"input"}),
    Item.CACHE_READ: frozenset({"input", "cache_read"}),
    Item.CACHE_WRITE: frozenset({"input", "cache_write"}),
    Item.INPUT_AUDIO: frozenset({"input", "audio"}),
    Item.CACHE_AUDIO_READ: frozenset({"input", "audio", "cache_read"}),
    Item.OUTPUT: frozenset({"output"}),
    Item.OUTPUT_AUDIO: frozenset({"output", "audio"}),
}
_INPUT_ITEMS = tuple(i for i, d in _DIMENSIONS.items() if "input" in d)
_OUTPUT_ITEMS = tuple(i for i, d in _DIMENSIONS.items() if "output" in d)
_CALL_ITEMS = (Item.WEB_SEARCH, Item.FILE_SEARCH)
# Most specific first, as genai-prices orders them, so each leaf is known before its parents.
_LEAF_ORDER = sorted(_DIMENSIONS, key=lambda i: (-len(_DIMENSIONS[i]), i.value))


@dataclass(frozen=True, slots=True)
class Billed:
    """One call's billed counts, as the upstream reported them (OpenAI's nesting: cached and
    audio input tokens are inside ``input_tokens``, audio and reasoning output inside
    ``output_tokens``)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    input_audio_tokens: int = 0
    cache_audio_read_tokens: int = 0
    output_audio_tokens: int = 0
    web_searches: int = 0
    file_searches: int = 0

    def count(self, item: Item) -> int:
        return int(getattr(self, _COUNT_OF[item]))


_COUNT_OF = {
    Item.INPUT: "input_tokens",
    Item.CACHE_READ: "cache_read_tokens",
    Item.CACHE_WRITE: "cache_write_tokens",
    Item.INPUT_AUDIO: "input_audio_tokens",
    Item.CACHE_AUDIO_READ: "cache_audio_read_tokens",
    Item.OUTPUT: "output_tokens",
    Item.OUTPUT_AUDIO: "output_audio_tokens",
    Item.WEB_SEARCH: "web_searches",
    Item.FILE_SEARCH: "file_searches",
}


@dataclass(frozen=True, slots=True)
class Rate:
    """Pico-dollars per unit; ``tiers`` are cliff prices by the call's input tokens, as
    genai-prices' ``TieredPrices``: above ``start`` input tokens, every unit pays that price."""

    pico: int
    tiers: tuple[tuple[int, int], ...] = ()

    def at(self, input_tokens: int) -> int:
        for start, pico in reversed(self.tiers):
            if input_tokens > start:
                return pico
        return self.pico

    def most(self, input_tokens: int) -> int:
        """The dearest price any call with at most ``input_tokens`` input tokens may pay."""
        return max([self.pico, *(p for s, p in self.tiers if input_tokens > s)])


def usd_rate(item: Item, usd: float) -> Rate:
    """A price quoted in USD per 1M tokens (per 1,000 calls for tool fees)."""
    return Rate(round(usd * PICO_PER_USD / item.per_usd))


Rates = Mapping[Item, Rate]


@dataclass(frozen=True, slots=True)
class Price:
    """A model's prices and the sizes that bound its calls.

    ``rates`` are the standard tier's; ``tiers`` hold whole rate sets for the others (a tier not
    there pays standard). ``context_window`` and ``max_output_tokens`` bound what a call may
    bill when the request does not say; None where the data does not know.
    """

    rates: Rates
    tiers: Mapping[str, Rates] = field(default_factory=dict)
    context_window: int | None = None
    max_output_tokens: int | None = None
    default_max_output_tokens: int | None = None  # the output cap set when a request has none
    name: str = field(default="", compare=False)  # the table's name: a config key or a model id,
    # bounded by the configuration, never by what clients send: fit for a metric label
    _flat_worst: dict[tuple[str, ...], Worst] = field(
        default_factory=dict, init=False, compare=False, repr=False)  # per request's tiers

    @classmethod
    def per_million(
        cls,
        input: float,
        cached_input: float | None = None,
        output: float = 0.0,
        **items: float | None,
    ) -> Price:
        """The simple form (USD per 1M tokens): ``cached_input`` defaults to ``input``.

        ``items``: any other :class:`Item` by its name in lower case (``cache_write``,
        ``input_audio``, ``web_search`` in USD per 1,000 calls, ...)."""
        rates = {Item.INPUT: usd_rate(Item.INPUT, input),
                 Item.OUTPUT: usd_rate(Item.OUTPUT, output)}
        if cached_input is not None:
            rates[Item.CACHE_READ] = usd_rate(Item.CACHE_READ, cached_input)
        for name, usd in items.items():
            if usd is not None:
                item = Item[name.upper()]
                rates[item] = usd_rate(item, usd)
        return cls(MappingProxyType(rates))

    def rates_for(self, tier: str | None) -> Rates:
        return self.tiers.get(tier or DEFAULT_TIER, self.rates)

    def charge_nano(self, billed: Billed, tier: str | None = None) -> int:
        """What ``billed`` costs at ``tier``, rounded up to the nano-dollar."""
        return -(-self._charge_pico(self.rates_for(tier), billed) // PICO_PER_NANO)

    def cost_nano(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> int:
        """Text tokens at the standard tier; cached tokens are inside ``input_tokens``."""
        cached = min(max(cached_tokens, 0), input_tokens)
        return self.charge_nano(Billed(input_tokens, output_tokens, cache_read_tokens=cached))

    def bound_nano(
        self, input_tokens: int, output_tokens: int, calls: int = 0, tiers: Iterable[str] = ()
    ) -> int:
        """The most a call within these counts may cost at any of ``tiers`` (standard if none):
        every input token at the dearest input item, every output token at the dearest output
        item, every tool call at the dearest fee."""
        worst = self.worst(input_tokens, tiers)
        return worst.nano(input_tokens, output_tokens, calls)

    def worst(self, input_tokens: int, tiers: Iterable[str] = ()) -> Worst:
        flat = self._flat_worst.get(tiers) if isinstance(tiers, tuple) else None
        if flat is not None:  # no rate of these tiers depends on the input's size
            return flat
        key = tuple(t if t in self.tiers else DEFAULT_TIER for t in tiers)  # known ones only
        flat = self._flat_worst.get(key)
        if flat is not None:
            return flat
        sets = [self.rates_for(t) for t in key] or [self.rates]

        def dearest(items: tuple[Item, ...]) -> int:
            return max((r[i].most(input_tokens) for r in sets for i in items if i in r), default=0)

        worst = Worst(dearest(_INPUT_ITEMS), dearest(_OUTPUT_ITEMS), dearest(_CALL_ITEMS))
        if not any(rate.tiers for rates in sets for rate in rates.values()):
            self._flat_worst[key] = worst  # bounded by the tiers the price table names
        return worst

    @staticmethod
    def _charge_pico(rates: Rates, billed: Billed) -> int:
        total_input = billed.input_tokens
        leaves = _leaves(rates, billed)
        if leaves is None:  # inconsistent counts (a part larger than its whole): the worst
            worst = Worst(
                max((rates[i].at(total_input) for i in _INPUT_ITEMS if i in rates), default=0),
                max((rates[i].at(total_input) for i in _OUTPUT_ITEMS if i in rates), default=0),
                max((rates[i].at(total_input) for i in _CALL_ITEMS if i in rates), default=0),
            )
            calls = billed.web_searches + billed.file_searches
            return worst.pico(billed.input_tokens, billed.output_tokens, calls)
        pico = sum(rates[item].at(total_input) * n for item, n in leaves.items())
        for item in _CALL_ITEMS:
            if item in rates:
                pico += rates[item].at(total_input) * billed.count(item)
        return pico


@dataclass(frozen=True, slots=True)
class Worst:
    """Pico-dollars per input token, per output token and per tool call, at their dearest."""

    input: int
    output: int
    call: int

    def pico(self, input_tokens: int, output_tokens: int, calls: int = 0) -> int:
        return input_tokens * self.input + output_tokens * self.output + calls * self.call

    def nano(self, input_tokens: int, output_tokens: int, calls: int = 0) -> int:
        return -(-self.pico(input_tokens, output_tokens, calls) // PICO_PER_NANO)

    def max_output_within(self, nano: int, input_tokens: int, calls: int = 0) -> int:
        """The most output tokens that keep a call's worst cost within ``nano``."""
        room = nano * PICO_PER_NANO - input_tokens * self.input - calls * self.call
        if room < 0:
            return 0
        return room // self.output if self.output else 2**62


def _leaves(rates: Rates, billed: Billed) -> dict[Item, int] | None:
    """genai-prices' decomposition over the priced token items: each priced item's count less
    its priced descendants' leaves. None when the counts contradict each other."""
    leaves: dict[Item, int] = {}
    for item in _LEAF_ORDER:
        if item not in rates:
            continue
        dims = _DIMENSIONS[item]
        inside = sum(n for other, n in leaves.items() if dims < _DIMENSIONS[other])
        leaf = billed.count(item) - inside
        if leaf < 0:
            return None
        leaves[item] = leaf
    return leaves


class PriceTable:
    """Exact names first, then globs, the most specific (longest literal prefix) first, then
    ``fallback`` (the shipped price data) for names the table does not have."""

    def __init__(
        self,
        prices: Mapping[str, Price],
        fallback: Callable[[str], Price | None] | None = None,
        fallback_names: Iterable[str] = (),
    ) -> None:
        named = {k: v if v.name else replace(v, name=k) for k, v in prices.items()}
        self._exact = {k: v for k, v in named.items() if not is_glob(k)}
        globs = [(k, v) for k, v in named.items() if is_glob(k)]
        globs.sort(key=lambda kv: (-len(_literal_prefix(kv[0])), -len(kv[0])))
        self._globs = globs
        self._fallback = fallback
        self._fallback_names = tuple(fallback_names)
        self._cache: dict[str, Price | None] = {}

    def lookup(self, model: str) -> Price | None:
        try:
            return self._cache[model]
        except KeyError:
            pass
        price = self._exact.get(model)
        if price is None:
            price = next((p for pat, p in self._globs if fnmatch.fnmatchcase(model, pat)), None)
        if self._fallback is not None:
            shipped = self._fallback(model)
            price = shipped if price is None else with_facts(price, shipped)
        if len(self._cache) < 10_000:  # bounded: model names come from clients
            self._cache[model] = price
        return price

    @cached_property
    def names(self) -> tuple[str, ...]:
        """Every exact model name the table prices (its own and the shipped data's)."""
        return tuple(dict.fromkeys([*self._exact, *self._fallback_names]))


def with_facts(price: Price, facts: Price | None) -> Price:
    """``price`` with the sizes it does not set taken from ``facts`` (a YAML override of a
    model's prices keeps the shipped data's context window and output limit)."""
    if facts is None:
        return price
    sizes = ("context_window", "max_output_tokens", "default_max_output_tokens")
    missing = {f.name: getattr(facts, f.name) for f in fields(Price)
               if f.name in sizes and getattr(price, f.name) is None}
    return replace(price, **missing) if missing else price


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _literal_prefix(pattern: str) -> str:
    for i, c in enumerate(pattern):
        if c in "*?[":
            return pattern[:i]
    return pattern
