"""Costs against genai-prices' own calculation, to the nano-dollar; and the reservation bound
against every usage it may have to cover."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

import genai_prices
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cost.price_data import SOURCE, shipped_table
from gateway.cost.pricing import Billed, Item, Price, PriceTable
from gateway.settings.load import parse_settings

TODAY = dt.date(2026, 12, 6)
WHEN = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)
TABLE = shipped_table({}, TODAY)


def genai_nano(model: str, billed: Billed, tier: str | None = None) -> int:
    """genai-prices' total for the same usage, rounded up to the nano-dollar as we round."""
    usage = genai_prices.Usage(
        input_tokens=billed.input_tokens, output_tokens=billed.output_tokens,
        cache_read_tokens=billed.cache_read_tokens, cache_write_tokens=billed.cache_write_tokens,
        input_audio_tokens=billed.input_audio_tokens,
        cache_audio_read_tokens=billed.cache_audio_read_tokens,
        output_audio_tokens=billed.output_audio_tokens, web_searches=billed.web_searches,
        storage_searches=billed.file_searches,
    )
    context = {"service_tier": tier} if tier and tier != "batch" else None
    if tier == "batch":
        context = {"processing": "batch"}
    calc = genai_prices.calc_price(usage, model, provider_id="openai",
                                   genai_request_timestamp=WHEN, price_context=context)
    return math.ceil(calc.total_price * Decimal(10**9))


CASES = [
    pytest.param("gpt-4o-mini", Billed(1234, 567, cache_read_tokens=200), None, id="cached"),
    pytest.param("gpt-5", Billed(10_000, 50_000), "priority", id="priority"),
    pytest.param("gpt-5", Billed(10_000, 50_000, cache_read_tokens=4_000), "flex", id="flex"),
    pytest.param("gpt-5", Billed(10_000, 50_000), "batch", id="batch"),
    pytest.param("gpt-5", Billed(3_000, 900, web_searches=3, file_searches=2), None,
                 id="tool-fees"),
    pytest.param("gpt-4o-mini", Billed(2_000, 100, web_searches=1), "priority",
                 id="tool-fee-priority"),
    pytest.param("gpt-audio", Billed(5_000, 2_000, input_audio_tokens=4_000,
                                     output_audio_tokens=1_500), None, id="audio"),
    pytest.param("gpt-realtime", Billed(5_000, 2_000, cache_read_tokens=1_000,
                                        input_audio_tokens=4_000, cache_audio_read_tokens=800,
                                        output_audio_tokens=1_500), None, id="cached-audio"),
    pytest.param("gpt-6-sol", Billed(5_000, 1_000, cache_read_tokens=1_000,
                                     cache_write_tokens=2_000), None, id="cache-write"),
    pytest.param("gpt-5.4", Billed(300_000, 1_000), None, id="long-context-tier"),
    pytest.param("gpt-5.4", Billed(200_000, 1_000), None, id="below-the-tier"),
    pytest.param("davinci-002", Billed(100, 16), None, id="completions-model"),
    pytest.param("text-embedding-3-small", Billed(8_000, 0), None, id="embedding"),
]


@pytest.mark.parametrize(("model", "billed", "tier"), CASES)
def test_cost_equals_genai_prices_to_the_nano_dollar(model: str, billed: Billed,
                                                     tier: str | None) -> None:
    price = TABLE.lookup(model)
    assert price is not None
    assert price.charge_nano(billed, tier) == genai_nano(model, billed, tier)


def test_tiers_differ_as_openai_prices_them() -> None:
    price = TABLE.lookup("gpt-5")
    assert price is not None
    billed = Billed(1_000_000, 1_000_000)
    standard = price.charge_nano(billed)
    assert price.charge_nano(billed, "priority") == 2 * standard
    assert price.charge_nano(billed, "flex") * 2 == standard
    assert price.charge_nano(billed, "unknown-tier") == standard


@pytest.mark.parametrize("model", ["gpt-5-pro", "o3-pro", "gpt-5.1", "gpt-5-codex",
                                   "chatgpt-4o-latest", "gpt-3.5-turbo-instruct", "davinci-002"])
def test_current_and_legacy_models_are_priced_and_bounded(model: str) -> None:
    price = TABLE.lookup(model)
    assert price is not None
    assert price.context_window and price.max_output_tokens


