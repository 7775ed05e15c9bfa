"""What a batch is asked to do, checked as OpenAI checks it: the create request (endpoint,
window, metadata and the mock's knobs in it) and the input file's lines.

A create request that is wrong is a 400 at once. A line that is not a request to the batch's
endpoint (not JSON, no ``custom_id`` or a repeated one, not ``POST``, another ``url``, no
``body``) fails the whole batch at validation, every such line listed with its number; a
line's ``body`` is not checked here: the endpoint answers it, in the error file if it refuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import orjson

from gateway.mock import fields
from gateway.mock.shapes import JSON, MockError
from gateway.proxy.endpoints import Endpoint

WINDOW = "24h"
LINES_MAX = 50_000
ERRORS_MAX = 1_000
ENDPOINTS = {f"/v1{e.value}": e for e in
             (Endpoint.CHAT, Endpoint.COMPLETIONS, Endpoint.EMBEDDINGS, Endpoint.RESPONSES)}
_METADATA = (16, 64, 512)  # pairs, key length, value length


class Line(NamedTuple):
    custom_id: str
    body: JSON


@dataclass(frozen=True, slots=True)
class Knobs:
    """What a batch's metadata asks of the mock (see ``gateway.mock.batches``)."""

    duration: float
    expire_after: int | None = None
    fail: bool = False
    flaky_gets: int = 0

    @classmethod
    def read(cls, metadata: JSON, default_s: float) -> Knobs:
        holder = {"metadata": metadata}
        fail = metadata.get("mock_fail", "false")
        if fail not in ("true", "false"):
            raise MockError(400, "metadata.mock_fail must be 'true' or 'false'",
                            param="metadata.mock_fail")
        expire = "mock_expire_after_lines" in metadata
        return cls(
            duration=fields.metadata_seconds(holder, "mock_batch_duration_s", default_s),
            expire_after=fields.metadata_count(holder, "mock_expire_after_lines") if expire
            else None,
            fail=fail == "true",
            flaky_gets=fields.metadata_count(holder, "mock_flaky_gets"),
        )


def endpoint(body: JSON) -> Endpoint:
    """The batch's endpoint, once ``endpoint`` and ``completion_window`` are checked."""
    for name in ("endpoint", "completion_window"):
        if body.get(name) is None:
            raise MockError(400, f"Missing required parameter: '{name}'.", param=name,
                            code="missing_required_parameter")
    path = body["endpoint"]
    if path not in ENDPOINTS:
        raise MockError(400, f"Invalid value for 'endpoint': {path!r}; this mock batches "
                        f"{', '.join(ENDPOINTS)}.", param="endpoint")
    if body["completion_window"] != WINDOW:
        raise MockError(400, f"Invalid value for 'completion_window': "
                        f"{body['completion_window']!r}; supported: '{WINDOW}'.",
                        param="completion_window")
    return ENDPOINTS[path]


def metadata(body: JSON) -> JSON:
    """At most 16 pairs, keys of at most 64 characters, string values of at most 512."""
    given = body.get("metadata")
    if given is None:
        return {}
    pairs, key_len, value_len = _METADATA
    fine = isinstance(given, dict) and len(given) <= pairs and all(
        len(key) <= key_len and isinstance(value, str) and len(value) <= value_len
        for key, value in given.items()
    )
    if not fine:
        raise MockError(400, f"Invalid 'metadata': at most {pairs} pairs, keys of at most "
                        f"{key_len} characters, string values of at most {value_len}.",
                        param="metadata")
    return dict(given)


def refuse_unbatchable(body: JSON) -> None:
    """What a request may do on its own but not in a batch: stream, run in the background."""
    for name in ("stream", "background"):
        if body.get(name) is True:
            raise MockError(400, f"'{name}' is not supported in the Batch API.", param=name)


def parse_lines(content: bytes, batch_endpoint: Endpoint) -> tuple[list[Line], list[JSON]]:
    """The requests of a batch file, and every problem found (at most ``ERRORS_MAX``), each
    ``{code, message, param, line}`` with the line's number from 1."""
    lines: list[Line] = []
    problems: list[JSON] = []
    seen: set[str] = set()
    url = f"/v1{batch_endpoint.value}"
    for number, raw in enumerate(content.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            lines.append(_line(raw, url, seen))
        except MockError as exc:
            problems.append({"code": exc.code, "message": exc.message, "param": exc.param,
                             "line": number})
    if not lines and not problems:
        problems.append({"code": "empty_file", "message": "The batch input file is empty.",
                         "param": None, "line": None})
    if len(lines) > LINES_MAX:
        problems.append({"code": "too_many_requests", "param": None, "line": None,
                         "message": f"The batch input file has {len(lines):,} requests; at "
                                    f"most {LINES_MAX:,} are allowed."})
    return lines, problems[:ERRORS_MAX]


def _line(raw: bytes, url: str, seen: set[str]) -> Line:
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError:
        item = None
    if not isinstance(item, dict):
        raise MockError(400, "This line is not parseable as valid JSON.",
                        code="invalid_json_line")
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise MockError(400, "Missing required parameter: 'custom_id'.", param="custom_id",
                        code="missing_required_parameter")
    if custom_id in seen:
        raise MockError(400, "The custom_id for this request is a duplicate of another "
                        "request. The custom_id parameter must be unique for each request in a "
                        "batch.", param="custom_id", code="duplicate_custom_id")
    seen.add(custom_id)
    if item.get("method") != "POST":
        raise MockError(400, "Only the POST method is supported.", param="method",
                        code="invalid_method")
    if item.get("url") != url:
        raise MockError(400, "The URL provided for this request does not match the batch "
                        "endpoint.", param="url", code="invalid_url")
    body = item.get("body")
    if not isinstance(body, dict):
        raise MockError(400, "Missing required parameter: 'body'.", param="body",
                        code="missing_required_parameter")
    return Line(custom_id, body)


def model(lines: list[Line]) -> str | None:
    """The batch's model: its first line's."""
    found = lines[0].body.get("model") if lines else None
    return found if isinstance(found, str) else None


def token_limit(lines: list[Line]) -> JSON:
    """The error of a batch refused for the tokens its organisation has queued already."""
    return {"code": "token_limit_exceeded", "param": None, "line": None,
            "message": f"Enqueued token limit reached for {model(lines) or 'the model'} in "
                       "organization org-mock. Please try again once some in_progress batches "
                       "have been completed."}
