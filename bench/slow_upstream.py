"""An SSE upstream that can hold its streams open, for the concurrent-streams figure.

nginx cannot send a first chunk and then wait, so this small aiohttp server does. While
holding (``POST /hold``), each ``POST .../chat/completions`` gets its headers and first
content chunk at once and then waits; ``POST /release`` ends every held stream (a finish
chunk, a usage chunk, ``[DONE]``) and stops holding. When not holding, streams end at once
(warm-up). ``GET /open`` answers ``{"open": N, "served": M}``.

``python -m bench.slow_upstream --port P`` (the bench runs it on the load generator's CPU)
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web

from bench.forwarder import loop_factory, serve
from bench.upstream import chat_sse


class Holding:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.release.set()  # not holding until POST /hold
        self.open = 0
        self.served = 0


STATE = web.AppKey("state", Holding)


def _split_sse() -> tuple[bytes, bytes]:
    """The fixed stream's first two events, and the rest."""
    events = chat_sse().split(b"\n\n")
    return b"\n\n".join(events[:2]) + b"\n\n", b"\n\n".join(events[2:])


FIRST, REST = _split_sse()


async def chat(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    await request.read()
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(FIRST)
    state.open += 1
    try:
        await state.release.wait()
        await response.write(REST)
        await response.write_eof()
    finally:
        state.open -= 1
        state.served += 1
    return response


async def hold(request: web.Request) -> web.Response:
    request.app[STATE].release.clear()
    return web.json_response({"holding": True})


async def release(request: web.Request) -> web.Response:
    request.app[STATE].release.set()
    return web.json_response({"holding": False})


async def status(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response({"open": state.open, "served": state.served})


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def create_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE] = Holding()
    app.router.add_post("/hold", hold)
    app.router.add_post("/release", release)
    app.router.add_get("/open", status)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/{prefix:.*}chat/completions", chat)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve(create_app(), args.port))


if __name__ == "__main__":
    main()
