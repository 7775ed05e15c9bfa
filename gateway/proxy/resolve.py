"""Stage 2: what is asked for. Parse the body once, check the fields the gateway relies on,
then resolve the model to the tenant's allow-list, an upstream and a price."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.cost.pricing import Price
from gateway.errors import Forbidden, InvalidRequest, ModelNotPriced, NotFound
from gateway.proxy.auth import Principal
from gateway.proxy.endpoints import Endpoint
from gateway.settings.checks import unprintable
from gateway.settings.models import ModelAccess
from gateway.settings.schema import UpstreamSettings

MAX_DEPTH = 255
"""The deepest nesting accepted: what orjson can write back (the gateway re-writes a body to ask
for streamed usage or to clamp max_tokens), and what the estimate stage walks safely."""

_REQUIRED: dict[Endpoint, tuple[str, tuple[type, ...]]] = {
    Endpoint.CHAT: ("messages", (list,)),
    Endpoint.COMPLETIONS: ("prompt", (str, list)),
    Endpoint.EMBEDDINGS: ("input", (str, list)),
    Endpoint.RESPONSES: ("input", (str, list)),
}

IDENTIFIERS = ("model", "service_tier", "previous_response_id")
"""The names the gateway reads from a body (to price, route, bound and own a request): a
control character in one is refused, never priced by a glob, logged or forwarded."""


@dataclass(frozen=True, slots=True)
class Target:
    endpoint: Endpoint
    model: str
    body: dict[str, Any]
    raw: bytes
    stream: bool
    upstream: UpstreamSettings
    price: Price


class ModelRouter(ModelAccess):
    """Allow-lists, upstream globs and prices, compiled once per configuration load; a
    request's model routed, or refused saying why."""

    def route(self, principal: Principal, model: str) -> tuple[UpstreamSettings, Price]:
        if not self.allowed(principal.tenant, model):
            raise Forbidden(
                f"The model '{model}' is not allowed for tenant '{principal.tenant}'.",
                param="model",
            )
        price = self.prices.lookup(model)
        if price is None:
            raise ModelNotPriced(
                f"The model '{model}' has no price configured, so its cost cannot be budgeted. "
                "Add it under 'pricing:' in the gateway configuration.",
                param="model",
            )
        upstream = self.upstream_for(model)
        if upstream is not None:
            return upstream, price
        raise NotFound(
            f"The model '{model}' does not exist or no upstream serves it.",
            param="model",
            code="model_not_found",
        )


def parse_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise InvalidRequest(
            f"The request body must be a JSON object, not a JSON {_json_type(body)}."
        )
    _check_unique_keys(raw, _written(body))
    return body


def body_bytes(body: Mapping[str, Any]) -> bytes:
    """``body`` as JSON, in a bytes object of its own size: orjson's answer keeps the room it
    grew into (~8 KB for a 1 KB body), and a body sent upstream is held for the whole exchange,
    a stream's too (a thousand open streams held 8 MB of such room)."""
    return bytes(memoryview(orjson.dumps(body)))


