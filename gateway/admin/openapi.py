"""The gateway's OpenAPI 3.1 document, served at ``GET /openapi.json``.

Every route of the app is described here. Enumerations come from the code's own enums
(endpoints, limits, windows, actions, domains, report grouping, status scope), so a new value
appears without an edit; ``tests/admin/test_openapi.py`` checks that the routes the app
registers and the paths documented here are the same, and that the admin API's answers
conform to these schemas.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

import orjson
from aiohttp import web

from gateway import __version__
from gateway.admin import audit, denials, end_users
from gateway.admin.budgets import ALIASES
from gateway.admin.report import GroupBy
from gateway.admin.status import Scope
from gateway.admin.tenancy import PARAM
from gateway.cost.model import BudgetAction, Domain, Limit, Per
from gateway.cost.windows import window_of
from gateway.proxy.endpoints import Endpoint
from gateway.settings.load import MAX_COST_USD
from gateway.settings.schema import ALL_TENANTS, OperatorRole, Role
from gateway.store.audit import AuditAction, AuditSource

JSON = dict[str, Any]

# admin.routes.PREFIX (that module imports this one); the route test compares the two.
ADMIN = "/api/client/v1"

# status -> (component name, when it is answered); every error body is the Error schema.
_ERRORS: Mapping[int, tuple[str, str]] = {
    400: ("BadRequest", "A parameter or body field is missing, malformed or out of range."),
    401: ("Unauthorized", "The API key is missing, malformed or unknown."),
    403: ("Forbidden", "The key may not do this (another tenant's budget or tenant, a member "
                       "key or a viewer operator changing budgets, a model outside the "
                       "tenant's allow-list, an operator key on the proxy)."),
    404: ("NotFound", "No such budget, model, route or (named by an operator) tenant."),
    409: ("Conflict", "A clash with what exists: the budget is defined in the YAML "
                      "configuration (edit the file), its name is taken, or the tenant has "
                      "as many API budgets as allowed."),
    413: ("PayloadTooLarge", "The request body is over the size limit (and is not forwarded)."),
    429: ("BudgetExceeded", "A budget does not let the request through (reject, or throttle "
                            "past max_wait_s)."),
    502: ("UpstreamError", "The upstream could not be reached or refused the gateway's "
                          "credentials."),
    503: ("StoreUnavailable", "The budget store is unreachable and on_store_error is reject."),
    504: ("UpstreamTimeout", "The upstream did not answer within its timeout."),
}

_SOURCES = ("file", "api")  # a budget from the YAML file, or made through this API

# endpoint -> (operationId, summary, the field it requires besides model)
_METERED: Mapping[Endpoint, tuple[str, str, str]] = {
    Endpoint.CHAT: ("createChatCompletion", "Create a chat completion", "messages"),
    Endpoint.COMPLETIONS: ("createCompletion", "Create a completion", "prompt"),
    Endpoint.EMBEDDINGS: ("createEmbedding", "Create embeddings", "input"),
    Endpoint.RESPONSES: ("createResponse", "Create a model response", "input"),
}


@functools.cache
def _serialized() -> bytes:
    return orjson.dumps(document())


async def serve(request: web.Request) -> web.Response:
    return web.Response(body=_serialized(), content_type="application/json")


def document() -> JSON:
    """The whole document, built afresh (``serve`` keeps one serialized copy)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "LLM budget gateway",
            "version": __version__,
            "description": "An OpenAI-compatible proxy that enforces token and cost budgets, "
                           "and a spend and budgets API compatible with the Cognipeer console.",
        },
        "security": [{"bearer": []}],
        "paths": _for_operators({**_proxy_paths(), **_admin_paths(), **_audit_path(),
                                 **_denials_path(), **_ops_paths()}),
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "A tenant key: 'Authorization: Bearer <key>'."},
                "opsToken": {"type": "http", "scheme": "bearer",
                             "description": "The configuration's ops.token, never a tenant "
                                            "key: 'Authorization: Bearer <ops.token>'."},
                "operatorKey": {"type": "http", "scheme": "bearer", "description": (
                    "A key of the configuration's operators (the platform team's, of no "
                    "tenant): the admin API for any tenant it names, and /metrics; never the "
                    "proxy. 'Authorization: Bearer <key>'.")},
            },
            "schemas": _schemas(),
            "responses": {name: _error_response(status, text)
                          for status, (name, text) in _ERRORS.items()},
        },
    }


