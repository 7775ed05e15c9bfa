"""Property tests: usage extraction reads both shapes exactly and survives any JSON value."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.proxy.usage import Reported, from_body, from_usage

BOUNDED = settings(max_examples=200, deadline=None, derandomize=True)

COUNT = st.integers(min_value=0, max_value=2**53)
FIELDS = ["prompt_tokens", "completion_tokens", "input_tokens", "output_tokens", "total_tokens",
          "prompt_tokens_details", "input_tokens_details", "output_tokens_details",
          "completion_tokens_details", "cached_tokens", "reasoning_tokens", "usage"]
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
           | st.text(max_size=8))
# Any JSON value, with the field names that matter as likely keys so the walk goes deep.
JSON: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), children, max_size=5),
    max_leaves=20,
)


@st.composite
def usage_objects(draw: st.DrawFn) -> tuple[dict[str, Any], Reported]:
    """A well-formed usage object of either shape and what it must read as."""
    inp, out = draw(COUNT), draw(COUNT)
    cached = draw(st.integers(min_value=0, max_value=inp))
    reasoning = draw(st.integers(min_value=0, max_value=out))
    if draw(st.booleans()):
        usage: dict[str, Any] = {"prompt_tokens": inp, "completion_tokens": out,
                                 "total_tokens": inp + out}
        details, out_details = "prompt_tokens_details", "completion_tokens_details"
    else:
        usage = {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}
        details, out_details = "input_tokens_details", "output_tokens_details"
    if draw(st.booleans()):
        usage[details] = {"cached_tokens": cached, "audio_tokens": 0}
    else:
        cached = 0
    if draw(st.booleans()):
        usage[out_details] = {"reasoning_tokens": reasoning}
    return usage, Reported(inp, out, cached)


def _sane(reported: Reported | None) -> None:
    if reported is None:
        return
    assert isinstance(reported.input_tokens, int)
    assert isinstance(reported.output_tokens, int)
    assert isinstance(reported.cached_tokens, int)
    assert reported.input_tokens >= 0
    assert reported.output_tokens >= 0
    assert 0 <= reported.cached_tokens <= reported.input_tokens


@BOUNDED
@given(usage_objects())
def test_both_shapes_read_exactly(case: tuple[dict[str, Any], Reported]) -> None:
    usage, expected = case
    assert from_usage(usage) == expected
    assert from_body({"id": "x", "usage": usage}) == expected


@BOUNDED
@given(JSON)
def test_any_json_value_as_usage_never_raises(value: Any) -> None:
    _sane(from_usage(value))
    _sane(from_body({"usage": value}))


@BOUNDED
@given(st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), JSON, max_size=6))
def test_any_json_object_as_body_never_raises(body: dict[str, Any]) -> None:
    _sane(from_body(body))


@BOUNDED
@given(st.sampled_from(["prompt", "input"]), JSON, JSON, JSON)
def test_wrong_types_in_known_fields_read_as_zero_never_negative(
    shape: str, inp: Any, out: Any, cached: Any
) -> None:
    usage = {f"{shape}_tokens": inp,
             "completion_tokens" if shape == "prompt" else "output_tokens": out,
             f"{shape}_tokens_details": {"cached_tokens": cached}}
    reported = from_usage(usage)
    assert reported is not None  # the shape was recognised
    _sane(reported)
    if not (isinstance(inp, int) and not isinstance(inp, bool)):
        assert reported.input_tokens == 0
