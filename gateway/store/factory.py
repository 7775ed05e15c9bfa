"""Stores by URL scheme, so ``store:`` in the YAML picks the backend.

``sqlite://PATH`` is the durable embedded store (``gateway.store.sqlite``). The older
``memory://?persist=PATH`` is an alias for it, on ``PATH`` with the suffix ``.db`` (a JSON
state file left at PATH by an earlier release is carried into it on the first start). A
relative PATH is relative to the current directory of the ``gateway`` process when it starts;
``~`` is expanded. Plain ``memory://`` keeps nothing (the demo, tests).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs

from gateway.store import url as store_url
from gateway.store.base import Store
from gateway.store.end_user_days import END_USERS_REPORTED_MAX
from gateway.store.memory import COUNTERS_MAX, MemoryStore


def open_store(url: str, counters_max: int = COUNTERS_MAX,
               end_users_max: int = END_USERS_REPORTED_MAX) -> Store:
    """``counters_max``: the embedded store's bound on its budget counters; a Redis store is
    bounded by its own maxmemory and its keys' TTLs. ``end_users_max``: every store's bound on
    the end users with a spend row of their own, per tenant and day."""
    scheme = store_url.split(url).scheme
    if scheme == "memory":
        legacy = persist_path(url)  # a bad persist= fails here, before anything starts
        if legacy is None:
            return MemoryStore(counters_max=counters_max, end_users_max=end_users_max)
        from gateway.store.sqlite import SqliteStore

        return SqliteStore(f"sqlite://{alias_database(legacy)}", legacy=legacy,
                           counters_max=counters_max, end_users_max=end_users_max)
    if scheme == "sqlite":
        from gateway.store.sqlite import SqliteStore

        return SqliteStore(url, counters_max=counters_max, end_users_max=end_users_max)
    if scheme in ("redis", "rediss", "redis+cluster"):
        from gateway.store.redis import RedisStore

        return RedisStore.from_url(url, end_users_max=end_users_max)
    raise ValueError(f"store {url!r}: the {scheme!r} backend is not available in this build")


def alias_database(legacy: Path) -> Path:
    """The database ``memory://?persist=PATH`` is kept in: PATH with the suffix ``.db``."""
    return legacy if legacy.suffix == ".db" else legacy.with_suffix(".db")


def persist_path(url: str) -> Path | None:
    """The absolute state file of a ``memory://?persist=PATH`` store; None when not persisted."""
    parts = store_url.split(url)
    if parts.scheme != "memory":
        return None
    paths = parse_qs(parts.query, keep_blank_values=True).get("persist")
    if paths is None:
        return None
    if len(paths) != 1 or not paths[0]:
        raise ValueError(f"store {url!r}: persist= needs one file path")
    return Path(paths[0]).expanduser().absolute()
