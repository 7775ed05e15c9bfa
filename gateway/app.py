"""The app factory: routes, middleware, and the long-lived objects in cleanup contexts
(created in order at start-up, closed in reverse only if their start succeeded)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from gateway import heap
from gateway.admin import identity
from gateway.admin import routes as admin_routes
from gateway.admin.audit import Auditor
from gateway.admin.budgets import BudgetAdmin
from gateway.appkeys import (
    ADMIN,
    API_BUDGETS,
    BATCH_SETTLER,
    BATCHES,
    BUFFER,
    CLOCK,
    CONFIG,
    IN_FLIGHT,
    METRICS,
    MODELS,
    PIPELINE,
    SESSION,
    STORE,
    STORED_RESPONSES,
)
from gateway.clock import Clock, SystemClock
from gateway.cost.tokens import default_tokenizers
from gateway.dashboard import routes as dashboard_routes
from gateway.in_flight import InFlight
from gateway.middleware import observe
from gateway.ops import routes as ops_routes
from gateway.ops.alerts import WebhookAlerts
from gateway.ops.metrics import Metrics, RuntimeGauges, budget_series
from gateway.proxy import batch_settle
from gateway.proxy import routes as proxy_routes
from gateway.proxy.batch_settle import BatchSettler
from gateway.proxy.batches import BatchRoutes
from gateway.proxy.budgets import Admitter
from gateway.proxy.denials import Denials
from gateway.proxy.forward import Forwarder
from gateway.proxy.gate import Gate
from gateway.proxy.handler import Pipeline
from gateway.proxy.models import ModelCatalog
from gateway.proxy.record import Recorder
from gateway.proxy.responses import BackgroundResponses, ResponseOwners, StoredResponseRoutes
from gateway.proxy.tenant_budgets import ApiBudgets
from gateway.runtime import Runtime
from gateway.settings.watch import LiveConfig
from gateway.store.base import Store, StoreError
from gateway.store.buffer import SettleBuffer
from gateway.store.factory import open_store
from gateway.store.freed import RoomFreed
from gateway.store.persist import persistence

log = logging.getLogger(__name__)

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]


def create_app(
    config: LiveConfig[Runtime],
    *,
    clock: Clock | None = None,
    store: Store | None = None,
    watch_interval_s: float | None = 1.0,
) -> web.Application:
    in_flight = InFlight()
    app = web.Application(middlewares=[observe(in_flight)], client_max_size=1024**2)
    app[IN_FLIGHT] = in_flight
    app[METRICS] = Metrics(lambda: budget_series(config.current.settings))
    app[CONFIG] = config
    app[CLOCK] = clock or SystemClock()
    app.cleanup_ctx.append(_session)
    app.cleanup_ctx.append(_store(store))
    app.cleanup_ctx.append(_persistence)
    app.cleanup_ctx.append(_pipeline)
    if watch_interval_s is not None:
        app.cleanup_ctx.append(_watcher(watch_interval_s))
    proxy_routes.add_routes(app)
    ops_routes.add_routes(app)
    admin_routes.add_routes(app)
    dashboard_routes.add_routes(app)
    return app


async def _session(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60)
    # No cookie jar: one session carries every tenant's requests, so a cookie the upstream sets
    # on one answer must not ride along on the next tenant's request.
    async with aiohttp.ClientSession(connector=connector, auto_decompress=True,
                                     cookie_jar=aiohttp.DummyCookieJar()) as session:
        app[SESSION] = session
        yield


def _store(given: Store | None) -> CleanupCtx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[CONFIG].current.settings
        limits = settings.limits
        store = given or open_store(settings.store, limits.budget_counters_max,
                                    limits.end_users_reported_max)
        app[STORE] = store
        try:
            await store.connect()
        except StoreError as exc:  # serve anyway: on_store_error decides per request
            log.warning("budget store not reachable at start-up: %s", exc)
        try:
            yield
        finally:
            if given is None:
                await store.close()

    return ctx


def _persistence(app: web.Application) -> AsyncIterator[None]:
    """``memory://?persist=PATH``: load before serving, save periodically and at shutdown."""
    return persistence(app[STORE], app[CONFIG].current.settings.store)


async def _pipeline(app: web.Application) -> AsyncIterator[None]:
    config, store, clock = app[CONFIG], app[STORE], app[CLOCK]
    await asyncio.to_thread(default_tokenizers().preload)  # not on the first request's time
    alerts = WebhookAlerts(app[SESSION], lambda: config.current.settings.alerts.webhook_url)
    buffer = app[BUFFER] = SettleBuffer(store, clock)
    api_budgets = app[API_BUDGETS] = ApiBudgets(store.definitions)
    auditor = Auditor(store, clock, lambda: config.current)
    app[ADMIN] = BudgetAdmin(store, lambda: config.current, api_budgets, auditor)
    recorder = Recorder(store, clock, buffer)
    owners = ResponseOwners(store.objects, clock,
                            lambda: config.current.settings.limits.objects_per_tenant)
    background = BackgroundResponses(app[SESSION], recorder, owners, clock)
    gate = Gate(clock, store.freed)
    gate.on_hold_ended = app[METRICS].held
    denials = Denials(clock, lambda: config.current.settings.limits.denials_per_tenant)
    config.on_change = functools.partial(_reloaded, store.freed)
    config.after_change = auditor.reloaded
    config.check = functools.partial(identity.names_taken_by_api, definitions=store.definitions)
    app[PIPELINE] = Pipeline(
        lambda: config.current,
        Admitter(store, clock, alerts, app[API_BUDGETS]),
        Forwarder(app[SESSION]),
        recorder,
        owners,
        background,
        gate,
        denials,
    )
    app[STORED_RESPONSES] = StoredResponseRoutes(lambda: config.current, owners, app[SESSION])
    settler = app[BATCH_SETTLER] = BatchSettler(lambda: config.current, store, app[SESSION],
                                                clock)
    app[BATCHES] = BatchRoutes(lambda: config.current, store, app[PIPELINE].admitter, owners,
                               gate, app[SESSION], clock, denials, settler.wake)
    app[MODELS] = ModelCatalog(app[SESSION], clock)
    app[METRICS].watch(RuntimeGauges(
        in_flight=lambda: app[PIPELINE].in_flight,
        buffered=lambda: len(buffer),
        buffer_overflowed=lambda: buffer.overflowed,
        buffer_written_back=lambda: buffer.written_back,
        reloads=lambda: config.reloads,
        reload_failures=lambda: config.reload_failures,
        alerts_sent=lambda: alerts.sent,
        alerts_failed=lambda: alerts.failed,
        store_failures=lambda: store.failures,
        over_reservation=lambda: recorder.over_reservation + settler.over_reservation,
        background=lambda: len(background),
        held=lambda: gate.held.total,
        batches_running=lambda: settler.running,
        batches_settled=lambda: settler.settled,
    ))
    flusher = asyncio.create_task(buffer.run())
    settling = asyncio.create_task(settler.run())
    yield
    await batch_settle.stop(settling)  # a running batch stays in the store for the next start
    await background.close()  # still running: charged their reservations, never released
    await gate.close()
    flusher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await flusher
    await alerts.close()


def _reloaded(freed: RoomFreed, old: Runtime, new: Runtime) -> None:
    identity.log_renames(old, new)
    freed.wake_all()  # a held request meets the new budgets at once
    heap.resettle()


def _watcher(interval_s: float) -> CleanupCtx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG]
        with contextlib.suppress(NotImplementedError, RuntimeError):
            config.install_sighup(asyncio.get_running_loop())
        task = asyncio.create_task(config.watch(interval_s))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ctx
