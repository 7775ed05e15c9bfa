"""The ``gateway`` command: a thin layer over the same core the server uses."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from gateway import remote
from gateway.admin.status import Scope
from gateway.cost.model import Domain
from gateway.errors import ConfigErrors, GatewayError, NotFound
from gateway.proxy.end_user import EndUser, queried
from gateway.settings.schema import ALL_TENANTS, OperatorRole, Role, Settings
from gateway.store.base import Store, StoreError
from gateway.store.persist import PersistError
from gateway.store.sqlite import StoreFileError

EXIT_OK, EXIT_ERROR = 0, 1
EXIT_PIPE = 128 + signal.SIGPIPE  # as a shell reports a process SIGPIPE killed: 141
DEFAULT_CONFIG = "config/gateway.yaml"

T = TypeVar("T")


def _serve(args: argparse.Namespace) -> int:
    from gateway.serve import serve

    clean = serve(args.config, host=args.host, port=args.port, workers=args.workers,
                  grace_s=args.grace_s, worker=args.worker)
    return EXIT_OK if clean else EXIT_ERROR


def _workers(text: str) -> int:
    count = int(text)
    if count < 1:
        raise argparse.ArgumentTypeError(f"{text}: at least 1")
    return count


def _seconds(text: str) -> float:
    seconds = float(text)
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{text}: a number of seconds, 0 or more")
    return seconds


SERVE_EPILOG = """\
Shutdown: on SIGTERM or SIGINT the gateway stops accepting connections (new ones are refused),
lets the requests in flight, streams included, finish for up to --grace-s seconds, cuts off
any still running (charging what they produced), writes every usage record and the persisted
state, and exits 0. A process manager's stop timeout should exceed --grace-s by ~10 s.

--workers N (N > 1, Redis store only): this process supervises N workers that share the port
(SO_REUSEPORT). It forwards SIGTERM and SIGHUP to each, waits for them (up to --grace-s + 30 s,
then kills them) and exits 0 only if every worker did. A worker that exits on its own is logged
and stops the whole gateway, with exit status 1, for the process manager to restart it whole.
uvloop is used when installed (pip install 'llm-budget-gateway[uvloop]').
"""


def _check_config(args: argparse.Namespace) -> int:
    from gateway.cost.price_data import SOURCE
    from gateway.settings.load import load_settings

    settings = load_settings(args.path)
    keys = sum(len(t.keys) for t in settings.tenants.values())
    editors = sum(op.role is OperatorRole.EDITOR for op in settings.operators)
    print(
        f"{args.path}: OK ({len(settings.tenants)} tenants, {keys} keys, "
        f"{len(settings.operators)} operators ({editors} editors), "
        f"{len(settings.budgets)} budgets, {len(settings.upstreams)} upstreams, "
        f"{len(settings.pricing)} price overrides over {SOURCE})"
    )
    return EXIT_OK


# -- keys new: a secret, and its YAML as it fits the configuration it goes into ---------------

ROLE_HELP = (
    "what the key may do. A tenant's key (default: member). member: call the proxy for its "
    "tenant (within the tenant's models and budgets) and read the tenant's spend, budgets and "
    "budget status through the admin API. admin: all that, and also create, change and delete "
    "the tenant's API budgets (budgets in the YAML change only by editing the file). owner: the "
    "same as admin; no action needs owner rather than admin today. An operator's key (default: "
    "viewer). viewer: read every tenant's spend, budgets and budget status (?tenant=NAME or "
    "all). editor: all that, and also create, change and delete any tenant's API budgets")


def _keys_new(args: argparse.Namespace) -> int:
    from gateway.settings import new_key
    from gateway.settings.load import load_settings

    # A file named (--config, $GATEWAY_CONFIG) must be read; only the fallback may be absent.
    config = args.config or os.environ.get("GATEWAY_CONFIG") or (
        DEFAULT_CONFIG if os.path.isfile(DEFAULT_CONFIG) else None)
    settings = load_settings(config) if config is not None else None
    if args.operator:
        made = new_key.operator_key(args.name, args.role, settings, DEFAULT_CONFIG)
        whose = "operator key"
    else:
        made = new_key.tenant_key(args.tenant, args.name, args.role, settings, DEFAULT_CONFIG)
        whose = f"key for tenant {args.tenant!r}"
    for problem in made.problems:
        print(f"error: {problem}", file=sys.stderr)
    if made.problems:
        return EXIT_ERROR
    print(f"New {whose} {args.name!r} (shown once; store it now):\n\n  {made.secret}\n")
    print(made.placement)
    return EXIT_OK


def _mock_upstream(args: argparse.Namespace) -> int:
    from gateway.mock_upstream import run

    run(host=args.host, port=args.port, worst=args.worst)
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo()


# -- spend and budgets: the admin API's core, run on the store the configuration names -------

Command = Callable[[argparse.Namespace], int]

EMBEDDED_STORE = (
    "{config} uses store: {store!r}: the embedded store lives inside the gateway process, so "
    "its spend and budgets cannot be read from outside it. Use store: "
    '"memory://?persist=state.json" (the gateway keeps its state in that file and this command '
    'reads it) or a Redis store ("redis://127.0.0.1:6379/0"), or ask the running gateway: '
    "GET /api/client/v1/spend/report and /api/client/v1/budgets/status."
)


def _store_command(command: Command) -> Command:
    """Problems the operator can fix (a bad date, a store out of reach): ``error: ...``, 1."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except (GatewayError, StoreError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR

    return run


