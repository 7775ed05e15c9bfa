"""``/dashboard`` and its static files, from the package (``gateway/dashboard/static``).

The page itself needs no key (it asks for one and keeps it in the browser's sessionStorage);
every figure comes from the admin API with that key. Only the files named in ``FILES`` are
served, each with a strict Content-Security-Policy: scripts and styles from this origin only,
nothing inline, no frames.
"""

from __future__ import annotations

import functools
from importlib import resources

from aiohttp import web

PAGE = "/dashboard"
STATIC = "/dashboard/static"

# name -> content type; anything else under /dashboard/static is a 404. The page loads
# dashboard.js (an ES module), which imports the other modules.
FILES = {
    "dashboard.js": "text/javascript",
    "api.js": "text/javascript",
    "bars.js": "text/javascript",
    "batches.js": "text/javascript",
    "budgets.js": "text/javascript",
    "dom.js": "text/javascript",
    "editor.js": "text/javascript",
    "end_users.js": "text/javascript",
    "format.js": "text/javascript",
    "overview.js": "text/javascript",
    "spend.js": "text/javascript",
    "tenants.js": "text/javascript",
    "dashboard.css": "text/css",
    "chart.umd.min.js": "text/javascript",
}

CSP = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
))
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",  # revalidate, so an upgraded gateway serves its own page
}


@functools.cache
def _read(name: str) -> bytes:
    return (resources.files(__package__) / "static" / name).read_bytes()


def _file(name: str, content_type: str) -> web.Response:
    return web.Response(body=_read(name), content_type=content_type, charset="utf-8",
                        headers=HEADERS)


async def page(request: web.Request) -> web.Response:
    return _file("index.html", "text/html")


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    content_type = FILES.get(name)
    if content_type is None:
        raise web.HTTPNotFound()
    return _file(name, content_type)


def add_routes(app: web.Application) -> None:
    app.router.add_get(PAGE, page)
    app.router.add_get(STATIC + "/{name}", static)
