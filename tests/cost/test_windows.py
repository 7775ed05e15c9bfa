"""Window arithmetic: a rolling bucket counts until every request in it has left the exact
window, never earlier, and at most one bucket later; the calendar month is one bucket."""

from __future__ import annotations

import calendar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cost.windows import DAY, HOUR, MONTH, Window

MIDNIGHT = float(calendar.timegm((2026, 3, 2, 0, 0, 0)))  # a Monday, UTC
ROLLING = st.sampled_from([HOUR, DAY])
# 2001 to 2096: the gateway's own timestamps, where float seconds keep sub-millisecond steps
TIMES = st.floats(min_value=1e9, max_value=4e9, allow_nan=False, allow_infinity=False)
AGES = st.floats(min_value=0, max_value=3 * 86_400, allow_nan=False, allow_infinity=False)


@pytest.mark.parametrize(("window", "spent", "later"), [
    (DAY, MIDNIGHT + 14 * 60 + 59, MIDNIGHT + 86_400),  # 00:14:59, then 24:00:00
    (HOUR, MIDNIGHT + 10 * 3600 + 59, MIDNIGHT + 11 * 3600),  # 10:00:59, then 11:00:00
])
def test_use_is_still_counted_a_bucket_after_the_old_rule_let_it_go(
    window: Window, spent: float, later: float
) -> None:
    bucket = window.bucket(spent)
    assert window.oldest(later) <= bucket, "still inside the exact window: it must count"
    assert window.leaves_at(bucket) == spent + 1 + window.length_s  # a second after it left
    assert window.oldest(window.leaves_at(bucket)) == bucket + 1


def test_buckets_keep_count_buckets_behind_the_current_one() -> None:
    now = MIDNIGHT + 3 * 3600 + 7.5
    assert HOUR.buckets(now) == (HOUR.bucket(now), HOUR.bucket(now) - 60)
    assert DAY.buckets(now) == (DAY.bucket(now), DAY.bucket(now) - 96)
    assert HOUR.leaves_at(HOUR.bucket(now)) == MIDNIGHT + 3 * 3600 + 60 + 3600
    assert DAY.leaves_at(DAY.bucket(now)) == MIDNIGHT + 3 * 3600 + 900 + 86_400


def test_the_calendar_month_is_unchanged() -> None:
    now = float(calendar.timegm((2025, 12, 31, 23, 59, 59)))
    assert MONTH.buckets(now) == (MONTH.bucket(now), MONTH.bucket(now))
    assert MONTH.leaves_at(MONTH.bucket(now)) == float(calendar.timegm((2026, 1, 1, 0, 0, 0)))
    assert MONTH.oldest(now + 1) == MONTH.bucket(now) + 1


@settings(max_examples=400, deadline=None, derandomize=True)
@given(ROLLING, TIMES, AGES)
def test_a_request_counts_while_it_is_inside_the_exact_window(
    window: Window, spent: float, age: float
) -> None:
    now = spent + age
    bucket = window.bucket(spent)
    if now - window.length_s < spent:
        assert window.oldest(now) <= bucket
    assert spent + window.length_s <= window.leaves_at(bucket) <= spent + window.length_s + (
        window.width), "frees no earlier than the request leaves, at most one bucket later"


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.sampled_from([HOUR, DAY, MONTH]), TIMES, st.integers(min_value=0, max_value=200))
def test_oldest_and_leaves_at_tell_the_same_rule(window: Window, now: float, back: int) -> None:
    bucket = window.bucket(now) - back
    assert (bucket >= window.oldest(now)) == (now < window.leaves_at(bucket))