def _store_for_reading(settings: Settings, config: str) -> Store:
    """The configured store; a persisted embedded store is loaded from its file, read-only."""
    from gateway.store.factory import open_store, persist_path
    from gateway.store.memory import MemoryStore
    from gateway.store.persist import Persister

    url = settings.store
    try:
        if urlsplit(url).scheme == "sqlite":
            from gateway.store.sqlite import SqliteStore

            return SqliteStore(url, read_only=True)  # beside a running gateway: WAL readers
        if urlsplit(url).scheme != "memory":
            return open_store(url)
        path = persist_path(url)
    except ValueError as exc:
        raise StoreError(str(exc)) from None
    if path is None:
        raise StoreError(EMBEDDED_STORE.format(config=config, store=url))
    from gateway.store.factory import alias_database
    from gateway.store.sqlite import SqliteStore

    if alias_database(path).is_file():  # the alias's database (an old JSON file is carried
        return SqliteStore(f"sqlite://{alias_database(path)}", read_only=True)  # over into it)
    if not path.is_file():
        raise StoreError(
            f"state file {path} (store: {url!r} in {config}) does not exist: has the gateway "
            "run yet? A relative persist= path is relative to the directory the gateway "
            "started in."
        )
    store = MemoryStore()
    Persister(store, path).load()  # never saved from here: the gateway owns the file
    return store


def _read(settings: Settings, config: str, work: Callable[[Store], Awaitable[T]]) -> T:
    async def run() -> T:
        store = _store_for_reading(settings, config)
        try:
            await store.connect()
            return await work(store)
        except (StoreError, StoreFileError) as exc:
            parts = urlsplit(settings.store)  # shown without its password
            where = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
            raise StoreError(f"cannot read the store {where}: {exc}") from None
        finally:
            await store.close()

    return asyncio.run(run())


def _tenants(settings: Settings, wanted: str | None) -> list[str]:
    """The tenant ``--tenant`` names, or every tenant (none named, or ``all``)."""
    if wanted is None or wanted == ALL_TENANTS:
        return list(settings.tenants)
    if wanted not in settings.tenants:
        known = ", ".join(settings.tenants) or "none"
        raise NotFound(f"no tenant {wanted!r} in {settings.source} (tenants: {known})")
    return [wanted]


def _one_tenant(settings: Settings, wanted: str | None) -> str | None:
    """The tenant ``--tenant`` names; None: all of them (none named, or ``all``)."""
    return None if wanted in (None, ALL_TENANTS) else _tenants(settings, wanted)[0]


def _print_json(body: object) -> None:
    print(json.dumps(body, indent=2))


def _range(args: argparse.Namespace) -> tuple[float | None, float | None]:
    """--from and --to, in order."""
    from gateway.admin.params import bound, ordered

    since = bound(args.since, "--from", end=False)
    until = bound(args.until, "--to", end=True)
    ordered(since, until, "--from", "--to")
    return since, until


