"""Tracker backends by name, so a deployment picks one in configuration, not in code."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gateway.cost.tracker import Tracker

Factory = Callable[[Mapping[str, Any]], Tracker]


class Registry:
    def __init__(self) -> None:
        self._factories: dict[str, Factory] = {}

    def register(self, name: str, factory: Factory) -> None:
        if name in self._factories:
            raise ValueError(f"tracker backend {name!r} is already registered")
        self._factories[name] = factory

    def new(self, name: str, config: Mapping[str, Any] | None = None) -> Tracker:
        try:
            factory = self._factories[name]
        except KeyError:
            known = ", ".join(sorted(self._factories)) or "none"
            raise KeyError(f"unknown tracker backend {name!r} (registered: {known})") from None
        return factory(config or {})

    def names(self) -> list[str]:
        return sorted(self._factories)


def _memory(config: Mapping[str, Any]) -> Tracker:
    from gateway.cost.tracker import InMemoryTracker

    return InMemoryTracker(max_entries=int(config.get("max_entries", 100_000)))


def _redis(config: Mapping[str, Any]) -> Tracker:
    """The gateway's Redis store as a tracker. ``max_entries`` caps its raw log only: its
    hourly totals are kept whole, so whole hours count every usage and a range's partial
    hours count what the log holds (``InMemoryTracker`` keeps only the log)."""
    from gateway.store.redis import RedisStore  # on use: the library needs no Redis otherwise

    url = str(config.get("url", "redis://127.0.0.1:6379/0"))
    return RedisStore.from_url(url, max_entries=int(config.get("max_entries", 100_000)))


DEFAULT = Registry()
DEFAULT.register("memory", _memory)
DEFAULT.register("inmemory", _memory)  # the seed's name for it
DEFAULT.register("redis", _redis)

register = DEFAULT.register
new = DEFAULT.new
names = DEFAULT.names