# -- JSON Schema shapes ---------------------------------------------------------------------

def _type(name: str | list[str], **keywords: Any) -> JSON:
    return {"type": name, **keywords}


def _ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def _array(items: JSON) -> JSON:
    return {"type": "array", "items": items}


def _enum(values: type[StrEnum] | Iterable[str]) -> JSON:
    return {"type": "string", "enum": [str(v) for v in values]}


def _nullable(schema: JSON) -> JSON:
    """``schema`` or null."""
    kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    out = {**schema, "type": [*kinds, "null"]}
    if "enum" in schema:
        out["enum"] = [*schema["enum"], None]
    return out


def _object(properties: Mapping[str, JSON], *, optional: Iterable[str] = (),
            closed: bool = False) -> JSON:
    """An object whose properties are all required unless named in ``optional``."""
    skip = set(optional)
    schema: JSON = {"type": "object", "properties": dict(properties)}
    required = [name for name in properties if name not in skip]
    if required:
        schema["required"] = required
    if closed:
        schema["additionalProperties"] = False
    return schema


def _count() -> JSON:
    return _type("integer", minimum=0)


def _usd() -> JSON:
    return _type("number", minimum=0)


# -- components -----------------------------------------------------------------------------

def _schemas() -> JSON:
    fields = _budget_fields()
    limits = [*(limit.value for limit in Limit), *ALIASES]
    return {
        "Error": _object({"error": _object({
            "message": _type("string"),
            "type": _type("string"),
            "param": _nullable(_type("string")),
            "code": _nullable(_type("string")),
            "errors": {**_array(_object({
                "param": _nullable(_type("string", description=(
                    "the body field at fault; null: the budget as a whole"))),
                "message": _type("string", description="what is wrong with it"),
            })), "minItems": 1, "description": (
                "invalid_budget only: every field at fault, each once, in the order "
                "'message' lists them; 'param' is the first one's")},
        }, optional=["errors"])}),
        "Budget": _budget(fields),
        "BudgetList": _object({"object": _type("string", const="list"),
                               "data": _array(_ref("Budget"))}),
        "BudgetCreate": {**_object({**fields, "tenant": _type("string", description=(
                             "an operator's key only: the tenant the budget is for (or "
                             "?tenant=); a tenant key's budgets are its own tenant's"))},
                             optional=[*fields, "tenant"], closed=True),
                         "anyOf": [{"required": [name]} for name in limits]},
        "BudgetUpdate": _object(fields, optional=fields, closed=True),
        "BudgetStatus": _budget_status(),
        "BudgetStatusAll": _every_tenant_status(),
        "Caller": {"anyOf": [_object({
            "tenant": _type("string"), "key_name": _type("string"), "role": _enum(Role),
            "may_change_budgets": _type("boolean", description="admin or owner key"),
        }), _object({
            "operator": _type("boolean", const=True, description="an operator's key, of no "
                                                                  "tenant"),
            "name": _type("string"), "role": _enum(OperatorRole),
            "tenants": {**_array(_type("string")), "description": (
                "every tenant it may name (?tenant=), sorted; or tenant=all")},
            "may_change_budgets": _type("boolean", description="an editor"),
        })]},
        "SpendReport": _spend_report(),
        "AuditEntry": _audit_entry(),
        "Denial": _denial(),
        "EndUserSpend": _end_user_spend(),
        "Model": _object({
            "id": _type("string"), "object": _type("string", const="model"),
            "created": _type("integer"), "owned_by": _type("string"),
        }),
        "ModelList": _object({"object": _type("string", const="list"),
                              "data": _array(_ref("Model"))}),
    }


def _limit(limit: Limit) -> JSON:
    if limit.is_cost:
        return _type("number", minimum=0, maximum=MAX_COST_USD,
                     description=f"USD per {limit.window}; 0 or null: no limit")
    return _type("integer", minimum=0,
                 description=f"input + output tokens per {limit.window}; 0 or null: no limit")