def _range_text(args: argparse.Namespace) -> str:
    if not (args.since or args.until):
        return "all recorded time"
    return f"{args.since or 'the first record'} to {args.until or 'now'}"


def _end_user(args: argparse.Namespace, settings: Settings) -> EndUser | None:
    """--end-user, checked as the gateway checks a request's end user."""
    return queried(args.end_user, settings, "--end-user")


@_store_command
def _spend_report(args: argparse.Namespace) -> int:
    from gateway.admin import report, tables
    from gateway.admin.params import choice
    from gateway.settings.load import load_settings

    group_by = choice(report.GroupBy, args.group_by, "--group-by") or report.GroupBy.DAY
    since, until = _range(args)
    if args.url:
        return remote.spend_report(args, group_by, _range_text(args))
    settings = load_settings(args.config)
    tenant = _one_tenant(settings, args.tenant)
    found = _end_user(args, settings)
    end_user = None if found is None else found.id
    if end_user is not None:
        report.daily_only(group_by, args.model, ("--group-by", "--model", "--end-user"))

    result = _read(settings, args.config, lambda store: report.spend_report(
        store, tenant, group_by, since=since, until=until, model=args.model, end_user=end_user))
    if args.json:
        _print_json(result.json())
        return EXIT_OK
    scope = f"tenant {tenant}" if tenant else "all tenants"
    model = f", model {args.model}" if args.model else ""
    whose = f", end user {end_user}" if end_user is not None else ""
    print(f"Spend of {scope}{model}{whose}, {_range_text(args)}, by {group_by.value} (USD)\n")
    print(tables.spend_tables(result))
    return EXIT_OK


@_store_command
def _spend_end_users(args: argparse.Namespace) -> int:
    from gateway.admin import end_users, tables
    from gateway.admin.params import count
    from gateway.settings.load import load_settings

    since, until = _range(args)
    limit = count(args.limit, "--limit", end_users.LIMIT_DEFAULT, end_users.LIMIT_MAX)
    settings = load_settings(args.config)
    tenants = _tenants(settings, args.tenant)

    async def ranked(store: Store) -> dict[str, end_users.EndUserSpend]:
        return {tenant: await end_users.end_user_spend(store, tenant, since, until, limit)
                for tenant in tenants}

    by_tenant = _read(settings, args.config, ranked)
    if args.json:
        bodies = {tenant: spend.json() for tenant, spend in by_tenant.items()}
        _print_json(bodies[args.tenant] if args.tenant else bodies)
        return EXIT_OK
    print("\n\n".join(f"Tenant {tenant}: end users by spend, {_range_text(args)} (USD)\n\n"
                      f"{tables.end_user_table(spend)}" for tenant, spend in by_tenant.items()))
    return EXIT_OK


@_store_command
def _budgets_status(args: argparse.Namespace) -> int:
    from gateway.admin import status, tables
    from gateway.admin.budgets import BudgetAdmin
    from gateway.clock import SystemClock
    from gateway.proxy.tenant_budgets import ApiBudgets
    from gateway.runtime import Runtime
    from gateway.settings.load import load_settings

    if args.url:
        return remote.budgets_status(args)
    settings = load_settings(args.config)
    tenants = _tenants(settings, args.tenant)
    runtime = Runtime.build(settings)
    end_user = _end_user(args, settings)
    wanted = status.StatusFilter(Domain(args.domain) if args.domain else None, args.model,
                                 Scope(args.scope) if args.scope else None, args.key, end_user)
    Row = tuple[list[status.LimitStatus], status.PeriodSpend]

    async def limits(store: Store) -> dict[str, Row]:
        admin = BudgetAdmin(store, lambda: runtime, ApiBudgets(store.definitions))
        now = SystemClock().now()
        return {tenant: (await status.budget_status(store, await admin.list(tenant), wanted, now),
                         await status.period_spend(store, tenant, args.model, now,
                                                   None if end_user is None else end_user.id))
                for tenant in tenants}

    by_tenant = _read(settings, args.config, limits)
    if args.json:
        bodies = {tenant: status.status_json(*row) for tenant, row in by_tenant.items()}
        _print_json(bodies[args.tenant] if args.tenant else bodies)
        return EXIT_OK
    print("\n\n".join(f"Tenant {tenant}\n{tables.spent_line(spent)}\n\n"
                      f"{tables.status_table(tables.limit_rows(found))}"
                      for tenant, (found, spent) in by_tenant.items()))
    return EXIT_OK


