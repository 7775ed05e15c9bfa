"""Stores by URL scheme, so ``store:`` in the YAML picks the backend."""

from __future__ import annotations

from urllib.parse import urlsplit

from gateway.store.base import Store
from gateway.store.memory import MemoryStore


def open_store(url: str) -> Store:
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryStore()
    if scheme in ("redis", "rediss", "redis+cluster"):
        from gateway.store.redis import RedisStore

        return RedisStore.from_url(url)
    raise ValueError(f"store {url!r}: the {scheme!r} backend is not available in this build")