def _budget_fields() -> dict[str, JSON]:
    """What a client may set, held to the YAML file's rules (``check-config``'s own)."""
    fields: dict[str, JSON] = {
        "name": _type("string", minLength=1, description="unique; defaults to the id"),
        "key": _type("string", minLength=1, description="only this key's requests"),
        "model": _type("string", minLength=1, description="only models matching this glob"),
        "domain": _enum(Domain),
    }
    fields |= {limit.value: _limit(limit) for limit in Limit}
    fields |= {alias: {**_limit(Limit(name)), "description": f"the same as {name}"}
               for alias, name in ALIASES.items()}
    fields |= {
        "alert_threshold": _type("number", minimum=0, maximum=1),
        "action": _enum(BudgetAction),
        "max_wait_s": _type("number", minimum=0),
        "clamp_max_tokens": _type("boolean"),
        "per": {**_enum(Per), "description": (
            "end_user: a template, each end user of the tenant (safety_identifier, user, or "
            "the end-user header) has their own windows and limits")},
        "end_user_required": _type("boolean", description=(
            "refuse (400 end_user_required) a request it matches that names no end user")),
        "fallback_model": _type(["string", "array"], minLength=1, minItems=1,
                                items=_type("string", minLength=1), description=(
                                    "action downgrade only: the model, or the models tried in "
                                    "order, that serve a request the budget would deny; "
                                    "answered as a list")),
    }
    return fields


def _budget(fields: Mapping[str, JSON]) -> JSON:
    """A budget as answered: every field present, null where the budget does not set it."""
    always = {"name", "action", "max_wait_s", "clamp_max_tokens", "end_user_required"}
    return _object({
        "id": _type("string", description="the name, for a budget from the YAML file"),
        "tenant": _type("string"),
        "source": _enum(_SOURCES),
        **{name: schema if name in always else _nullable(schema)
           for name, schema in fields.items()},
    })


def _audit_entry() -> JSON:
    def side(when: str, none: str) -> JSON:
        return {"anyOf": [_ref("Budget"), {"type": "null"}], "description": (
            f"the budget {when} the change, as GET /budgets/{{id}} answered it; null: {none}")}

    return _object({
        "at": _type("string", format="date-time", description="when, UTC"),
        "tenant": _type("string"),
        "budget_id": _type("string", description="the name, for a YAML budget without an id"),
        "budget_name": _type("string"),
        "action": _enum(AuditAction),
        "who": _type("string", description=(
            "the name of the key (or operator) that made the change, or 'yaml': a reload of "
            "the configuration file")),
        "operator": _type("boolean", description="who is an operator, of no tenant"),
        "source": {**_enum(AuditSource), "description": (
            "api: through the admin API (the dashboard's changes too); yaml: a reload")},
        "before": side("before", "created"),
        "after": side("after", "deleted"),
    })


def _denial() -> JSON:
    return _object({
        "at": _type("string", format="date-time", description="when, UTC"),
        "tenant": _type("string"),
        "budget_id": _type("string", description="the name, for a YAML budget without an id"),
        "budget": _type("string", description="its name"),
        "limit": _enum(Limit),
        "action": {**_enum(BudgetAction), "description": (
            "the budget's: reject, throttle (it could not wait long enough), downgrade (no "
            "fallback fitted), alert never refuses")},
        "model": _type("string", description="as the request named it"),
        "request_id": _type("string", description=(
            "the 429's x-request-id, as its access-log line has it")),
        "message": _type("string", description="the 429's message"),
    })


def _budget_status() -> JSON:
    def binding(unit: str, kind: str, window: str) -> JSON:
        return _object({
            f"used_{unit}": _type(kind, minimum=0, description=(
                f"what the tenant (of the model filter, if given) spent in {window}, whatever "
                "its budgets")),
            f"limit_{unit}": _nullable(_type(kind, minimum=0, description=(
                "the binding limit of the budgets the filter selects; null: none sets one"))),
            f"counted_{unit}": _nullable(_type(kind, minimum=0, description=(
                "what counts against that limit: a budget counts from its creation"))),
        })

    limit = _limit_status()
    return _object({
        "per_hour": binding("tokens", "integer", "the rolling hour"),
        "per_day": binding("usd", "number", "the rolling 24 hours"),
        "per_month": binding("usd", "number", "the calendar month (UTC)"),
        "budgets": _array(_status_budget(limit)),
        "end_user": _type("string", description=(
            "with the end_user parameter: whose figures these are; the used_* figures are "
            "then that end user's spend, of every model")),
    }, optional=["end_user"])


