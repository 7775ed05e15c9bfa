"""Operations endpoints: liveness, readiness (store reachable), metrics.

``/metrics`` shows every tenant's figures, so no tenant reads it. With ``ops.listen`` it is served
on that address only (``gateway/ops/server.py``); with ``ops.token`` it answers only
``Authorization: Bearer <token>`` or an operator's key (``operators:``), wherever it is served;
on the public port, operators alone are enough to serve it (to them); with none of these it is
refused on the public port. ``/healthz`` and ``/readyz`` answer without a key and say only
whether the gateway is up: what is wrong goes to the log, never to whoever asks.
"""

from __future__ import annotations

import hmac
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.appkeys import CONFIG, METRICS, STORE
from gateway.errors import Forbidden, Unauthenticated
from gateway.store.base import StoreError

log = logging.getLogger(__name__)

NOT_CONFIGURED = (
    "/metrics shows every tenant's figures and is not served on this port until the operations "
    "endpoints are configured: set ops.token (a bearer token for the scraper), operators (the "
    "platform team's keys, which open it) or ops.listen (a separate address for /metrics) in "
    "the gateway's configuration."
)
ELSEWHERE = "/metrics is served on the operations address (ops.listen), not on this port."
NEEDS_TOKEN = "/metrics needs the operations token: 'Authorization: Bearer <ops.token>'."
NEEDS_OPERATOR = "/metrics needs an operator's key: 'Authorization: Bearer <operator key>'."
NEEDS_EITHER = ("/metrics needs the operations token or an operator's key: 'Authorization: "
                "Bearer <ops.token or operator key>'.")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[STORE].ping()
    except StoreError as exc:
        log.warning("not ready: the budget store is unreachable: %s", exc)
        return web.json_response({"status": "unavailable"}, status=503)
    return web.json_response({"status": "ready"})


async def public_metrics(request: web.Request) -> web.Response:
    """``/metrics`` on the public port: the tenants' port."""
    runtime = request.app[CONFIG].current
    ops = runtime.settings.ops
    if ops.listen is not None:
        raise Forbidden(ELSEWHERE, code="metrics_not_public")
    if ops.token is None and not runtime.keyring.has_operators:
        raise Forbidden(NOT_CONFIGURED, code="metrics_not_configured")
    return _exposition(request, keyed=True)


async def ops_metrics(request: web.Request) -> web.Response:
    """``/metrics`` on the operations address: still the token's (or an operator's), when a
    token is set."""
    return _exposition(request, keyed=request.app[CONFIG].current.settings.ops.token is not None)


def _exposition(request: web.Request, *, keyed: bool) -> web.Response:
    """``keyed``: only for the operations token or an operator's key."""
    runtime = request.app[CONFIG].current
    token, header = runtime.settings.ops.token, request.headers.get("Authorization")
    if keyed and not ((token is not None and bearer_matches(header, token))
                      or runtime.keyring.operator(header) is not None):
        needs = (NEEDS_TOKEN if not runtime.keyring.has_operators
                 else NEEDS_OPERATOR if token is None else NEEDS_EITHER)
        raise Unauthenticated(needs, code="invalid_ops_token",
                              headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    return web.Response(body=request.app[METRICS].exposition(),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


def bearer_matches(header: str | None, token: str) -> bool:
    """``Bearer <token>``, compared in constant time (any bytes a client sends compare)."""
    scheme, _, given = (header or "").strip().partition(" ")
    presented = given.strip().encode("utf-8", "surrogatepass")
    matches = hmac.compare_digest(presented, token.encode("utf-8", "surrogatepass"))
    return scheme.lower() == "bearer" and matches


def add_routes(app: web.Application) -> None:
    """The public app's."""
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", public_metrics)


def add_ops_routes(app: web.Application) -> None:
    """The operations address's (``ops.listen``)."""
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", ops_metrics)
