"""Stores by URL scheme, so ``store:`` in the YAML picks the backend.

``memory://?persist=PATH`` is the embedded store whose state is kept in the file PATH across
restarts (``gateway.store.persist`` loads and saves it). A relative PATH is relative to the
current directory of the ``gateway`` process when it starts; ``~`` is expanded.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from gateway.store.base import Store
from gateway.store.memory import MemoryStore


def open_store(url: str) -> Store:
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        persist_path(url)  # a bad persist= fails here, before anything starts
        return MemoryStore()
    if scheme in ("redis", "rediss", "redis+cluster"):
        from gateway.store.redis import RedisStore

        return RedisStore.from_url(url)
    raise ValueError(f"store {url!r}: the {scheme!r} backend is not available in this build")


def persist_path(url: str) -> Path | None:
    """The absolute state file of a ``memory://?persist=PATH`` store; None when not persisted."""
    parts = urlsplit(url)
    if parts.scheme != "memory":
        return None
    paths = parse_qs(parts.query, keep_blank_values=True).get("persist")
    if paths is None:
        return None
    if len(paths) != 1 or not paths[0]:
        raise ValueError(f"store {url!r}: persist= needs one file path")
    return Path(paths[0]).expanduser().absolute()