def _status_budget(limit: JSON, **tenant: JSON) -> JSON:
    return _object({
        **tenant,
        "id": _type("string"), "name": _type("string"), "source": _enum(_SOURCES),
        "action": _enum(BudgetAction),
        "per": {**_nullable(_enum(Per)), "description": (
            "end_user: its limits are the end_user parameter's (without one: the "
            "template's, which nothing counts against)")},
        "limits": _array(limit),
    })


def _every_tenant_status() -> JSON:
    """An operator's ``tenant=all``: every limit of every tenant, the highest ratio first."""
    def spent(unit: str, kind: str, window: str) -> JSON:
        return _object({f"used_{unit}": _type(kind, minimum=0, description=(
            f"what every tenant together (of the model filter, if given) spent in {window}; "
            "no limit binds them all"))})

    tenant = {"tenant": _type("string")}
    return _object({
        "tenant": _type("string", const=ALL_TENANTS),
        "per_hour": spent("tokens", "integer", "the rolling hour"),
        "per_day": spent("usd", "number", "the rolling 24 hours"),
        "per_month": spent("usd", "number", "the calendar month (UTC)"),
        "limits": {**_array(_object({
            **tenant, "budget_id": _type("string"), "budget": _type("string"),
            "action": _enum(BudgetAction), **_limit_status()["properties"],
        }, optional=["resets_in_s"])), "description": (
            "every limit of every tenant's budgets (the filters', if given), the highest ratio "
            "first: the budgets closest to their limits")},
        "budgets": _array(_status_budget(_limit_status(), **tenant)),
    })


def _limit_status() -> JSON:
    return _object({
        "limit": _enum(Limit),
        "window": _enum(dict.fromkeys(window_of(limit).name for limit in Limit)),
        "used": _type("number", minimum=0, description="tokens, or USD for a cost limit"),
        "max": _type("number", minimum=0),
        "available": _type("number", minimum=0, description=(
            "what one more request may reserve now (max - used; reservations in flight count "
            "as used): a request whose reservation, its input plus its output cap (tokens) or "
            "their worst-case cost (USD), is larger is refused by this limit")),
        "ratio": _type("number", minimum=0),
        "resets_in_s": _nullable(_type("integer", minimum=0, description=(
            "seconds until capacity frees up: the oldest use still counted leaves the rolling "
            "window (the calendar month: it ends); null when nothing is counted"))),
    }, optional=["resets_in_s"])


def _spend_report() -> JSON:
    def totals(first: str, schema: JSON, **optional: JSON) -> JSON:
        return _object({first: schema, "cost": _usd(), "input_tokens": _count(),
                        "output_tokens": _count(), "requests": _count(), **optional},
                       optional=optional)

    period = r"^\d{4}-\d{2}(-\d{2}(T\d{2}:00:00Z)?)?$"
    per_model = _array(totals("model_key", _type("string")))
    split = {**per_model, "description": "the period by model; its figures are their sums "
                                         "(absent from one end user's report)"}
    return _object({
        **_spend_totals(),
        "group_by": _enum(GroupBy),
        "by_model": {**per_model, "description": "absent from one end user's report: an end "
                                                 "user's spend is kept per day, not per model"},
        "end_user": _type("string", description="with the end_user parameter: whose spend"),
        "batch": {**totals("cost", _usd()), "description": (
            "the Batch API's share of the totals (batches settled in the range, at batch "
            "prices); absent from one end user's report")},
        "by_tenant": {**_array(totals("tenant", _type("string"))), "description": (
            "an operator's tenant=all only: each tenant's share of the totals (they add up to "
            "them), the tenant that spent most first")},
        "timeseries": _array(totals("period", _type("string", pattern=period), by_model=split,
                                    batch_cost={**_usd(), "description": "the batch work's "
                                                "share of the period's cost"})),
    }, optional=["by_model", "end_user", "batch", "by_tenant"])


def _spend_totals() -> JSON:
    return {"total_cost": _usd(), "currency": _type("string", const="USD"),
            "total_input_tokens": _count(), "total_output_tokens": _count(),
            "requests": _count()}


