"""The one middleware: the one place errors become OpenAI-shaped JSON, and every response gets
its request id, its access-log line and its metrics."""

from __future__ import annotations

import logging
import re
import secrets

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway import log as gateway_log
from gateway.appkeys import METRICS
from gateway.errors import GatewayError, MethodNotAllowed, NotFound, StoreUnavailable
from gateway.in_flight import InFlight
from gateway.ops import access
from gateway.store.base import StoreError

log = logging.getLogger(__name__)

_QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def error_response(error: GatewayError, request_id: str) -> web.Response:
    headers = {**error.headers, "x-request-id": request_id}
    return web.Response(
        body=orjson.dumps(error.body()), status=error.status,
        content_type="application/json", headers=headers,
    )


def _http_error(request: web.Request, exc: web.HTTPException) -> GatewayError:
    if exc.status == 405:
        return MethodNotAllowed(f"Method {request.method} is not allowed for {request.path}.")
    if exc.status == 404:
        return NotFound(
            f"Invalid URL ({request.method} {request.path}): this gateway forwards only "
            "metered OpenAI endpoints."
        )
    error = GatewayError(exc.reason or "HTTP error")
    error.status = exc.status
    error.type = "invalid_request_error" if exc.status < 500 else "server_error"
    return error


def observe(in_flight: InFlight | None = None) -> Middleware:
    """The one middleware: gives each request its id and record, counts it in flight (when
    given ``in_flight``), renders every error as OpenAI-shaped JSON, then reports the request
    once (access-log line and metrics), whatever the outcome. One layer, not one per concern:
    each layer is a coroutine every request passes through."""

    @web.middleware
    async def observed(request: web.Request, handler: Handler) -> web.StreamResponse:
        if in_flight is not None:
            in_flight.add(request)
        incoming = request.headers.get("x-request-id", "")
        rid = incoming if _SAFE_ID.match(incoming) else f"req_{secrets.token_hex(16)}"
        rec = access.RequestRecord(route=_route(request))
        tokens = gateway_log.request_id.set(rid), access.current.set(rec)
        status = 500
        try:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                if exc.status < 400:  # a redirect: aiohttp sends it
                    status = exc.status
                    raise
                response = error_response(_http_error(request, exc), rid)
            except Exception as exc:
                response = error_response(_rendered(request, exc), rid)
            status = response.status
            if not response.prepared:
                response.headers["x-request-id"] = rid
            return response
        finally:
            elapsed = rec.elapsed_s
            request.app[METRICS].observe(rec, status, elapsed)
            if rec.route not in _QUIET_ROUTES:
                gateway_log.info_line(access.log, {"request_id": rid,
                                                   **rec.access_fields(status, elapsed)},
                                      "%s %s %d", request.method, request.path, status)
            access.current.reset(tokens[1])
            gateway_log.request_id.reset(tokens[0])

    return observed


def _rendered(request: web.Request, exc: Exception) -> GatewayError:
    """Every error a client can meet, as the gateway error it is answered with; nothing else
    renders errors."""
    if isinstance(exc, StoreError):
        log.error("%s %s -> 503, budget store unavailable: %s", request.method, request.path, exc)
        return StoreUnavailable("The gateway's budget store is unreachable; retry shortly.")
    if isinstance(exc, GatewayError):
        if exc.status >= 500:
            log.warning("%s %s -> %d %s", request.method, request.path, exc.status, exc.message)
        return exc
    log.exception("unhandled error on %s %s", request.method, request.path)
    return GatewayError("The gateway failed to handle the request.")


def _route(request: web.Request) -> str:
    """The route's template (``/api/client/v1/budgets/{id}``), so labels stay few."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"
