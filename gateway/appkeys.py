"""Typed keys for the long-lived objects an app holds; made in cleanup contexts."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from gateway.admin.budgets import BudgetAdmin
from gateway.clock import Clock
from gateway.in_flight import InFlight
from gateway.ops.metrics import Metrics
from gateway.proxy.batch_settle import BatchSettler
from gateway.proxy.batches import BatchRoutes
from gateway.proxy.handler import Pipeline
from gateway.proxy.models import ModelCatalog
from gateway.proxy.responses import StoredResponseRoutes
from gateway.proxy.tenant_budgets import ApiBudgets
from gateway.runtime import Runtime
from gateway.settings.watch import LiveConfig
from gateway.store.base import Store
from gateway.store.buffer import SettleBuffer

CONFIG = web.AppKey("config", LiveConfig[Runtime])
CLOCK = web.AppKey("clock", Clock)
SESSION = web.AppKey("session", aiohttp.ClientSession)
STORE = web.AppKey("store", Store)
PIPELINE = web.AppKey("pipeline", Pipeline)
MODELS = web.AppKey("models", ModelCatalog)
STORED_RESPONSES = web.AppKey("stored_responses", StoredResponseRoutes)
BATCHES = web.AppKey("batches", BatchRoutes)
BATCH_SETTLER = web.AppKey("batch_settler", BatchSettler)
BUFFER = web.AppKey("buffer", SettleBuffer)
API_BUDGETS = web.AppKey("api_budgets", ApiBudgets)
ADMIN = web.AppKey("admin", BudgetAdmin)
METRICS = web.AppKey("metrics", Metrics)
IN_FLIGHT = web.AppKey("in_flight", InFlight)
