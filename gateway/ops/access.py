"""What one request did, gathered as it goes and reported once at its end: one JSON access-log
line and the request metrics, from the same record."""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass, field

log = logging.getLogger("gateway.access")

MODEL_LOGGED_MAX = 200  # characters of the client's model name kept in its access line


@dataclass(slots=True)
class RequestRecord:
    route: str
    started: float = field(default_factory=time.perf_counter)
    tenant: str = "-"
    key_name: str = "-"
    model: str = "-"  # as the client sent it: the access line only (truncated there)
    model_label: str = "other"  # the price it resolved to, bounded by the configuration: metrics
    downgraded_from: str = ""  # downgraded: the model the client asked for (``model`` served it)
    downgraded_label: str = ""  # and its label
    stream: bool = False
    decision: str = "-"  # allow | alert | clamp | downgrade | deny | no-budget | unmetered
    reason: str = ""  # why a request was denied (or downgraded)
    usage_ratio: float = 0.0  # the highest over the matching budgets, this request included
    reserved_tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    usage_exact: bool = True  # False: charged from the gateway's count or the reservation
    upstream_s: float = 0.0  # time spent waiting on the upstream
    decisions: list[tuple[str, str, str]] = field(default_factory=list)  # budget, action, outcome
    ratios: list[tuple[str, str, float]] = field(default_factory=list)  # budget, limit, ratio

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started

    def access_fields(self, status: int, elapsed_s: float) -> dict[str, object]:
        fields: dict[str, object] = {
            "status": status, "route": self.route, "tenant": self.tenant, "key": self.key_name,
            "model": self.model[:MODEL_LOGGED_MAX],
        }
        if self.downgraded_from:
            fields["downgraded_from"] = self.downgraded_from[:MODEL_LOGGED_MAX]
        fields["stream"], fields["decision"] = self.stream, self.decision
        if self.reason:
            fields["reason"] = self.reason
        fields["usage_ratio"] = round(self.usage_ratio, 6)
        fields["reserved_tokens"] = self.reserved_tokens
        fields["input_tokens"], fields["output_tokens"] = self.input_tokens, self.output_tokens
        fields["cost_usd"] = round(self.cost_usd, 9)
        if not self.usage_exact:
            fields["usage"] = "estimate"
        fields["duration_ms"] = round(elapsed_s * 1e3, 3)
        fields["upstream_ms"] = round(self.upstream_s * 1e3, 3)
        fields["overhead_ms"] = round(max(elapsed_s - self.upstream_s, 0.0) * 1e3, 3)
        return fields


# The record of the request this task is handling; set by the middleware, filled by stages.
current: ContextVar[RequestRecord | None] = ContextVar("request_record", default=None)


def record() -> RequestRecord | None:
    return current.get()