def _end_user_spend() -> JSON:
    figures = {"cost": _usd(), "input_tokens": _count(), "output_tokens": _count(),
               "requests": _count()}
    return _object({
        "object": _type("string", const="list"),
        **_spend_totals(),
        "end_users": {**_count(), "description": "end users with spend in the range (those "
                                                 "in 'other' not counted)"},
        "data": {**_array(_object({"tenant": _type("string", description=(
                     "an operator's tenant=all only: the end user's tenant (an id is its "
                     "tenant's own)")), "end_user": _type("string"), **figures},
                     optional=["tenant"])),
                 "maxItems": end_users.LIMIT_MAX,
                 "description": "the 'limit' end users who cost most, largest first"},
        "other": {**_object(figures), "description": (
            "the end users a day had past limits.end_users_reported_max, together (all zero "
            "when none): with every end user's figures, they add up to the totals")},
    })


def _header(description: str, schema: JSON) -> JSON:
    return {"description": description, "schema": schema}


def _error_response(status: int, description: str) -> JSON:
    response: JSON = {"description": description,
                      "content": {"application/json": {"schema": _ref("Error")}}}
    if status == 429:
        response["headers"] = {
            "Retry-After": _header("seconds until a rolling window frees enough",
                                   _type("integer", minimum=1)),
            "x-should-retry": _header("false when it will not fit within an hour",
                                      _enum(("false",))),
        }
    return response


# -- operations -----------------------------------------------------------------------------

def _json(description: str, schema: JSON) -> JSON:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(op_id: str, summary: str, tag: str, ok: Mapping[str, JSON],
               errors: Iterable[int], *, parameters: Iterable[JSON] = (),
               body: JSON | None = None, public: bool = False) -> JSON:
    responses = {**ok, **{str(s): {"$ref": f"#/components/responses/{_ERRORS[s][0]}"}
                          for s in errors}}
    operation: JSON = {"operationId": op_id, "summary": summary, "tags": [tag],
                       "responses": responses}
    if parameters:
        operation["parameters"] = list(parameters)
    if body is not None:
        operation["requestBody"] = {"required": True,
                                    "content": {"application/json": {"schema": body}}}
    if public:
        operation["security"] = []
    return operation


def _query(name: str, schema: JSON, description: str) -> JSON:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def _proxy_paths() -> JSON:
    paths: JSON = {f"/v1{endpoint.value}": {"post": _metered(endpoint)} for endpoint in Endpoint}
    paths["/v1/models"] = {"get": _operation(
        "listModels", "The models the caller's tenant may use", "proxy",
        {"200": _json("The models.", _ref("ModelList"))}, [401])}
    paths["/v1/models/{id}"] = {
        "parameters": [{"name": "id", "in": "path", "required": True,
                        "schema": _type("string", minLength=1)}],
        "get": _operation("retrieveModel", "One model the caller's tenant may use", "proxy",
                          {"200": _json("The model.", _ref("Model"))}, [401, 404]),
    }
    stored = _json("The upstream's answer for a response this tenant created.", _type("object"))
    one = "/v1/responses/{response_id}"
    paths[one] = {
        "parameters": [{"name": "response_id", "in": "path", "required": True,
                        "schema": _type("string", minLength=1)}],
        "get": _operation("retrieveResponse", "A response the caller's tenant created", "proxy",
                          {"200": stored}, [401, 404]),
        "delete": _operation("deleteResponse", "Delete a response the tenant created", "proxy",
                             {"200": stored}, [401, 404]),
    }
    for suffix, method, op_id, summary in (
        ("/cancel", "post", "cancelResponse", "Cancel a background response the tenant created"),
        ("/input_items", "get", "listResponseInputItems", "The input items of a response"),
    ):
        paths[one + suffix] = {"parameters": paths[one]["parameters"],
                               method: _operation(op_id, summary, "proxy", {"200": stored},
                                                  [401, 404])}
    return {**paths, **_batch_paths()}


