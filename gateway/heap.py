"""The garbage collector kept off the request path.

What the gateway builds at start-up (price data, tokenizers, the configuration, the modules)
is some hundred thousand long-lived objects that CPython's cyclic collector would walk at every
full collection: ~35-60 ms, every few thousand requests, a pause that every request in flight
waits out (it was the gateway's p99). Frozen once built, they are never walked again; the
objects requests make are collected as before.
"""

from __future__ import annotations

import gc


def settle() -> None:
    """Collect what start-up left as garbage, then freeze the rest (``gateway serve``)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def resettle() -> None:
    """After a reload: the old configuration's objects are garbage now, the new one's are
    long-lived. Only where ``settle`` froze the heap (never in a test's process)."""
    if gc.get_freeze_count():
        settle()