def test_a_yaml_override_wins_and_keeps_the_shipped_sizes() -> None:
    text = """
upstreams:
  u: {base_url: "http://127.0.0.1:1/v1", api_key: k}
pricing:
  gpt-4o-mini: {input: 1.0, output: 2.0, tiers: {priority: {input: 3.0, output: 4.0}}}
  "my-model-*": {input: 0.5, cached_input: 0.1, web_search: 25, context_window: 32000,
                 max_output_tokens: 4000}
"""
    table = shipped_table(parse_settings(text, "t.yaml", env={}).pricing, TODAY)
    mini = table.lookup("gpt-4o-mini")
    assert mini is not None
    assert mini.charge_nano(Billed(1_000_000, 1_000_000)) == 3 * 10**9
    assert mini.charge_nano(Billed(1_000_000, 1_000_000), "priority") == 7 * 10**9
    assert (mini.context_window, mini.max_output_tokens) == (128_000, 16_384)  # shipped sizes
    mine = table.lookup("my-model-7")
    assert mine is not None
    assert mine.charge_nano(Billed(1000, 0, cache_read_tokens=1000, web_searches=2)) == (
        100_000 + 50_000_000)
    assert (mine.context_window, mine.max_output_tokens) == (32_000, 4_000)
    assert table.lookup("gpt-4o") == TABLE.lookup("gpt-4o")  # not overridden: shipped


def test_the_price_data_is_the_dated_package() -> None:
    assert SOURCE.startswith("genai-prices ")
    assert "gpt-4o-mini" in TABLE.names and "davinci-002" in TABLE.names


def test_the_simple_form_and_rounding() -> None:
    price = Price.per_million(input=0.15, cached_input=0.075, output=0.60)
    assert price.cost_nano(1000, 500, cached_tokens=200) == 435_000
    assert Price.per_million(input=0.02).cost_nano(10, 0) == 200
    assert Price.per_million(input=0.0001).cost_nano(1, 0) == 1  # rounds up
    assert PriceTable({"a*": price}).lookup("ab") == price


def test_inconsistent_counts_are_charged_at_the_dearest_rate_never_negative() -> None:
    price = Price.per_million(input=1.0, cached_input=0.5, output=2.0, cache_write=1.25)
    # cache reads and writes larger than the whole input: every token at the dearest input rate
    odd = Billed(100, 10, cache_read_tokens=90, cache_write_tokens=90)
    assert price.charge_nano(odd) == (100 * 1_250_000 + 10 * 2_000_000) // 1000


MODELS = ["gpt-5", "gpt-4o-mini", "gpt-5.4", "gpt-audio", "gpt-realtime", "gpt-6-sol", "o3"]
TIERS = [None, "priority", "flex", "batch", "default"]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    model=st.sampled_from(MODELS),
    tiers=st.lists(st.sampled_from(["default", "priority", "flex"]), min_size=1, max_size=3),
    inp=st.integers(0, 1_200_000), out=st.integers(0, 200_000), calls=st.integers(0, 20),
    parts=st.lists(st.floats(0, 1), min_size=6, max_size=6),
)
def test_the_reservation_bound_covers_every_usage_within_it(
    model: str, tiers: list[str], inp: int, out: int, calls: int, parts: list[float]
) -> None:
    """Whatever the upstream reports within the counts, at any of the tiers reserved for, the
    charge is never above the bound."""
    price = TABLE.lookup(model)
    assert price is not None
    bound = price.bound_nano(inp, out, calls, tiers)
    cached = int(inp * parts[0])
    audio = int(inp * parts[1])
    billed = Billed(
        inp, out, cache_read_tokens=cached, cache_write_tokens=int((inp - cached) * parts[2]),
        input_audio_tokens=audio, cache_audio_read_tokens=int(min(audio, cached) * parts[3]),
        output_audio_tokens=int(out * parts[4]), web_searches=int(calls * parts[5]),
        file_searches=calls - int(calls * parts[5]),
    )
    for tier in tiers:
        assert price.charge_nano(billed, tier) <= bound
    assert price.charge_nano(billed, tiers[0]) >= 0


def test_item_units() -> None:
    assert Item.WEB_SEARCH.per_usd == 1000 and Item.INPUT.per_usd == 1_000_000


def test_the_worst_rates_are_kept_per_known_tier_set_and_never_per_input_size() -> None:
    """``Price.worst`` keeps its answer when no rate depends on the input's size; the kept set
    grows with the price's own tiers only, whatever tier names requests send."""
    from gateway.cost.pricing import Rate

    flat = Price.per_million(input=2.0, output=8.0)
    first = flat.bound_nano(1_000, 500, 0, ("default",))
    for i in range(200):  # a hostile tenant's made-up tiers: all standard, one entry
        assert flat.bound_nano(1_000, 500, 0, (f"tier-{i}", "default")) == first
    assert len(flat._flat_worst) <= 2
    cliff = Price({Item.INPUT: Rate(1_000, ((100, 5_000),)), Item.OUTPUT: Rate(4_000)})
    assert cliff.worst(50).input == 1_000 and cliff.worst(500).input == 5_000
    assert cliff.worst(50).input == 1_000  # a size-dependent rate is never kept
    assert cliff._flat_worst == {}
