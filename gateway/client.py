"""A Python client of the gateway's spend and budgets API (the Cognipeer console SDK's shape).

::

    async with Client("http://127.0.0.1:8080", api_key) as gateway:
        report = await gateway.spend.report(group_by="day")
        budget = await gateway.budgets.create(monthly_limit_usd=250)

    with SyncClient("http://127.0.0.1:8080", api_key) as gateway:   # from plain sync code
        print(gateway.budgets.status(domain="llm")["per_month"])

    # an operator's key (the platform team's) names the tenant it asks about, or "all":
    async with Client("http://127.0.0.1:8080", operator_key, tenant="acme") as gateway:
        await gateway.budgets.create(monthly_limit_usd=500)          # acme's
        everyone = await gateway.spend.report(tenant="all")          # this call: every tenant

Answers are the API's JSON as dicts. A refusal raises the ``GatewayAPIError`` subclass of its
HTTP status, carrying the server's message, type, code and param; no answer at all raises
``APIConnectionError``. ``SyncClient`` runs a ``Client`` on a private event loop in a daemon
thread, so it works from any thread, even one that runs an event loop of its own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import threading
from collections.abc import Callable, Coroutine, Mapping
from types import TracebackType
from typing import Any, ParamSpec, TypeVar
from urllib.parse import quote

import aiohttp

PREFIX = "/api/client/v1"

JSON = dict[str, Any]
Date = str | dt.date  # an ISO date or date-time string, or a date/datetime (naive means UTC)

P = ParamSpec("P")
T = TypeVar("T")


class GatewayAPIError(Exception):
    """The gateway refused a request (or, for ``APIConnectionError``, never answered)."""

    def __init__(self, message: str, *, status: int | None = None, type: str | None = None,
                 code: str | None = None, param: str | None = None,
                 request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.code = code
        self.param = param
        self.request_id = request_id

    def __str__(self) -> str:
        return self.message if self.status is None else f"{self.status}: {self.message}"


class BadRequestError(GatewayAPIError):
    """400 or 422: a parameter or body the gateway cannot accept (``param`` names it)."""


class AuthenticationError(GatewayAPIError):
    """401: the key is missing or unknown."""


class PermissionDeniedError(GatewayAPIError):
    """403: the key may not do this (a member key changing budgets, another tenant's budget)."""


class NotFoundError(GatewayAPIError):
    """404: no such budget (or path)."""


class ConflictError(GatewayAPIError):
    """409: for instance a budget defined in the YAML file, which only the file can change."""


class RateLimitError(GatewayAPIError):
    """429."""


class ServerError(GatewayAPIError):
    """5xx: the gateway (or its store) failed."""


class APIConnectionError(GatewayAPIError):
    """No answer: the gateway is unreachable or the connection broke."""


class APITimeoutError(APIConnectionError):
    """No answer within the client's ``timeout``."""


_BY_STATUS: dict[int, type[GatewayAPIError]] = {
    400: BadRequestError, 401: AuthenticationError, 403: PermissionDeniedError,
    404: NotFoundError, 409: ConflictError, 422: BadRequestError, 429: RateLimitError,
}


def error_from(status: int, body: bytes, request_id: str | None = None) -> GatewayAPIError:
    """The typed error for an answer with ``status`` >= 400 and its (OpenAI-shaped) body."""
    kind = _BY_STATUS.get(status, ServerError if status >= 500 else GatewayAPIError)
    try:
        error = json.loads(body)["error"]
        return kind(_text(error.get("message")) or f"HTTP {status}", status=status,
                    type=_text(error.get("type")), code=_text(error.get("code")),
                    param=_text(error.get("param")), request_id=request_id)
    except (ValueError, TypeError, KeyError, AttributeError):  # not the OpenAI error shape
        message = body.decode(errors="replace").strip()[:500] or f"HTTP {status}"
        return kind(message, status=status, request_id=request_id)


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _query(**params: str | dt.date | None) -> dict[str, str]:
    return {name: value.isoformat() if isinstance(value, dt.date) else value
            for name, value in params.items() if value is not None}


class Client:
    """The async client: one ``aiohttp.ClientSession``, opened on first use, closed by
    ``close()`` or by leaving ``async with``.

    ``tenant``: sent as ``?tenant=`` on every call: the tenant an operator's key
    asks about, or ``"all"`` (reads only); a tenant key may name its own, or none. Each call
    takes ``tenant=`` too, for that call only (``budgets.create(tenant=...)`` included)."""

    def __init__(self, base_url: str, api_key: str, *, tenant: str | None = None,
                 timeout: float = 30) -> None:
        self.base_url = base_url.rstrip("/")
        self.tenant = tenant
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self.spend = Spend(self)
        self.budgets = Budgets(self)
        self.batches = Batches(self)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def me(self) -> JSON:
        """Who the key is: ``tenant``, ``key_name``, ``role``, ``may_change_budgets``; an
        operator's: ``operator`` (true), ``name``, ``role``, ``tenants``,
        ``may_change_budgets``."""
        answer: JSON = await self.request("GET", "/me")
        return answer

    async def audit(self, limit: int | None = None, budget: str | None = None, *,
                    tenant: str | None = None) -> list[JSON]:
        """The recent budget changes, newest first (``limit``: at most, 1 to 1,000, default
        100; ``budget``: one budget's, by id): ``at``, ``tenant``, ``budget_id``,
        ``budget_name``, ``action``, ``who``, ``operator``, ``source``, ``before``, ``after``."""
        params = _query(limit=None if limit is None else str(limit), budget=budget)
        answer: JSON = await self.request("GET", "/audit", params=params, tenant=tenant)
        changes: list[JSON] = answer["data"]
        return changes

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                      body: JSON | None = None, tenant: str | None = None) -> Any:
        """``path`` under /api/client/v1; the answer's JSON, or None for an empty answer.
        ``tenant`` (else the client's) is sent as ``?tenant=``."""
        named = tenant or self.tenant
        if named:
            params = {**(params or {}), "tenant": named}
        if self._session is None:  # made here, on the loop that will use it
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        url = f"{self.base_url}{PREFIX}{path}"
        try:
            async with self._session.request(method, url, params=params, json=body) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise error_from(resp.status, raw, resp.headers.get("x-request-id"))
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors too
            raise APITimeoutError(f"{method} {url}: no answer within "
                                  f"{self._timeout.total}s") from exc
        except aiohttp.ClientError as exc:
            raise APIConnectionError(f"{method} {url}: {exc}") from exc
        return json.loads(raw) if raw else None


