"""GET /v1/models and GET /v1/models/{id}: the models a tenant may really use.

A model is shown when the tenant may use it: allowed, priced and routed (``Runtime.may_use``).
Its name comes from the configuration (``Runtime.models_for``) or, where globs leave the set
open, from the upstream it routes to: that upstream's own ``GET /models``, asked on the app's
one session, kept per upstream for a while and bounded in ids and bytes. An upstream that
fails or answers garbage is logged and left out: the configuration's names are still answered,
never a 5xx.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import aiohttp
import orjson

from gateway.clock import Clock
from gateway.cost.pricing import is_glob
from gateway.errors import NotFound
from gateway.runtime import Runtime
from gateway.settings.schema import UpstreamSettings

log = logging.getLogger(__name__)

OWNER = "gateway"  # owned_by of a model no upstream described
_MAX_ID_CHARS = 256  # a longer "model id" from an upstream is skipped
_READ_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class ModelEntry:
    id: str
    created: int
    owned_by: str

    def as_json(self) -> dict[str, object]:
        return {"id": self.id, "object": "model", "created": self.created,
                "owned_by": self.owned_by}


@dataclass(frozen=True, slots=True)
class ListingLimits:
    """How long an upstream's list is kept and how much of it is read."""

    ttl_s: float = 300.0  # a good answer is used this long
    retry_s: float = 30.0  # a failed one is not asked again before this
    timeout_s: float = 10.0  # the whole exchange (and never more than the upstream's timeout_s)
    max_ids: int = 10_000  # the first ones are kept
    max_bytes: int = 8 * 1024**2  # past this the answer is refused, not parsed


class ListingRefused(Exception):
    """An upstream's list cannot be used; the message says why (and never holds a secret)."""


@dataclass(frozen=True, slots=True)
class _Listing:
    entries: Mapping[str, ModelEntry]
    expires: float


