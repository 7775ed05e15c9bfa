"""The OpenAI-compatible surface under /v1. Anything else under /v1 is a 404: a path that is
not metered is not forwarded."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.appkeys import BATCHES, CONFIG, MODELS, PIPELINE, STORED_RESPONSES
from gateway.proxy import batches
from gateway.proxy.endpoints import Endpoint


def _metered(endpoint: Endpoint) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await request.app[PIPELINE].handle(endpoint, request)

    return handle


async def list_models(request: web.Request) -> web.Response:
    runtime = request.app[CONFIG].current
    principal = runtime.keyring.authenticate(request.headers.get("Authorization"))
    entries = await request.app[MODELS].list(runtime, principal.tenant)
    return web.json_response({"object": "list", "data": [e.as_json() for e in entries]})


async def retrieve_model(request: web.Request) -> web.Response:
    runtime = request.app[CONFIG].current
    principal = runtime.keyring.authenticate(request.headers.get("Authorization"))
    model = request.match_info["id"]
    entry = await request.app[MODELS].get(runtime, principal.tenant, model)
    return web.json_response(entry.as_json())


def _stored_response(method: str, suffix: str = "") -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await request.app[STORED_RESPONSES].handle(request, method, suffix)

    return handle


def _batches(name: str) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await request.app[BATCHES].handle(name, request)

    return handle


def add_routes(app: web.Application) -> None:
    for endpoint in Endpoint:
        app.router.add_post("/v1" + endpoint.value, _metered(endpoint))
    app.router.add_get("/v1/models", list_models)
    # ``.+``: ids such as "org/model" arrive with the slash as it is or as %2F
    app.router.add_get("/v1/models/{id:.+}", retrieve_model)
    # a stored response, for the tenant that created it through the gateway only
    app.router.add_get("/v1/responses/{response_id}", _stored_response("GET"))
    app.router.add_delete("/v1/responses/{response_id}", _stored_response("DELETE"))
    app.router.add_post("/v1/responses/{response_id}/cancel", _stored_response("POST", "/cancel"))
    app.router.add_get("/v1/responses/{response_id}/input_items",
                       _stored_response("GET", "/input_items"))
    # files and batches, metered and the creating tenant's (gateway.proxy.batches)
    for method, path, name in batches.ROUTES:
        app.router.add_route(method, path, _batches(name))
