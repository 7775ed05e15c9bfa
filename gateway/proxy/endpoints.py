"""The OpenAI endpoints the gateway meters; a path that is not here is not forwarded."""

from __future__ import annotations

from enum import StrEnum

from gateway.cost.model import Domain


class Endpoint(StrEnum):
    """Value: the path below ``/v1`` (and below an upstream's ``base_url``)."""

    CHAT = "/chat/completions"
    COMPLETIONS = "/completions"
    EMBEDDINGS = "/embeddings"
    RESPONSES = "/responses"

    @property
    def domain(self) -> Domain:
        return Domain.EMBEDDING if self is Endpoint.EMBEDDINGS else Domain.LLM

    @property
    def output_fields(self) -> tuple[str, ...]:
        """Request fields that cap output tokens, in the order the upstream honours them."""
        return _OUTPUT_FIELDS[self]


_OUTPUT_FIELDS = {
    Endpoint.CHAT: ("max_completion_tokens", "max_tokens"),
    Endpoint.COMPLETIONS: ("max_tokens",),
    Endpoint.EMBEDDINGS: (),
    Endpoint.RESPONSES: ("max_output_tokens",),
}
