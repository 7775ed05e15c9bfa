"""Operations endpoints: liveness, readiness (config loaded, store reachable), metrics."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.appkeys import CONFIG, METRICS, STORE
from gateway.store.base import StoreError


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    runtime = request.app[CONFIG].current
    try:
        await request.app[STORE].ping()
    except StoreError as exc:
        return web.json_response({"status": "unavailable", "store": str(exc)}, status=503)
    return web.json_response({"status": "ready", "config": runtime.settings.source})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].exposition(),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
