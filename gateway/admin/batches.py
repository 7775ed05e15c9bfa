"""``GET /api/client/v1/batches/running``: what the tenant's running batches hold of its
budgets. A batch reserves its file's whole bound for as long as it runs (up to a day), so a
budget that looks spent may be held by batches: this says which, and until when."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from gateway.admin.handlers import asked
from gateway.appkeys import STORE
from gateway.cost.model import nano_to_usd
from gateway.store.batches import BatchRecord


async def running(request: web.Request) -> web.Response:
    """The tenant's running batches (an operator's ``tenant=all``: every tenant's)."""
    _, tenant = asked(request)
    records = [r for r in await request.app[STORE].batches.pending()
               if tenant is None or r.tenant == tenant]
    records.sort(key=lambda r: r.created)
    return web.json_response({"object": "list", "data": [running_json(r) for r in records]})


def running_json(record: BatchRecord) -> dict[str, Any]:
    return {"tenant": record.tenant, "batch_id": record.batch_id, "model": record.model,
            "endpoint": f"/v1{record.endpoint}", "created_at": _iso(record.created),
            "deadline": _iso(record.deadline), "reserved_usd": nano_to_usd(record.cost_nano),
            "reserved_tokens": record.tokens}


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
