"""What the mock served and what usage it reported, for tests to compare with the gateway."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class MockStats:
    """Counts per route (the path below ``/v1``) and token totals.

    ``requests``: answered normally; ``faulted``: a fault was injected (any kind);
    ``errors``: refused (bad JSON, missing model, bad key). Token totals count only usage the
    mock actually sent: not a stream that was cut before its usage frame, not ``no_usage``,
    not a stream whose client did not ask for usage. ``produced_output_tokens`` counts output
    tokens whose text was written, reported or not; ``unreported_input_tokens`` the input of
    answers that went out without usage (``no_usage``, a cut stream, a stream that did not ask
    for it), which a gateway must count itself: reported plus unreported input is what it
    should charge, with ``produced_output_tokens`` as output.
    """

    requests: Counter[str] = field(default_factory=Counter)
    faulted: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    produced_output_tokens: int = 0
    unreported_input_tokens: int = 0
    last_request: dict[str, Any] | None = None

    def reported(self, input_tokens: int, output_tokens: int, cached_tokens: int) -> None:
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.cached_tokens += cached_tokens

    def reset(self) -> None:
        self.requests.clear()
        self.faulted.clear()
        self.errors.clear()
        self.input_tokens = self.output_tokens = self.cached_tokens = 0
        self.produced_output_tokens = self.unreported_input_tokens = 0
        self.last_request = None

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "faulted": dict(self.faulted),
            "errors": dict(self.errors),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "produced_output_tokens": self.produced_output_tokens,
            "unreported_input_tokens": self.unreported_input_tokens,
            "last_request": self.last_request,
        }