def _written(body: dict[str, Any]) -> bytes:
    """The body as orjson writes it back. orjson reads any depth but writes at most
    ``MAX_DEPTH``: a body it cannot write back is refused here, before any stage holds a
    reservation for it."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        raise InvalidRequest(
            f"The request body is nested too deeply (more than {MAX_DEPTH} levels)."
        ) from None


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _check_unique_keys(raw: bytes, written: bytes) -> None:
    """A key twice in one object (at any depth) is refused: orjson keeps the last value, while
    the raw bytes go upstream, where another parser may keep the first.

    orjson cannot tell, but what it writes back has each key once. A body that is byte for
    byte what orjson writes (most SDKs' compact JSON) has no duplicate. Otherwise: every key is
    followed by one colon, in the body and in what orjson writes, and colons inside strings
    are written as they are; a dropped duplicate takes its colon (and its value's) with it. So
    with as many colons on both sides and none escaped (``\\u003a``), there is no duplicate.
    Only then (a duplicate, or an escaped colon) does the json module read the body again,
    handing over each object's pairs before they become a dict, to find the key."""
    if written == raw or (raw.count(b":") == written.count(b":") and b"\\u003" not in raw):
        return
    try:
        json.loads(raw, object_pairs_hook=_unique_pairs, parse_int=_ignored,
                   parse_float=_ignored, parse_constant=_ignored)
    except _DuplicateKey as dup:
        key = dup.key
        named = f"'{key}'" if len(key) <= 64 and not unprintable(key) else "a key"
        raise InvalidRequest(
            f"The request body has {named} more than once in one object; JSON parsers "
            "disagree on which value counts, so send each key once."
        ) from None
    except ValueError:  # what orjson read, the json module should too: refused all the same
        raise InvalidRequest("The request body is not valid JSON.") from None


def _unique_pairs(pairs: list[tuple[str, Any]]) -> None:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _DuplicateKey(next(key for i, key in enumerate(keys) if key in keys[:i]))


def _ignored(_: str) -> None:
    return None


def resolve(
    principal: Principal, endpoint: Endpoint, raw: bytes, router: ModelRouter
) -> Target:
    return resolve_parsed(principal, endpoint, parse_body(raw), raw, router)


def resolve_parsed(principal: Principal, endpoint: Endpoint, body: dict[str, Any], raw: bytes,
                   router: ModelRouter) -> Target:
    """``resolve`` for a body parsed already (a line of a batch file)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest(
            "you must provide a model parameter (a non-empty string).", param="model"
        )
    _check_identifiers(body)
    _check_types(endpoint, body)
    upstream, price = router.route(principal, model)
    return Target(endpoint, model, body, raw, body.get("stream") is True, upstream, price)


def _check_identifiers(body: Mapping[str, Any]) -> None:
    for name in IDENTIFIERS:
        value = body.get(name)
        problem = unprintable(value) if isinstance(value, str) else None
        if problem is not None:
            raise InvalidRequest(f"Invalid '{name}': {problem}.", param=name,
                                 code="invalid_value")


# A Responses request may take all its input from a stored prompt or an earlier turn.
_INPUT_FROM = ("prompt", "previous_response_id", "conversation")


def _check_types(endpoint: Endpoint, body: Mapping[str, Any]) -> None:
    field, kinds = _REQUIRED[endpoint]
    if field not in body:
        if endpoint is Endpoint.RESPONSES and any(body.get(k) for k in _INPUT_FROM):
            return _check_options(endpoint, body)
        raise InvalidRequest(f"Missing required parameter: '{field}'.", param=field)
    if not isinstance(body[field], kinds):
        what = "an array" if kinds == (list,) else "a string or array"
        raise _wrong_type(field, body[field], what)
    _check_options(endpoint, body)


def _check_options(endpoint: Endpoint, body: Mapping[str, Any]) -> None:
    _optional(body, "stream", bool, "a boolean")
    _optional(body, "stream_options", dict, "an object")
    _optional(body, "service_tier", str, "a string")
    for name in (*endpoint.output_fields, "n", "best_of", "max_tool_calls"):
        _optional(body, name, int, "an integer")
        value = body.get(name)
        if isinstance(value, int) and (value < 1 or isinstance(value, bool)):
            raise InvalidRequest(f"Invalid '{name}': must be an integer >= 1.", param=name)
    if endpoint is Endpoint.CHAT and not all(isinstance(m, dict) for m in body["messages"]):
        raise InvalidRequest(
            "Invalid 'messages': every message must be an object.", param="messages"
        )


def _optional(body: Mapping[str, Any], field: str, kind: type, what: str) -> None:
    value = body.get(field)
    if value is None:
        return
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _wrong_type(field, value, what)


def _wrong_type(field: str, value: object, what: str) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid type for '{field}': expected {what}, but got {_json_type(value)}.", param=field
    )


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
             float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)
