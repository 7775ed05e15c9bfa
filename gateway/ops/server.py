"""The operations address (``ops.listen``): ``/metrics``, ``/healthz`` and ``/readyz`` on a small
app and site of their own, so a scraper reaches them and the tenants on the public port never do.

It shares the public app's metrics, configuration and store (nothing is counted twice), so it
starts once they exist, as a cleanup context of the public app appended after its own, and stops
before them. It keeps answering while the public port drains at shutdown. ``ops.listen`` is read
at start-up: a change takes a restart.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from gateway.appkeys import CONFIG, METRICS, STORE
from gateway.middleware import observe
from gateway.ops import routes

log = logging.getLogger(__name__)


def ops_site(*, reuse_port: bool = False) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context for the public app; ``reuse_port`` for workers sharing the address."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        listen = app[CONFIG].current.settings.ops.listen
        if listen is None:
            yield
            return
        runner = web.AppRunner(_ops_app(app), handle_signals=False, access_log=None)
        await runner.setup()
        try:
            host, _, port = listen.rpartition(":")
            site = web.TCPSite(runner, host.strip("[]"), int(port), reuse_port=reuse_port)
            await site.start()
            log.info("operations endpoints (/metrics, /healthz, /readyz) listening on %s", listen)
            yield
        finally:
            await runner.cleanup()

    return ctx


def _ops_app(public: web.Application) -> web.Application:
    ops = web.Application(middlewares=[observe()])
    ops[CONFIG], ops[METRICS], ops[STORE] = public[CONFIG], public[METRICS], public[STORE]
    routes.add_ops_routes(ops)
    return ops