def _batch_paths() -> JSON:
    """OpenAI's Files and Batch APIs, metered (``gateway.proxy.batches``): each object is the
    creating tenant's; any other tenant gets a 404."""
    ident = [{"name": "id", "in": "path", "required": True, "schema": _type("string",
                                                                             minLength=1)}]
    upstream = _json("The upstream's answer (OpenAI's shape).", _type("object"))
    listing = [_query("limit", _type("integer", minimum=1, maximum=100), "at most this many"),
               _query("after", _type("string"), "the last id of the previous page")]
    upload = _operation(
        "uploadBatchFile", "Upload a batch input file: every line checked and bounded, a bad "
        "line a 400 naming its number; purpose 'batch' only", "batches", {"200": upstream},
        [400, 401, 403, 413])
    upload["requestBody"] = {"required": True, "content": {"multipart/form-data": {
        "schema": _object({"purpose": _enum(("batch",)),
                           "file": _type("string", format="binary")})}}}
    create = _operation(
        "createBatch", "Start a batch: its file's bound reserved at batch prices in every "
        "matching budget, all or none; charged what its lines billed when it ends",
        "batches", {"200": upstream}, [400, 401, 403, 404, 429],
        body=_object({"input_file_id": _type("string", minLength=1),
                      "endpoint": _type("string"), "completion_window": _enum(("24h",)),
                      "metadata": _type("object")}, optional=("metadata",)))
    return {
        "/v1/files": {
            "post": upload,
            "get": _operation("listFiles", "The tenant's files", "batches", {"200": upstream},
                              [401], parameters=listing)},
        "/v1/files/{id}": {
            "parameters": ident,
            "get": _operation("retrieveFile", "A file of the tenant's", "batches",
                              {"200": upstream}, [401, 404]),
            "delete": _operation("deleteFile", "Delete a file of the tenant's", "batches",
                                 {"200": upstream}, [401, 404])},
        "/v1/files/{id}/content": {
            "parameters": ident,
            "get": _operation("retrieveFileContent", "A file's content (a batch's output "
                              "included)", "batches", {"200": {"description": "The bytes."}},
                              [401, 404])},
        "/v1/batches": {
            "post": create,
            "get": _operation("listBatches", "The tenant's batches", "batches",
                              {"200": upstream}, [401], parameters=listing)},
        "/v1/batches/{id}": {
            "parameters": ident,
            "get": _operation("retrieveBatch", "A batch of the tenant's", "batches",
                              {"200": upstream}, [401, 404])},
        "/api/client/v1/batches/running": {
            "get": _operation(
                "listRunningBatches", "The tenant's batches that hold a reservation until "
                "they end: batch_id (null while being created), model, endpoint, created_at, "
                "deadline (ISO 8601, UTC), reserved_usd, reserved_tokens", "batches",
                {"200": _json("The running batches.", _object({"object": _enum(("list",)),
                                                              "data": _array(_type("object"))}))},
                [401])},
        "/v1/batches/{id}/cancel": {
            "parameters": ident,
            "post": _operation("cancelBatch", "Cancel a batch: the lines done are charged, "
                               "the rest released", "batches", {"200": upstream}, [401, 404])},
    }


def _metered(endpoint: Endpoint) -> JSON:
    op_id, summary, field = _METERED[endpoint]
    main = _array(_type("object")) if field == "messages" else _type(["string", "array"])
    counts = {name: _type("integer", minimum=1) for name in (*endpoint.output_fields, "n")}
    body = _object({"model": _type("string", minLength=1), field: main,
                    "stream": _type("boolean"), "stream_options": _type("object"), **counts},
                   optional=("stream", "stream_options", *counts))
    body["additionalProperties"] = True
    ok = {
        "description": "The upstream's answer, metered (an event stream with stream: true).",
        "headers": {
            "x-budget-usage-ratio": _header("the highest usage ratio over matching budgets",
                                            _type("string")),
            "x-budget-alert": _header("<budget>:<limit>:<ratio> past an alert threshold",
                                      _type("string")),
            "x-budget-clamped-max-tokens": _header("the max_tokens the request was lowered to",
                                                   _type("integer", minimum=1)),
        },
        "content": {"application/json": {"schema": _type("object")},
                    "text/event-stream": {"schema": _type("string")}},
    }
    upstream = _json("The upstream's own error, passed through.", _ref("Error"))
    return _operation(op_id, summary, "proxy", {"200": ok, "4XX": upstream, "5XX": upstream},
                      [400, 401, 403, 404, 413, 429, 502, 503, 504], body=body)


