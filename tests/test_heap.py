"""The start-up heap frozen for ``gateway serve``, and again after a reload; never elsewhere."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from gateway import heap


@pytest.fixture
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_settle_collects_the_garbage_then_freezes_what_lives(thawed: None) -> None:
    class Cycle:
        def __init__(self) -> None:
            self.me = self

    kept = [Cycle() for _ in range(100)]
    garbage = weakref.ref(Cycle())  # freed by the cyclic collector only
    heap.settle()
    assert garbage() is None
    assert gc.get_freeze_count() >= len(kept)
    assert not any(type(o) is Cycle for o in gc.get_objects())  # a collection walks none


def test_resettle_acts_only_where_settle_froze(thawed: None) -> None:
    heap.resettle()
    assert gc.get_freeze_count() == 0  # a test's process, a library user's: left alone
    heap.settle()
    frozen = gc.get_freeze_count()
    heap.resettle()
    assert gc.get_freeze_count() > 0 and abs(gc.get_freeze_count() - frozen) < frozen