@_store_command
def _batches_running(args: argparse.Namespace) -> int:
    from gateway.admin import batches, tables
    from gateway.settings.load import load_settings

    if args.url:
        return remote.batches_running(args)
    settings = load_settings(args.config)
    tenants = set(_tenants(settings, args.tenant))

    async def running(store: Store) -> list[dict[str, Any]]:
        return [batches.running_json(r)
                for r in sorted(await store.batches.pending(), key=lambda r: r.created)
                if r.tenant in tenants]

    found = _read(settings, args.config, running)
    if args.json:
        _print_json({"object": "list", "data": found})
        return EXIT_OK
    print(tables.running_batches_table(found))
    return EXIT_OK


@_store_command
def _audit(args: argparse.Namespace) -> int:
    from gateway.admin import audit, tables
    from gateway.admin.params import count
    from gateway.settings.load import load_settings

    limit = count(args.limit, "--limit", audit.LIMIT_DEFAULT, audit.LIMIT_MAX)
    if args.url:
        return remote.audit(args, limit)
    settings = load_settings(args.config)
    tenant = _one_tenant(settings, args.tenant)
    entries = _read(settings, args.config,
                    lambda store: store.audit.recent(tenant, limit, args.budget))
    if args.json:
        _print_json({"object": "list", "data": [audit.entry_json(e) for e in entries]})
        return EXIT_OK
    print(tables.audit_table(entries))
    return EXIT_OK


def _default_config() -> str:
    return os.environ.get("GATEWAY_CONFIG", DEFAULT_CONFIG)


CONFIG_DEFAULT = f"default: $GATEWAY_CONFIG, else {DEFAULT_CONFIG}"


def _add_config(parser: argparse.ArgumentParser, what: str) -> None:
    """``--config``, with the default every command shares."""
    parser.add_argument("--config", default=_default_config(), metavar="PATH",
                        help=f"{what} ({CONFIG_DEFAULT})")


