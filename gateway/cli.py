"""The ``gateway`` command: a thin layer over the same core the server uses."""

from __future__ import annotations

import argparse
import hashlib
import secrets
import sys
from collections.abc import Callable, Sequence

from gateway.errors import ConfigErrors
from gateway.settings.schema import Role
from gateway.store.persist import PersistError

EXIT_OK, EXIT_ERROR = 0, 1


def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from gateway import log
    from gateway.app import create_app
    from gateway.runtime import Runtime
    from gateway.settings.watch import load_live

    log.configure()
    config = load_live(args.config, Runtime.build)
    settings = config.current.settings
    if args.workers > 1 and settings.store.startswith("memory://"):
        print(
            f"error: --workers {args.workers} needs a shared store, but {args.config} uses "
            f"store: {settings.store!r}. Use store: \"redis://...\" or run one worker.",
            file=sys.stderr,
        )
        return EXIT_ERROR
    if args.workers > 1:
        print(
            "error: --workers > 1 is not available yet; run several `gateway serve` processes "
            "on one redis store (different ports, behind your load balancer).",
            file=sys.stderr,
        )
        return EXIT_ERROR
    host, _, port = settings.listen.rpartition(":")
    web.run_app(
        create_app(config),
        host=args.host or host,
        port=args.port or int(port),
        access_log=None,
        print=lambda msg: print(msg, flush=True),
    )
    return EXIT_OK


def _check_config(args: argparse.Namespace) -> int:
    from gateway.settings.load import load_settings

    settings = load_settings(args.path)
    keys = sum(len(t.keys) for t in settings.tenants.values())
    print(
        f"{args.path}: OK ({len(settings.tenants)} tenants, {keys} keys, "
        f"{len(settings.budgets)} budgets, {len(settings.upstreams)} upstreams, "
        f"{len(settings.pricing)} priced models)"
    )
    return EXIT_OK


def _keys_new(args: argparse.Namespace) -> int:
    secret = "sk-gw-" + secrets.token_urlsafe(32)
    digest = hashlib.sha256(secret.encode()).hexdigest()
    print(f"New key for tenant {args.tenant!r} (shown once; store it now):\n\n  {secret}\n")
    print("Add under tenants:\n")
    print(f"  {args.tenant}:\n    keys:\n      - name: {args.name}")
    print(f'        sha256: "{digest}"\n        role: {args.role}')
    return EXIT_OK


def _mock_upstream(args: argparse.Namespace) -> int:
    from gateway.mock_upstream import run

    run(host=args.host, port=args.port)
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway", description="An OpenAI-compatible proxy that enforces LLM budgets."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", required=True, help="path to gateway.yaml")
    serve.add_argument("--host", help="overrides listen's host")
    serve.add_argument("--port", type=int, help="overrides listen's port")
    serve.add_argument("--workers", type=int, default=1, help="processes (needs redis if > 1)")
    serve.set_defaults(func=_serve)

    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("path")
    check.set_defaults(func=_check_config)

    keys = sub.add_parser("keys", help="manage tenant keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    new = keys_sub.add_parser("new", help="make a new secret key and its YAML entry")
    new.add_argument("--tenant", required=True)
    new.add_argument("--name", required=True)
    new.add_argument("--role", choices=[r.value for r in Role], default=Role.MEMBER.value)
    new.set_defaults(func=_keys_new)

    mock = sub.add_parser("mock-upstream", help="a local fake OpenAI upstream")
    mock.add_argument("--host", default="127.0.0.1")
    mock.add_argument("--port", type=int, default=9000)
    mock.set_defaults(func=_mock_upstream)

    demo = sub.add_parser("demo", help="mock upstream + gateway + requests until a budget stops")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigErrors as exc:
        for error in exc.errors:
            print(f"error: {error}", file=sys.stderr)
        print(f"{len(exc.errors)} problem(s) found.", file=sys.stderr)
        return EXIT_ERROR
    except (OSError, PersistError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
