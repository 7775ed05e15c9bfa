"""``GET /api/client/v1/denials``: the requests a budget refused lately, newest first, as this
instance remembers them (``gateway.proxy.denials``): a tenant key its own tenant's, an operator
any tenant's or, with ``tenant=all``, every tenant's."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from aiohttp import web

from gateway.admin.handlers import asked
from gateway.admin.params import count
from gateway.appkeys import PIPELINE
from gateway.proxy.denials import Denial

LIMIT_DEFAULT, LIMIT_MAX = 100, 1_000  # denials one read answers


async def recent(request: web.Request) -> web.Response:
    _, tenant = asked(request, ("limit",))
    limit = count(request.query.get("limit"), "limit", LIMIT_DEFAULT, LIMIT_MAX)
    denials = request.app[PIPELINE].denials.recent(tenant, limit)
    return web.json_response({"object": "list", "data": [denial_json(d) for d in denials]})


def denial_json(denial: Denial) -> dict[str, Any]:
    """As the API answers it: ``at`` in ISO 8601 (UTC, milliseconds), as an audit entry's."""
    at = dt.datetime.fromtimestamp(denial.at, dt.UTC).isoformat(timespec="milliseconds")
    return {**dataclasses.asdict(denial), "at": at.replace("+00:00", "Z")}