def _add_store_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = argparse.ArgumentParser(add_help=False)
    _add_config(config, "the gateway's YAML, whose store: is read")
    config.add_argument("--tenant", metavar="T|all",
                        help="one tenant of the config, or all (the default)")
    config.add_argument("--json", action="store_true", help="the API's JSON instead of tables")
    api = argparse.ArgumentParser(add_help=False)
    api.add_argument("--url", metavar="URL", help=(
        "ask a running gateway's admin API at URL (http://host:port) instead of reading the "
        f"store, with the key in ${remote.KEY_ENV} (a tenant key: its tenant; an operator's "
        "key: --tenant T, or every tenant by default); --config is not read"))
    dates = argparse.ArgumentParser(add_help=False)
    dates.add_argument("--from", dest="since", metavar="D",
                       help="first day (ISO date, UTC) or an ISO date-time")
    dates.add_argument("--to", dest="until", metavar="D",
                       help="last day, included (ISO date, UTC) or an ISO date-time")

    spend = sub.add_parser("spend", help="spend reports",
                           description="Spend, read from the store the configuration names.")
    spend_sub = spend.add_subparsers(dest="spend_command", required=True, metavar="COMMAND",
                                     help="gateway spend COMMAND --help: its options")
    report = spend_sub.add_parser(
        "report", parents=[config, dates, api], help="spend per period and per model",
        description="Spend per period and per model, as GET /api/client/v1/spend/report.")
    report.add_argument("--group-by", default="day", metavar="day|hour|month",
                        help="one row per period (default: day)")
    report.add_argument("--model", help="only this model")
    report.add_argument("--end-user", metavar="ID", help=(
        "only this end user's spend (safety_identifier, user or the end-user header), by day "
        "or month: an end user's figures are kept per day, not per model"))
    report.set_defaults(func=_spend_report)

    ranked = spend_sub.add_parser(
        "end-users", parents=[config, dates], help="end users by spend, largest first",
        description="The tenant's end users by spend, largest first, as GET /api/client/v1/"
                    "spend/end_users: the top --limit, then (other), the end users a day had "
                    "past limits.end_users_reported_max, and the total of them all. End users' "
                    "figures are kept per day (UTC). --json: the API's body for --tenant T, "
                    "else one per tenant: {tenant: body}.")
    ranked.add_argument("--limit", metavar="N", help="how many end users to list, 1 to 1,000 "
                                                      "(default 10)")
    ranked.set_defaults(func=_spend_end_users)

    budgets = sub.add_parser("budgets", help="budget status",
                             description="Budgets, read from the store the configuration names.")
    budgets_sub = budgets.add_subparsers(dest="budgets_command", required=True,
                                         metavar="COMMAND",
                                         help="gateway budgets COMMAND --help: its options")
    status = budgets_sub.add_parser(
        "status", parents=[config, api], help="usage against every limit, per budget",
        description="Usage against every limit of every budget (YAML and API budgets), per "
                    "tenant. --json: GET /api/client/v1/budgets/status's body for --tenant T, "
                    "else one per tenant: {tenant: body}.")
    status.add_argument("--domain", choices=[d.value for d in Domain],
                        help="only budgets that apply to this domain")
    status.add_argument("--model", help="only budgets that apply to this model, and its spend")
    status.add_argument("--scope", choices=[s.value for s in Scope],
                        help="tenant: budgets of the whole tenant; token: budgets of one key")
    status.add_argument("--key", metavar="NAME",
                        help="with --scope token: only this key's budgets (default: any key's)")
    status.add_argument("--end-user", metavar="ID", help=(
        "per: end_user budgets as they stand for this end user, and this end user's spend "
        "(of every model)"))
    status.set_defaults(func=_budgets_status)

    batches = sub.add_parser("batches", help="running batches",
                             description="Batches, read from the store the configuration names.")
    batches_sub = batches.add_subparsers(dest="batches_command", required=True,
                                         metavar="COMMAND",
                                         help="gateway batches COMMAND --help: its options")
    running = batches_sub.add_parser(
        "running", parents=[config, api], help="batches holding a reservation until they end",
        description="Batches that hold a reservation until they end (a batch reserves its "
                    "file's whole bound), as GET /api/client/v1/batches/running, with the "
                    "tenant of each.")
    running.set_defaults(func=_batches_running)

    audit = sub.add_parser(
        "audit", parents=[config, api], help="recent budget changes: who, what, when",
        description="Budget changes, newest first, read from the store the configuration "
                    "names, as GET /api/client/v1/audit: when, the budget, create, update or "
                    "delete, who (a key, an operator, or yaml: a reload of the file) and what "
                    "changed. --json: the API's body (each entry names its tenant).")
    audit.add_argument("--limit", metavar="N", help="at most N changes, 1 to 1,000 (default "
                                                     "100)")
    audit.add_argument("--budget", metavar="ID", help="only this budget's (its id; a YAML "
                                                       "budget's name if it has none)")
    audit.set_defaults(func=_audit)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway", description="An OpenAI-compatible proxy that enforces LLM budgets."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="gateway COMMAND --help: what it does and its options")

    serve = sub.add_parser(
        "serve", help="run the gateway", epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the gateway: the OpenAI-compatible proxy, the admin API and the "
                    "operations endpoints,\nas the configuration says. A valid edit of the "
                    "file is applied while it runs (at once on\nSIGHUP); an invalid one is "
                    "refused, logged, and the last good configuration kept.")
    _add_config(serve, "the gateway's YAML")
    serve.add_argument("--host", help="overrides listen's host")
    serve.add_argument("--port", type=int, help="overrides listen's port")
    serve.add_argument("--workers", type=_workers, default=1, metavar="N",
                       help="processes sharing the port (default 1; more needs a redis store)")
    serve.add_argument("--grace-s", type=_seconds, default=30.0, metavar="S",
                       help="on SIGTERM/SIGINT, seconds the requests in flight get to finish "
                            "before they are cut off (default 30)")
    serve.add_argument("--worker", help=argparse.SUPPRESS)  # I/N: set by the supervisor
    serve.set_defaults(func=_serve)

    check = sub.add_parser(
        "check-config", help="validate a configuration file",
        description="Validate a configuration as the gateway would load it: every problem "
                    "with file, line and field (exit status 1), or OK and what it holds.")
    check.add_argument("path", nargs="?", default=_default_config(), metavar="PATH",
                       help=f"the YAML to check ({CONFIG_DEFAULT})")
    check.set_defaults(func=_check_config)

    keys = sub.add_parser("keys", help="manage tenant keys",
                          description="Tenant keys: the Bearer secrets clients call with.")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND",
                                   help="gateway keys COMMAND --help: its options")
    new = keys_sub.add_parser(
        "new", help="make a new secret key and its YAML entry",
        description="Make a new secret key, print it once (only its sha256 is kept), and the "
                    "YAML to paste into the configuration: for a tenant the configuration "
                    "has, only the entry to add under its keys:; for a new tenant, the whole "
                    "tenant; for an operator (--operator), the entry to add under operators:. "
                    "Names the configuration would refuse, or a name its tenant (or the "
                    "operators) already has, are errors (exit status 1).")
    whose = new.add_mutually_exclusive_group(required=True)
    whose.add_argument("--tenant", metavar="T",
                       help="the tenant the key belongs to (an existing one or a new one)")
    whose.add_argument("--operator", action="store_true",
                       help="a key of the platform team, of no tenant (operators:)")
    new.add_argument("--name", required=True, metavar="N",
                     help="the key's name, unique in its tenant or among the operators "
                          "(budgets, audit entries and logs name it)")
    new.add_argument("--role", choices=[*(r.value for r in Role),
                                        *(r.value for r in OperatorRole)], help=ROLE_HELP)
    new.add_argument("--config", metavar="PATH",
                     help="the gateway's YAML, read to fit the snippet to it (default: "
                          f"$GATEWAY_CONFIG, else {DEFAULT_CONFIG} if there is one; without "
                          "either, the whole tenant is printed)")
    new.set_defaults(func=_keys_new)

    mock = sub.add_parser(
        "mock-upstream", help="a local fake OpenAI upstream",
        description="A local OpenAI-compatible fake upstream with deterministic usage, for "
                    "demos, tests and benchmarks. A request's metadata may ask it to answer "
                    "late (mock_delay_s) or to write fewer output tokens than allowed "
                    "(mock_output_tokens).")
    mock.add_argument("--host", default="127.0.0.1",
                      help="the address to listen on (default 127.0.0.1)")
    mock.add_argument("--port", type=int, default=9000,
                      help="the port to listen on (default 9000; 0: a free one, printed)")
    mock.add_argument(
        "--worst", action="store_true",
        help="bill as the real API may at its worst: full output caps or model maximums, "
        "reasoning, hidden context, searches, background responses; a ledger in the stats",
    )
    mock.set_defaults(func=_mock_upstream)

    demo = sub.add_parser(
        "demo", help="mock upstream + gateway + requests until a budget stops",
        description="Start a mock upstream and a gateway on the embedded in-memory store, in "
                    "this process, on free local ports; send chat requests until a budget "
                    "stops them (HTTP 429), then print the tenant's spend. Needs no "
                    "configuration and leaves no file behind.")
    demo.set_defaults(func=_demo)

    _add_store_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status. A reader that stops early (``| head``) ends it quietly,
    as it would a Unix tool: no traceback, the status of a process SIGPIPE killed."""
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # a reader gone shows here, not as a traceback at exit
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_PIPE


def _discard_stdout() -> None:
    """Point stdout at /dev/null: what is still buffered for the gone reader would otherwise
    fail again, as "Exception ignored", when Python flushes stdout at exit."""
    with contextlib.suppress(OSError, ValueError):  # not a file (captured): nothing to flush
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _run(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigErrors as exc:
        for error in exc.errors:
            print(f"error: {error}", file=sys.stderr)
        print(f"{len(exc.errors)} problem(s) found.", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        raise  # stdout's reader is gone: main ends quietly
    except (OSError, PersistError, StoreFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