class Spend:
    def __init__(self, client: Client) -> None:
        self._client = client

    async def report(self, group_by: str | None = None, from_: Date | None = None,
                     to: Date | None = None, model: str | None = None,
                     end_user: str | None = None, *, tenant: str | None = None) -> JSON:
        """Totals, per-model breakdown and timeseries; ``group_by`` is day, hour or month.
        ``end_user``: that end user's spend, by day or month, without the split by model.
        Every tenant's (``tenant="all"``) has ``by_tenant`` too."""
        params = _query(group_by=group_by, model=model, to=to, end_user=end_user,
                        **{"from": from_})
        answer: JSON = await self._client.request("GET", "/spend/report", params=params,
                                                  tenant=tenant)
        return answer

    async def end_users(self, from_: Date | None = None, to: Date | None = None,
                        limit: int | None = None, *, tenant: str | None = None) -> JSON:
        """The tenant's end users by spend, largest first: the top ``limit`` (default 10, at
        most 1,000) in ``data``, the totals, and ``other`` (end users past the day's cap)."""
        params = _query(to=to, limit=None if limit is None else str(limit), **{"from": from_})
        answer: JSON = await self._client.request("GET", "/spend/end_users", params=params,
                                                  tenant=tenant)
        return answer


class Budgets:
    def __init__(self, client: Client) -> None:
        self._client = client

    async def list(self, *, tenant: str | None = None) -> list[JSON]:
        """The tenant's budgets: YAML ones (``"source": "file"``), then API ones (every
        tenant's, each naming its ``tenant``, for ``"all"``)."""
        answer: JSON = await self._client.request("GET", "/budgets", tenant=tenant)
        budgets: list[JSON] = answer["data"]
        return budgets

    async def get(self, budget_id: str, /, *, tenant: str | None = None) -> JSON:
        """One budget of the tenant, by its id (a YAML budget's id is its name)."""
        budget: JSON = await self._client.request("GET", _budget_path(budget_id),
                                                  tenant=tenant)
        return budget

    async def create(self, *, tenant: str | None = None, **fields: Any) -> JSON:
        """Needs an admin or owner key, or an editor operator's naming the tenant; e.g.
        ``create(monthly_limit_usd=250, model="gpt-4o*")``."""
        created: JSON = await self._client.request("POST", "/budgets", body=fields,
                                                   tenant=tenant)
        return created

    async def update(self, budget_id: str, /, *, tenant: str | None = None, **fields: Any
                     ) -> JSON:
        """Changes the given fields of an API budget (a YAML budget raises ConflictError)."""
        updated: JSON = await self._client.request("PATCH", _budget_path(budget_id),
                                                   body=fields, tenant=tenant)
        return updated

    async def delete(self, budget_id: str, /, *, tenant: str | None = None) -> None:
        await self._client.request("DELETE", _budget_path(budget_id), tenant=tenant)

    async def status(self, domain: str | None = None, model: str | None = None,
                     scope: str | None = None, end_user: str | None = None, *,
                     tenant: str | None = None) -> JSON:
        """Usage against every limit; ``scope`` is tenant or token (the calling key's);
        ``end_user``: per-end-user budgets as they stand for that end user, and their spend.
        Every tenant's (``tenant="all"``): ``limits``, every limit with its tenant, the
        highest ratio first."""
        params = _query(domain=domain, model=model, scope=scope, end_user=end_user)
        answer: JSON = await self._client.request("GET", "/budgets/status", params=params,
                                                  tenant=tenant)
        return answer


