"""The shipped prices worked out in a child process: the same rates and names as genai-prices
itself, and a gateway process that never holds genai-prices."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import subprocess
import sys

import pytest
from genai_prices import data as genai_data

from gateway.cost import price_data, price_export
from gateway.cost.price_data import ShippedPrices, exported, matcher

TODAY = dt.date(2026, 12, 6)
OPENAI = next(p for p in genai_data.providers if p.id == "openai").models


def _names() -> list[str]:
    """Every exact name genai-prices lists, and what clients send beside them."""
    exact = sorted({n for m in OPENAI for n in price_data._equals(price_export.clause(m.match))})
    variants = [f(n) for n in exact[::7] for f in (
        str.upper, lambda n: n + "-2025-01-01", lambda n: "ft:" + n + ":org::id",
        lambda n: n[:-1], lambda n: n + "x")]
    return exact + variants + ["", "gpt", "o", "GPT-4O-MINI", "my-model", "o3-deep-research-x"]


NAMES = _names()


def test_each_clause_matches_what_genai_prices_matches() -> None:
    for info in OPENAI:
        matches = matcher(price_export.clause(info.match))
        for name in NAMES:
            assert matches(name.lower()) == info.is_match(name), (info.id, name)


def test_a_name_is_priced_by_the_model_genai_prices_picks() -> None:
    shipped = ShippedPrices(TODAY)
    for name in NAMES:
        picked = next((m.id for m in OPENAI if m.is_match(name)), None)
        price = shipped.lookup(name)
        assert (price.name if price else None) == picked, name


def test_the_child_process_gives_what_the_export_gives_in_process() -> None:
    assert exported(TODAY) == price_export.export(TODAY)


def test_working_out_the_prices_leaves_genai_prices_out_of_the_process() -> None:
    script = ("import sys; from gateway.cost.price_data import shipped_table; "
              "t = shipped_table({}); assert t.lookup('gpt-4o-mini') is not None; "
              "print(sorted(m for m in ('genai_prices', 'pydantic') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, timeout=120)
    assert done.stdout.strip() == "[]"


def test_without_a_child_process_the_prices_are_worked_out_in_this_one(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    day = dt.date(2026, 1, 2)  # a day not asked for yet: the cache would answer
    exported.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.cost.price_data"):
            data = exported(day)
    finally:
        exported.cache_clear()
    assert data == price_export.export(day)
    assert "worked out in this process" in caplog.text


def test_a_clause_kind_the_gateway_does_not_know_fails_the_export() -> None:
    @dataclasses.dataclass
    class ClauseNew:
        new: str

    with pytest.raises(TypeError, match="ClauseNew is not known to this gateway"):
        price_export.clause(ClauseNew("x"))
