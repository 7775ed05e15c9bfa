"""The Cognipeer-compatible spend and budgets API, under /api/client/v1."""

from __future__ import annotations

from aiohttp import web

from gateway.admin import batches, denials, handlers, openapi

PREFIX = "/api/client/v1"


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/me", handlers.whoami)
    app.router.add_get(f"{PREFIX}/spend/report", handlers.spend_report)
    app.router.add_get(f"{PREFIX}/spend/end_users", handlers.end_user_spend)
    app.router.add_get(f"{PREFIX}/budgets", handlers.list_budgets)
    app.router.add_post(f"{PREFIX}/budgets", handlers.create_budget)
    app.router.add_get(f"{PREFIX}/budgets/status", handlers.budgets_status)
    app.router.add_get(f"{PREFIX}/budgets/{{id}}", handlers.get_budget)
    app.router.add_patch(f"{PREFIX}/budgets/{{id}}", handlers.update_budget)
    app.router.add_delete(f"{PREFIX}/budgets/{{id}}", handlers.delete_budget)
    app.router.add_get(f"{PREFIX}/batches/running", batches.running)
    app.router.add_get(f"{PREFIX}/audit", handlers.audit_log)
    app.router.add_get(f"{PREFIX}/denials", denials.recent)
    app.router.add_get("/openapi.json", openapi.serve)
