"""One error hierarchy: each error knows its HTTP status and its OpenAI ``type``/``code``.

Domain code raises these; only the error middleware renders them (as OpenAI-shaped JSON) and
only the CLI maps them to exit codes.
"""

from __future__ import annotations

from collections.abc import Mapping


class GatewayError(Exception):
    """Base of every error a client can see."""

    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class ModelNotPriced(InvalidRequest):
    code = "model_not_priced"


class Unauthenticated(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class Forbidden(GatewayError):
    status = 403
    type = "invalid_request_error"
    code = "model_not_allowed"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "unknown_url"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class ClientClosedRequest(GatewayError):
    """The client went away before its request was read: nobody to answer, nothing to meter.
    499, as nginx logs it, so access logs and metrics do not count it as a server error."""

    status = 499
    type = "invalid_request_error"
    code = "client_closed_request"


class BudgetExceeded(GatewayError):
    status = 429
    type = "budget_exceeded"
    code = "budget_exceeded"
    budget = ""  # the budget that refused (its name), for logs and metrics
    budget_id = ""
    limit = ""  # its limit that refused (max_cost_per_day...)
    action = ""
    downgrade = ""  # the first downgrade budget that refused, if any, and its fallback models
    fallbacks: tuple[str, ...] = ()


class UpstreamError(GatewayError):
    status = 502
    type = "upstream_error"
    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class ResponseNotFound(GatewayError):
    """OpenAI's answer for an object id (a response, file, batch) it does not have, or that
    another tenant owns."""

    status = 404
    type = "invalid_request_error"


class TooManyBackground(GatewayError):
    """This process follows as many background responses as it may."""

    status = 429
    type = "rate_limit_exceeded"
    code = "too_many_background_responses"


class StoreUnavailable(GatewayError):
    """The budget store cannot be reached; ``on_store_error: reject`` turns it into a 503."""

    status = 503
    type = "server_error"
    code = "budget_store_unavailable"


class CountersFull(GatewayError):
    """The embedded store keeps as many budget counters as it may (``limits.
    budget_counters_max``, e.g. one per active end user of a ``per: end_user`` budget): a
    request needing a new one waits until idle counters expire."""

    status = 503
    type = "server_error"
    code = "budget_counters_full"


class ConfigError(Exception):
    """One problem in a configuration file, located by file, line and field."""

    def __init__(self, file: str, line: int | None, field: str, message: str) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}"


class ConfigErrors(Exception):
    """Every problem found in one configuration file, reported together."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class Conflict(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class TooManyHeld(GatewayError):
    """A throttled request would be held past ``limits.held_per_tenant`` or ``held_total``."""

    status = 429
    type = "rate_limit_exceeded"
    code = "too_many_held_requests"


class TooManyConcurrent(GatewayError):
    """A request would be in flight past ``limits.concurrent_per_tenant`` or
    ``concurrent_total``."""

    status = 429
    type = "rate_limit_exceeded"
    code = "too_many_concurrent_requests"


class RequestTimeout(GatewayError):
    """The client did not send its request's head or body in time (``limits:``)."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class UnsupportedEncoding(GatewayError):
    """A request body with a Content-Encoding: OpenAI's API takes none, and decompressing one
    would let a small request grow past ``max_body_bytes``."""

    status = 415
    type = "invalid_request_error"
    code = "unsupported_content_encoding"


class HeadersTooLarge(GatewayError):
    """A header line longer than ``limits.max_header_bytes``, or a head of too many of them."""

    status = 431
    type = "invalid_request_error"
    code = "request_header_fields_too_large"
