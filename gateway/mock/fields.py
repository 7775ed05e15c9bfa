"""Request body fields the mock reads, checked the way OpenAI checks them (a 400 otherwise)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from gateway.mock.shapes import JSON, MockError
from gateway.proxy.endpoints import Endpoint

TokenCounter = Callable[[str, Mapping[str, Any]], int]
"""``tokens(path, body)``: a request's input tokens (path as in ``Endpoint``)."""


def max_output(endpoint: Endpoint, body: JSON) -> int | None:
    for name in endpoint.output_fields:
        if body.get(name) is not None:
            return int_field(body, name, 0, low=1)
    return None


def int_field(body: JSON, name: str, default: int, *, low: int, high: int | None = None) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise MockError(400, f"Invalid '{name}': expected an integer >= {low}.", param=name)
    if high is not None and value > high:
        raise MockError(400, f"Invalid '{name}': expected an integer <= {high}.", param=name)
    return value


def include_usage(body: JSON) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def metadata_count(body: JSON, name: str) -> int:
    """``metadata.<name>``: a non-negative integer, or a string of digits (metadata values are
    strings for OpenAI); 0 when absent."""
    value = _metadata(body).get(name)
    if value is None:
        return 0
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise MockError(
        400, f"metadata.{name} must be a non-negative integer", param=f"metadata.{name}"
    )


def metadata_seconds(body: JSON, name: str, default: float) -> float:
    """``metadata.<name>``: a finite non-negative number of seconds, or a string of one."""
    value = _metadata(body).get(name)
    if value is None:
        return default
    try:
        seconds = float(value) if isinstance(value, (str, int, float)) else math.nan
    except ValueError:
        seconds = math.nan
    if isinstance(value, bool) or not 0 <= seconds < math.inf:
        raise MockError(
            400, f"metadata.{name} must be a non-negative number of seconds",
            param=f"metadata.{name}",
        )
    return seconds


def _metadata(body: JSON) -> JSON:
    metadata = body.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def input_count(body: JSON) -> int:
    """How many vectors an embeddings ``input`` asks for."""
    value = body.get("input")
    if isinstance(value, str):
        return 1
    if isinstance(value, list) and value:
        return 1 if all(isinstance(item, int) for item in value) else len(value)
    raise MockError(400, "'input' must be a non-empty string or array", param="input")


def base64_wanted(body: JSON) -> bool:
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise MockError(400, "encoding_format must be 'float' or 'base64'", param="encoding_format")
    return encoding == "base64"