def _admin_paths() -> JSON:
    budget_id = {"name": "id", "in": "path", "required": True,
                 "schema": _type("string", minLength=1)}
    budget = _json("The budget.", _ref("Budget"))
    return {
        f"{ADMIN}/me": {"get": _operation(
            "whoami", "The caller's tenant, key and role", "budgets",
            {"200": _json("The caller.", _ref("Caller"))}, [401])},
        f"{ADMIN}/spend/report": {"get": _operation(
            "spendReport", "Spend totals, per model and over time", "spend",
            {"200": _json("The report.", _ref("SpendReport"))}, [400, 401, 503],
            parameters=[
                _query("group_by", _enum(GroupBy), "timeseries period (default day)"),
                _query("from", _date(), "first day or moment (UTC if no offset)"),
                _query("to", _date(), "last day (included) or moment (excluded)"),
                _query("model", _type("string"), "only this model"),
                _end_user_query("only this end user's spend: by day or month (group_by hour "
                                "is a 400), without by_model (model is a 400)"),
            ])},
        f"{ADMIN}/spend/end_users": {"get": _operation(
            "endUserSpend", "Spend by end user, the largest first", "spend",
            {"200": _json("The end users.", _ref("EndUserSpend"))}, [400, 401, 503],
            parameters=[
                _query("from", _date(), "first day or moment (UTC if no offset)"),
                _query("to", _date(), "last day (included) or moment (excluded)"),
                _query("limit", _type("integer", minimum=1, maximum=end_users.LIMIT_MAX),
                       f"how many end users to list (default {end_users.LIMIT_DEFAULT})"),
            ])},
        f"{ADMIN}/budgets": {
            "get": _operation("listBudgets", "The tenant's budgets (YAML ones first)", "budgets",
                              {"200": _json("The budgets.", _ref("BudgetList"))}, [401, 503]),
            "post": _operation("createBudget", "Create a budget (admin or owner key)",
                               "budgets", {"201": _json("The new budget.", _ref("Budget"))},
                               [400, 401, 403, 409, 413, 503], body=_ref("BudgetCreate")),
        },
        f"{ADMIN}/budgets/status": {"get": _operation(
            "budgetStatus", "Usage against every limit", "budgets",
            {"200": _json("The status (an operator's tenant=all: BudgetStatusAll).",
                          {"anyOf": [_ref("BudgetStatus"), _ref("BudgetStatusAll")]})},
            [400, 401, 503],
            parameters=[
                _query("domain", _enum(Domain), "only budgets that apply to this domain"),
                _query("model", _type("string"), "only budgets that apply to this model"),
                _query("scope", _enum(Scope), "tenant-wide budgets, or the caller key's"),
                _end_user_query("per: end_user budgets as they stand for this end user, and "
                                "the used_* figures of their spend"),
            ])},
        f"{ADMIN}/budgets/{{id}}": {
            "parameters": [budget_id],
            "get": _operation("getBudget", "One budget", "budgets", {"200": budget},
                              [401, 403, 404, 503]),
            "patch": _operation("updateBudget", "Change an API budget (admin or owner key)",
                                "budgets", {"200": budget}, [400, 401, 403, 404, 409, 413, 503],
                                body=_ref("BudgetUpdate")),
            "delete": _operation("deleteBudget", "Delete an API budget (admin or owner key)",
                                 "budgets", {"204": {"description": "Deleted."}},
                                 [401, 403, 404, 409, 503]),
        },
    }


def _audit_path() -> JSON:
    return {f"{ADMIN}/audit": {"get": _operation(
        "auditLog", "The tenant's recent budget changes, newest first: who made each (a key, "
        "an operator or the YAML file), the budget before and after, and when", "budgets",
        {"200": _json("The changes.", _object({"object": _type("string", const="list"),
                                               "data": _array(_ref("AuditEntry"))}))},
        [400, 401, 503], parameters=[
            _query("limit", _type("integer", minimum=1, maximum=audit.LIMIT_MAX),
                   f"at most this many (default {audit.LIMIT_DEFAULT}); the store keeps each "
                   "tenant's newest limits.audit_entries_per_tenant"),
            _query("budget", _type("string", minLength=1), "only this budget's (by id)"),
        ])}}