class Batches:
    def __init__(self, client: Client) -> None:
        self._client = client

    async def running(self, *, tenant: str | None = None) -> list[JSON]:
        """The tenant's batches that hold a reservation until they end: ``tenant``,
        ``batch_id``, ``model``, ``endpoint``, ``created_at``, ``deadline``, ``reserved_usd``,
        ``reserved_tokens``."""
        answer: JSON = await self._client.request("GET", "/batches/running", tenant=tenant)
        running: list[JSON] = answer["data"]
        return running


def _budget_path(budget_id: str) -> str:
    return f"/budgets/{quote(budget_id, safe='')}"


class _LoopThread:
    """A private event loop running in a daemon thread; blocking calls are sent to it."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="gateway-client", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop.is_closed():
            coro.close()
            raise RuntimeError("this SyncClient is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def blocking(self, method: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
        """``method``, made to run here and block its caller until it is done."""

        @functools.wraps(method)
        def call(*args: P.args, **kwargs: P.kwargs) -> T:
            return self.run(method(*args, **kwargs))

        return call

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class SyncSpend:
    def __init__(self, spend: Spend, loop: _LoopThread) -> None:
        self.report = loop.blocking(spend.report)
        self.end_users = loop.blocking(spend.end_users)


class SyncBudgets:
    def __init__(self, budgets: Budgets, loop: _LoopThread) -> None:
        self.list = loop.blocking(budgets.list)
        self.get = loop.blocking(budgets.get)
        self.create = loop.blocking(budgets.create)
        self.update = loop.blocking(budgets.update)
        self.delete = loop.blocking(budgets.delete)
        self.status = loop.blocking(budgets.status)


class SyncBatches:
    def __init__(self, batches: Batches, loop: _LoopThread) -> None:
        self.running = loop.blocking(batches.running)


class SyncClient:
    """``Client`` for sync code: the same methods and errors, each call blocking until done.
    Safe to share between threads. ``close()`` (or leaving ``with``) ends its thread."""

    def __init__(self, base_url: str, api_key: str, *, tenant: str | None = None,
                 timeout: float = 30) -> None:
        self._loop = _LoopThread()
        self._client = Client(base_url, api_key, tenant=tenant, timeout=timeout)
        self.base_url = self._client.base_url
        self.spend = SyncSpend(self._client.spend, self._loop)
        self.budgets = SyncBudgets(self._client.budgets, self._loop)
        self.batches = SyncBatches(self._client.batches, self._loop)
        self.me = self._loop.blocking(self._client.me)
        self.audit = self._loop.blocking(self._client.audit)
        self._closed = False

    @property
    def tenant(self) -> str | None:
        """The tenant every call names (``Client.tenant``); may be changed between calls."""
        return self._client.tenant

    @tenant.setter
    def tenant(self, tenant: str | None) -> None:
        self._client.tenant = tenant

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._loop.run(self._client.close())
        finally:
            self._loop.stop()
