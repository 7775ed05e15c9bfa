"""A new secret key and the YAML that adds it, fitted to the configuration it goes into.

``gateway keys new`` is a thin layer over this: a tenant's key goes under its tenant (the whole
tenant when the configuration lacks it), an operator's under ``operators:``. What the loader
would refuse in the snippet (names, roles) is refused here, by the loader's own rules.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import textwrap
from dataclasses import dataclass

import yaml

from gateway.errors import ConfigErrors
from gateway.settings.load import parse_settings
from gateway.settings.schema import OperatorRole, Role, Settings
from gateway.settings.yamlpos import index, join, suggest

KEY_ENTRY = '- name: {name}\n  sha256: "{digest}"\n  role: {role}'
# A snippet alone, with the one upstream a configuration needs to load.
SNIPPET_CHECK = 'upstreams: {{check: {{base_url: "http://127.0.0.1/v1", api_key: k}}}}\n{rest}'
TENANT_ROLES = tuple(r.value for r in Role)
OPERATOR_ROLES = tuple(r.value for r in OperatorRole)


@dataclass(frozen=True)
class NewKey:
    """The secret (shown once), and where its entry goes; or why there is none."""

    secret: str = ""
    placement: str = ""
    problems: tuple[str, ...] = ()


def tenant_key(tenant: str, name: str, role: str | None, settings: Settings | None,
               default_config: str) -> NewKey:
    role = role or Role.MEMBER.value
    if role not in TENANT_ROLES:
        return _wrong_role(role, tenant=True)
    secret, entry = _entry(name, role)
    block = f"{_yaml_scalar(tenant)}:\n  keys:\n{_indent(entry, 4)}"
    problems = _refused(f"tenants:\n{_indent(block, 2)}", join(join("tenants", tenant), "keys"),
                        "--tenant")
    problems = problems or _key_taken(settings, tenant, name)
    if problems:
        return NewKey(problems=tuple(problems))
    return NewKey(secret, _tenant_placement(settings, tenant, entry, block, default_config))


def _key_taken(settings: Settings | None, tenant: str, name: str) -> list[str]:
    found = None if settings is None else settings.tenants.get(tenant)
    if settings is None or found is None or all(key.name != name for key in found.keys):
        return []
    return [f"--name: tenant {tenant!r} already has a key named {name!r} in {settings.source}; "
            "choose another name (to replace that key's secret: add a new key, move its "
            "clients over, then remove the old one)"]


def operator_key(name: str, role: str | None, settings: Settings | None,
                 default_config: str) -> NewKey:
    role = role or OperatorRole.VIEWER.value
    if role not in OPERATOR_ROLES:
        return _wrong_role(role, tenant=False)
    secret, entry = _entry(name, role)
    problems = _refused(f"tenants: {{}}\noperators:\n{_indent(entry, 2)}", "operators",
                        "--name")
    problems = problems or _operator_taken(settings, name)
    if problems:
        return NewKey(problems=tuple(problems))
    if settings is None:
        placement = (f"Add under operators: in the gateway's configuration (no "
                     f"{default_config} here to fit it to):\n\noperators:\n{_indent(entry, 2)}")
    elif settings.operators:
        placement = f"Add under operators in {settings.source}:\n\n{_indent(entry, 2)}"
    else:
        placement = (f"{settings.source} has no operators yet: add at its top level (in place "
                     f"of an operators: [] line if it has one):\n\noperators:\n"
                     f"{_indent(entry, 2)}")
    return NewKey(secret, placement)


def _operator_taken(settings: Settings | None, name: str) -> list[str]:
    if settings is None or all(op.name != name for op in settings.operators):
        return []
    return [f"--name: {settings.source} already has an operator named {name!r}; choose another "
            "name (to replace its secret: add a new operator, move its users over, then remove "
            "the old one)"]


_KINDS = {True: ("a tenant key's", TENANT_ROLES, "--tenant"),
          False: ("an operator's", OPERATOR_ROLES, "--operator")}


def _wrong_role(role: str, tenant: bool) -> NewKey:
    """A role of the other kind of key, or of none, named with the flag that takes it."""
    whose, roles, _ = _KINDS[tenant]
    other, others, flag = _KINDS[not tenant]
    return NewKey(problems=(f"--role: {whose} role is {' | '.join(roles)}, not {role!r} "
                            f"({', '.join(others)}: {other} roles, with {flag})",))


def _entry(name: str, role: str) -> tuple[str, str]:
    secret = "sk-gw-" + secrets.token_urlsafe(32)
    digest = hashlib.sha256(secret.encode()).hexdigest()
    return secret, KEY_ENTRY.format(name=_yaml_scalar(name), role=role, digest=digest)


def _refused(snippet: str, keys_at: str, otherwise: str) -> list[str]:
    """What the configuration loader refuses in the snippet, by its own rules (a key name must
    be a non-empty printable string; ``${NAME}`` is read as a variable): the entry's name is
    ``--name``, anything else ``otherwise``."""
    try:
        parse_settings(SNIPPET_CHECK.format(rest=snippet), "the snippet", env={})
    except ConfigErrors as exc:
        name = join(index(keys_at, 0), "name")
        return [f"{'--name' if e.field == name else otherwise}: the configuration would refuse "
                f"it: {e.message}" for e in exc.errors]
    return []


def _tenant_placement(settings: Settings | None, tenant: str, entry: str, block: str,
                      default_config: str) -> str:
    """Words saying where the snippet goes, then the snippet, indented as in the example
    config: only the entry for a tenant the configuration has, else the whole tenant."""
    if settings is None:
        return (f"Add under tenants: in the gateway's configuration (no {default_config} here "
                f"to fit it to: if tenant {tenant!r} is there already, add only the - name: "
                f"entry, under its keys:):\n\n{_indent(block, 2)}")
    found = settings.tenants.get(tenant)
    if found is None:
        hint = suggest(tenant, list(settings.tenants))
        return (f"Tenant {tenant!r} is not in {settings.source}{hint or '.'} A new tenant: add "
                f"it, whole, under tenants:\n\n{_indent(block, 2)}")
    path = join("tenants", tenant)
    if not found.keys:
        return (f"Tenant {tenant!r} has no keys yet: add under {path} in {settings.source} (in "
                f"place of a keys: [] line if it has one):\n\n    keys:\n{_indent(entry, 6)}")
    return f"Add under {join(path, 'keys')} in {settings.source}:\n\n{_indent(entry, 6)}"


def _yaml_scalar(text: str) -> str:
    """``text`` written so YAML reads it back as this very string: plain where it can be
    (acme-ci), else double-quoted (123, yes, a: b would read as a number, a boolean, a map)."""
    plain = str(yaml.safe_dump(text, width=math.inf, allow_unicode=True))
    if plain == f"{text}\n...\n":
        return text
    return str(yaml.safe_dump(text, default_style='"', width=math.inf, allow_unicode=True)
               ).rstrip("\n")


def _indent(text: str, spaces: int) -> str:
    return textwrap.indent(text, " " * spaces)
