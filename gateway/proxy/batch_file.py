"""A batch input file, checked and bounded line by line as it passes, before it is uploaded.

Every line is what the single request would be: its endpoint, model (allowed and priced) and
body are checked by the same stages, and bounded by the same estimate. A line that leaves a
bound out gets the one the gateway reserved for, written into the file sent upstream (as for a
single request), so the batch can never bill more than the sum of its lines' bounds, priced at
batch rates. A bad line is a 400 naming its number; nothing is uploaded then.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.cost.pricing import Price
from gateway.errors import GatewayError, InvalidRequest
from gateway.proxy import estimate as estimate_stage
from gateway.proxy.auth import Principal
from gateway.proxy.endpoints import Endpoint
from gateway.proxy.forward import bound_changes
from gateway.proxy.resolve import Target, parse_body, resolve_parsed
from gateway.runtime import Runtime
from gateway.settings.schema import UpstreamSettings

BATCH_TIER = "batch"
MAX_LINES = 50_000  # OpenAI's limit on requests per batch
_URLS = {f"/v1{e.value}": e for e in Endpoint}

Prior = Callable[[Principal, Mapping[str, Any]], Awaitable[int | None]]
Offload = Callable[..., Awaitable[int]]


async def jsonl_lines(chunks: AsyncIterator[bytes], line_max: int,
                      too_long: Callable[[], Exception]) -> AsyncIterator[bytes]:
    """The lines of a JSONL stream as they arrive (empty ones too, so they can be numbered),
    each at most ``line_max`` bytes (else ``too_long()`` is raised): a file is never held
    whole to be split."""
    rest = b""
    async for chunk in chunks:
        rest += chunk
        *lines, rest = rest.split(b"\n")
        for line in lines:
            yield line
        if len(rest) > line_max:
            raise too_long()
    if rest.strip():
        yield rest


@dataclass(frozen=True, slots=True)
class FileBound:
    """What a batch of this file may bill at most, and what it runs: kept with the file."""

    model: str
    endpoint: str  # the path below /v1 every line goes to
    lines: int
    input_tokens: int
    output_tokens: int
    cost_nano: int  # each line's bound at batch prices, summed

    def dumps(self) -> str:
        return orjson.dumps(dataclasses.asdict(self)).decode()

    @classmethod
    def loads(cls, raw: str) -> FileBound:
        return cls(**orjson.loads(raw))


@dataclass(slots=True)
class FilePlan:
    """A file being read: its bound so far and the lines to upload (bounds written in)."""

    upstream: UpstreamSettings | None = None
    price: Price | None = None
    model: str = ""
    endpoint: Endpoint | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_nano: int = 0
    out: list[bytes] = dataclasses.field(default_factory=list)
    ids: set[str] = dataclasses.field(default_factory=set)

    def bound(self) -> FileBound:
        if self.endpoint is None:
            raise InvalidRequest("The file has no requests: a batch file holds one JSON "
                                 "request per line.", param="file")
        return FileBound(self.model, self.endpoint.value, len(self.out), self.input_tokens,
                         self.output_tokens, self.cost_nano)


async def plan(lines: AsyncIterator[bytes], principal: Principal, runtime: Runtime,
               prior: Prior, offload: Offload) -> FilePlan:
    """Every line checked and bounded; the first bad one is a 400 naming its number."""
    plan = FilePlan()
    number = 0
    async for raw in lines:
        number += 1
        if not raw.strip():
            continue
        if len(plan.out) >= MAX_LINES:
            raise InvalidRequest(f"The file has more than {MAX_LINES} requests, the most one "
                                 "batch may hold.", param="file")
        try:
            await _line(plan, raw, principal, runtime, prior, offload)
        except GatewayError as exc:
            exc.message = f"Line {number} of the file: {exc.message}"
            raise
    plan.bound()
    return plan


async def _line(plan: FilePlan, raw: bytes, principal: Principal, runtime: Runtime,
                prior: Prior, offload: Offload) -> None:
    line = parse_body(raw)
    custom_id, url, body = line.get("custom_id"), line.get("url"), line.get("body")
    if not isinstance(custom_id, str) or not custom_id:
        raise InvalidRequest("'custom_id' must be a non-empty string.", param="custom_id")
    if custom_id in plan.ids:
        raise InvalidRequest(f"custom_id '{custom_id[:64]}' is used by an earlier line; "
                             "each request of a batch needs its own.", param="custom_id")
    if line.get("method") != "POST":
        raise InvalidRequest("'method' must be \"POST\".", param="method")
    endpoint = _URLS.get(url) if isinstance(url, str) else None
    if endpoint is None:
        raise InvalidRequest(f"'url' must be one of {', '.join(_URLS)}.", param="url")
    if not isinstance(body, dict):
        raise InvalidRequest("'body' must be a JSON object: the request.", param="body")
    for name in ("stream", "background"):
        if body.get(name):
            raise InvalidRequest(f"'{name}' is not available in a batch.", param=name)
    target = resolve_parsed(principal, endpoint, body, b"", runtime.router)
    _same_as_before(plan, target)
    estimate = await estimate_stage.estimate(
        endpoint, body, target.price, runtime.defaults, prior=await prior(principal, body),
        offload=offload)
    bounds = dataclasses.replace(estimate.bounds, tiers=(BATCH_TIER,), set_tier=None)
    plan.input_tokens += estimate.input_tokens
    plan.output_tokens += estimate.output_tokens
    plan.cost_nano += target.price.bound_nano(estimate.input_tokens, estimate.output_tokens,
                                              estimate.calls, bounds.tiers)
    changes = bound_changes(endpoint, body, bounds)
    if changes:
        line["body"] = {**body, **changes}
    plan.out.append(orjson.dumps(line) + b"\n")
    plan.ids.add(custom_id)


def _same_as_before(plan: FilePlan, target: Target) -> None:
    """One endpoint and one model per file, as OpenAI requires of a batch."""
    if plan.endpoint is None:
        plan.endpoint, plan.model = target.endpoint, target.model
        plan.upstream, plan.price = target.upstream, target.price
        return
    if target.endpoint is not plan.endpoint:
        raise InvalidRequest(f"every request of a batch goes to one endpoint; earlier lines "
                             f"go to /v1{plan.endpoint.value}.", param="url")
    if target.model != plan.model:
        raise InvalidRequest(f"every request of a batch uses one model; earlier lines use "
                             f"'{plan.model}'.", param="model")
