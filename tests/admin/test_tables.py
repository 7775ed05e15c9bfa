"""Terminal tables: a column of dollars reads evenly (issue 18, item 7)."""

from __future__ import annotations

from gateway.admin.tables import Column, render, usd, usd_column


def test_a_cost_column_shares_the_decimals_its_smallest_amount_needs() -> None:
    """The user's column: $0.0002, $0.0000132 and $0.00000004 side by side."""
    column = usd_column([0.0002, 0.0000132, 0.00000004])
    assert column == ["$0.00020000", "$0.00001320", "$0.00000004"]
    table = render([Column("COST")], [[cell] for cell in column]).splitlines()
    assert {len(line) for line in table} == {len("$0.00020000")}  # right-aligned, points too
    assert {line.index(".") for line in table[1:]} == {2}


def test_a_column_takes_the_most_decimals_any_amount_needs_up_to_nine() -> None:
    """A larger amount with more digits than the smallest sets the precision; the store's
    nano-dollar is the finest there is."""
    assert usd_column([0.00002, 0.0000132]) == ["$0.0000200", "$0.0000132"]
    assert usd_column([1234.5, 0.000000001]) == ["$1,234.500000000", "$0.000000001"]


def test_a_column_of_amounts_shown_in_four_decimals_keeps_four() -> None:
    assert usd_column([617.2839, 0.000249, 0]) == ["$617.2839", "$0.0002", "$0.0000"]
    assert usd_column([0, 0]) == ["$0.0000", "$0.0000"]
    assert usd_column([]) == []


def test_a_single_figure_keeps_its_own_rule() -> None:
    """Outside a column (the "Spent:" line), each amount shows as few decimals as it needs."""
    assert [usd(a) for a in (0.0002, 0.0000132, 0.00000004)] == [
        "$0.0002", "$0.0000132", "$0.00000004"]
    assert usd(-0.5) == "-$0.5000" and usd_column([-0.00001, 2]) == ["-$0.00001", "$2.00000"]