class ModelCatalog:
    """Answers both routes; owns the per-upstream cache of listed models."""

    def __init__(
        self, session: aiohttp.ClientSession, clock: Clock, limits: ListingLimits | None = None
    ) -> None:
        self._session = session
        self._clock = clock
        self._limits = limits or ListingLimits()
        self._listings: dict[UpstreamSettings, _Listing] = {}
        self._locks: dict[UpstreamSettings, asyncio.Lock] = {}

    async def list(self, runtime: Runtime, tenant: str) -> list[ModelEntry]:
        upstreams = runtime.settings.upstreams
        self._forget_all_but(upstreams)
        sources = self._sources(runtime, tenant)
        found: dict[str, ModelEntry] = {}
        listings = await asyncio.gather(*(self._listing(u) for u in sources))
        for upstream, listing in zip(sources, listings, strict=True):
            for name, entry in listing.items():
                if runtime.router.upstream_for(name) == upstream and runtime.may_use(tenant, name):
                    found.setdefault(name, entry)
        created = int(self._clock.now())
        for name in runtime.models_for(tenant):
            found.setdefault(name, ModelEntry(name, created, OWNER))
        return sorted(found.values(), key=lambda entry: entry.id)

    async def get(self, runtime: Runtime, tenant: str, model: str) -> ModelEntry:
        """Any model the tenant may use, described by its upstream's list when that is at hand
        (and needed: the same sources as ``list``)."""
        if not runtime.may_use(tenant, model):
            raise NotFound(
                f"The model '{model}' does not exist or you do not have access to it.",
                code="model_not_found",
            )
        self._forget_all_but(runtime.settings.upstreams)
        upstream = runtime.router.upstream_for(model)
        if upstream is not None and upstream in self._sources(runtime, tenant):
            entry = (await self._listing(upstream)).get(model)
            if entry is not None:
                return entry
        return ModelEntry(model, int(self._clock.now()), OWNER)

    def _sources(self, runtime: Runtime, tenant: str) -> tuple[UpstreamSettings, ...]:
        """The upstreams whose lists can add a name the configuration does not spell out:
        none when the tenant's allow-list is exact, else every upstream routing by a glob."""
        allow = runtime.settings.tenants[tenant].models
        if allow is not None and not any(is_glob(p) for p in allow):
            return ()
        return tuple(u for u in runtime.settings.upstreams if any(is_glob(p) for p in u.models))

    def _forget_all_but(self, upstreams: Iterable[UpstreamSettings]) -> None:
        """Drop what was kept for an upstream a reload removed or changed."""
        current = set(upstreams)
        for gone in self._listings.keys() - current:
            del self._listings[gone]
        for gone in self._locks.keys() - current:
            del self._locks[gone]

    async def _listing(self, upstream: UpstreamSettings) -> Mapping[str, ModelEntry]:
        listing = self._fresh(upstream)
        if listing is None:
            async with self._locks.setdefault(upstream, asyncio.Lock()):
                listing = self._fresh(upstream) or await self._refresh(upstream)
        return listing.entries

    def _fresh(self, upstream: UpstreamSettings) -> _Listing | None:
        listing = self._listings.get(upstream)
        return listing if listing is not None and self._clock.now() < listing.expires else None

    async def _refresh(self, upstream: UpstreamSettings) -> _Listing:
        limits = self._limits
        try:
            raw = await self._download(upstream)
            entries = parse_listing(raw, limits.max_ids, upstream.name, self._clock.now())
            ttl = limits.ttl_s
        except ListingRefused as exc:
            log.warning("upstream '%s': its model list is not used (%s); GET /v1/models shows "
                        "the configured names only, asking again in %g s",
                        upstream.name, exc, limits.retry_s)
            entries, ttl = {}, limits.retry_s
        listing = self._listings[upstream] = _Listing(entries, self._clock.now() + ttl)
        return listing

    async def _download(self, upstream: UpstreamSettings) -> bytes:
        headers = {"Accept": "application/json"}
        if upstream.api_key:
            headers["Authorization"] = f"Bearer {upstream.api_key}"
        timeout_s = min(upstream.timeout_s, self._limits.timeout_s)
        try:
            async with self._session.get(
                upstream.base_url + "/models", headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                if resp.status != 200:
                    raise ListingRefused(f"it answered HTTP {resp.status}")
                return await _read_at_most(resp, self._limits.max_bytes)
        except TimeoutError:
            raise ListingRefused(f"no answer within {timeout_s:g} s") from None
        except aiohttp.ClientError as exc:
            raise ListingRefused(f"it could not be reached: {type(exc).__name__}") from None


async def _read_at_most(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The body (decompressed), refused as soon as it passes ``max_bytes``."""
    if resp.content_length is not None and resp.content_length > max_bytes:
        resp.close()
        raise ListingRefused(f"it announced {resp.content_length} bytes, over {max_bytes}")
    body = bytearray()
    async for chunk in resp.content.iter_chunked(_READ_CHUNK):
        body += chunk
        if len(body) > max_bytes:
            resp.close()  # the rest is not read: the connection goes, not back to the pool
            raise ListingRefused(f"it sent more than {max_bytes} bytes")
    return bytes(body)


def parse_listing(
    raw: bytes, max_ids: int, upstream: str, now: float
) -> dict[str, ModelEntry]:
    """OpenAI's ``{"data": [{"id", "created", "owned_by"}, ...]}``: the first ``max_ids``
    well-formed entries (``created`` is ``now`` where it is missing); others are skipped, a
    body of another shape is refused."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ListingRefused("its answer is not JSON") from None
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(data, list):
        raise ListingRefused("its answer has no 'data' list")
    entries: dict[str, ModelEntry] = {}
    for item in data:
        entry = _entry(item, int(now))
        if entry is None or entry.id in entries:
            continue
        if len(entries) == max_ids:
            log.warning("upstream '%s' lists more than %d models: the first %d are used",
                        upstream, max_ids, max_ids)
            break
        entries[entry.id] = entry
    return entries


def _entry(item: object, now: int) -> ModelEntry | None:
    if not isinstance(item, dict):
        return None
    name, created, owner = item.get("id"), item.get("created"), item.get("owned_by")
    if not isinstance(name, str) or not 0 < len(name) <= _MAX_ID_CHARS:
        return None
    if not isinstance(created, int) or isinstance(created, bool):
        created = now
    if not isinstance(owner, str) or not 0 < len(owner) <= _MAX_ID_CHARS:
        owner = OWNER
    return ModelEntry(name, created, owner)
