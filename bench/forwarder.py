"""A plain aiohttp forwarder: the in-run reference the gateway is measured against.

No auth, no budgets, no JSON parsing: it reads the body, POSTs it to the same path on the
upstream origin over one pooled ``ClientSession``, and returns the JSON answer whole or passes
an SSE answer through chunk by chunk. What the gateway costs beyond this is what its own work
(auth, token counting, reservations, usage) costs. uvloop when installed, as ``gateway serve``.

``python -m bench.forwarder --port P --upstream http://127.0.0.1:N``
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import signal
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

UPSTREAM = web.AppKey("upstream", str)
SESSION = web.AppKey("session", aiohttp.ClientSession)
MAX_BODY = 64 * 1024 * 1024
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=600)


async def forward(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    async with request.app[SESSION].post(
        request.app[UPSTREAM] + request.path, data=body,
        headers={"Content-Type": "application/json"},
    ) as resp:
        if resp.content_type != "text/event-stream":
            return web.Response(body=await resp.read(), status=resp.status,
                                content_type=resp.content_type)
        out = web.StreamResponse(status=resp.status, headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await out.prepare(request)
        async for chunk in resp.content.iter_any():
            await out.write(chunk)
        await out.write_eof()
        return out


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def create_app(upstream: str) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[UPSTREAM] = upstream.rstrip("/")

    async def session(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60)
        async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as client:
            app[SESSION] = client
            yield

    app.cleanup_ctx.append(session)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/{path:.*}", forward)
    return app


async def serve(app: web.Application, port: int) -> None:
    """Serves on 127.0.0.1:``port`` until SIGTERM or SIGINT."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
        await stopping.wait()
    finally:
        await runner.cleanup()


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="origin, e.g. http://127.0.0.1:9000")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve(create_app(args.upstream), args.port))


if __name__ == "__main__":
    main()
