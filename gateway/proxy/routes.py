"""The OpenAI-compatible surface under /v1. Anything else under /v1 is a 404: a path that is
not metered is not forwarded."""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.appkeys import CONFIG, PIPELINE
from gateway.proxy.endpoints import Endpoint


def _metered(endpoint: Endpoint) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await request.app[PIPELINE].handle(endpoint, request)

    return handle


async def list_models(request: web.Request) -> web.Response:
    runtime = request.app[CONFIG].current
    principal = runtime.keyring.authenticate(request.headers.get("Authorization"))
    created = int(time.time())
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": "gateway"}
        for name in runtime.models_for(principal.tenant)
    ]
    return web.json_response({"object": "list", "data": data})


def add_routes(app: web.Application) -> None:
    for endpoint in Endpoint:
        app.router.add_post("/v1" + endpoint.value, _metered(endpoint))
    app.router.add_get("/v1/models", list_models)