def _denials_path() -> JSON:
    return {f"{ADMIN}/denials": {"get": _operation(
        "recentDenials", "The requests a budget refused lately, newest first, as this instance "
        "remembers them (each tenant's newest limits.denials_per_tenant since it started; never "
        "the end user)", "budgets",
        {"200": _json("The denials.", _object({"object": _type("string", const="list"),
                                               "data": _array(_ref("Denial"))}))},
        [400, 401], parameters=[
            _query("limit", _type("integer", minimum=1, maximum=denials.LIMIT_MAX),
                   f"at most this many (default {denials.LIMIT_DEFAULT})"),
        ])}}


def _for_operators(paths: JSON) -> JSON:
    """Either key may call the admin API, and every operation of it but ``/me`` takes
    ``tenant``: a tenant key may name its own, an operator's key names one (or, reading, all).
    The proxy refuses an operator's key: a 403."""
    for path, item in paths.items():
        for method, operation in item.items():
            if method not in ("get", "post", "patch", "delete"):
                continue
            if path.startswith("/v1"):
                operation["responses"].setdefault("403", {"$ref": "#/components/responses/"
                                                                  f"{_ERRORS[403][0]}"})
            if not path.startswith(ADMIN):
                continue
            operation["security"] = [{"bearer": []}, {"operatorKey": []}]
            if path == f"{ADMIN}/me":
                continue
            every = f" or '{ALL_TENANTS}' (every tenant)" if method == "get" else ""
            body = "; a new budget's may be its 'tenant' field instead" if method == "post" else ""
            operation.setdefault("parameters", []).append(_query(
                PARAM, _type("string", minLength=1), "which tenant: a tenant key's own (or left "
                f"out); an operator's key must name one{every}{body}"))
            for status in (400, 403, 404):
                operation["responses"].setdefault(
                    str(status), {"$ref": f"#/components/responses/{_ERRORS[status][0]}"})
    return paths


def _end_user_query(description: str) -> JSON:
    return _query("end_user", _type("string", minLength=1), (
        f"{description}. An end user's figures are kept per UTC day (a range's partial days "
        "are read from the usage log); a malformed id is a 400 naming end_user"))


def _date() -> JSON:
    return {"type": "string", "anyOf": [{"format": "date"}, {"format": "date-time"}]}


def _ops_paths() -> JSON:
    def public(op_id: str, summary: str, ok: Mapping[str, JSON]) -> JSON:
        return {"get": _operation(op_id, summary, "ops", ok, [], public=True)}

    live = _object({"status": _type("string", const="ok")}, closed=True)
    ready = _object({"status": _type("string", const="ready")}, closed=True)
    down = _object({"status": _type("string", const="unavailable")}, closed=True)
    text = {"text/plain": {"schema": _type("string")}}
    refused = {"content": {"application/json": {"schema": _ref("Error")}}}
    metrics = _operation("metrics", "Prometheus metrics, never for tenants", "ops", {
        "200": {"description": "The Prometheus text exposition format.", "content": text},
        "401": {"description": "It needs ops.token or an operator's key here (ops.token is set, "
                               "or on the public port operators are) and the request carries "
                               "neither.", **refused},
        "403": {"description": "Not on this port: with ops.listen it is served there only; "
                               "with none of ops.token, operators and ops.listen, refused.",
                **refused},
    }, [])
    metrics["security"] = [{"opsToken": []}, {"operatorKey": []}]
    return {
        "/healthz": public("healthz", "Liveness", {"200": _json("The process answers.", live)}),
        "/readyz": public("readyz", "Readiness: the store is reachable (why not: in the log)", {
            "200": _json("Ready.", ready), "503": _json("Not ready.", down)}),
        "/metrics": {"get": metrics},
        "/openapi.json": public("openapi", "This document", {
            "200": _json("The OpenAPI document.", _type("object", required=["openapi"]))}),
        "/dashboard": public("dashboard", "The spend dashboard (asks for a key itself)", {
            "200": {"description": "The page.",
                    "content": {"text/html": {"schema": _type("string")}}}}),
        "/dashboard/static/{name}": {
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": _type("string")}],
            **public("dashboardStatic", "The dashboard's scripts and styles", {
                "200": {"description": "The file.",
                        "content": {"text/javascript": {"schema": _type("string")},
                                    "text/css": {"schema": _type("string")}}},
                "404": {"description": "No such file."}}),
        },
    }
