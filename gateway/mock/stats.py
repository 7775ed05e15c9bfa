"""What the mock served and what usage it reported, for tests to compare with the gateway."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from gateway.mock.shapes import Usage

LEDGER_LIMIT = 100_000
BATCH_TIER = "batch"
"""The price tier of a batch line (``gateway.cost``'s name for it: ``Price.rates_for``)."""
_BILLED_KEYS = tuple(f.name for f in fields(Usage))


@dataclass(slots=True)
class LedgerEntry:
    """One generation request in worst mode: what it carried and what it billed.

    The carried fields are the body's values as sent (None when absent); ``caps`` holds the
    output cap fields the body had. ``state``: ``received`` (being answered), ``refused`` (the
    mock's own 4xx: nothing billed), ``failed`` (an injected error status: nothing billed),
    ``running`` (a background response not ended yet), ``billed`` (billed in full, whether or
    not the client was still there), ``cancelled`` (a background response billed for what it
    produced before the cancel). ``usage`` is the usage object in the endpoint's own shape,
    reported or not; ``billed`` its counts by ``Usage`` field; ``delivered`` whether the whole
    answer (for a background response: its first, ``queued`` one) went out to the client:
    False until it has, None for a request refused or failed. A line of a batch has its
    ``batch_id`` and ``tier`` ``"batch"`` (it is billed at batch prices whatever its
    ``service_tier``; a request on its own has ``tier`` None: its ``service_tier`` says);
    it is delivered once it is in the batch's output file.
    """

    id: str | None
    path: str
    model: Any
    caps: dict[str, Any]
    n: Any
    best_of: Any
    max_tool_calls: Any
    service_tier: Any
    background: Any
    stream: bool
    state: str = "received"
    delivered: bool | None = None
    usage: dict[str, Any] | None = None
    billed: dict[str, int] | None = None
    tier: str | None = None
    batch_id: str | None = None


@dataclass(slots=True)
class Ledger:
    """The last ``limit`` entries (older ones are dropped and counted) and the totals billed
    over every entry, dropped or not."""

    limit: int = LEDGER_LIMIT
    entries: deque[LedgerEntry] = field(default_factory=deque)
    dropped: int = 0
    totals: Counter[str] = field(default_factory=Counter)

    def open(self, entry: LedgerEntry) -> LedgerEntry:
        self.entries.append(entry)
        if len(self.entries) > self.limit:
            self.entries.popleft()
            self.dropped += 1
        return entry

    def bill(self, entry: LedgerEntry, usage: dict[str, Any], counts: Mapping[str, int],
             state: str = "billed") -> None:
        entry.state = state
        entry.usage = usage
        entry.billed = dict(counts)
        self.totals.update(counts)

    def reset(self) -> None:
        self.entries.clear()
        self.dropped = 0
        self.totals.clear()

    def as_json(self) -> dict[str, Any]:
        return {
            "entries": [asdict(entry) for entry in self.entries],
            "dropped": self.dropped,
            "billed": {key: self.totals[key] for key in _BILLED_KEYS},
        }


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
    ledger: Ledger | None = None

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
        if self.ledger is not None:
            self.ledger.reset()

    def as_json(self) -> dict[str, Any]:
        shown = {
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
        if self.ledger is not None:
            shown["ledger"] = self.ledger.as_json()
        return shown
