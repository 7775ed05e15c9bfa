"""``operators:``, the platform team's keys: checked as tenant keys are (a printable, unique
name; a sha256 unique across operators and every tenant key), with a role of their own."""

from __future__ import annotations

import hashlib

import pytest

from gateway.errors import ConfigErrors
from gateway.settings.load import parse_settings
from gateway.settings.schema import OperatorRole, OperatorSettings

HASH_A = hashlib.sha256(b"secret-a").hexdigest()
HASH_B = hashlib.sha256(b"secret-b").hexdigest()
HASH_C = hashlib.sha256(b"secret-c").hexdigest()
BASE = f"""\
upstreams:
  openai: {{base_url: "https://api.openai.com/v1", api_key: k}}
tenants:
  acme:
    keys:
      - {{name: ci, sha256: "{HASH_A}"}}
"""
BASE_LINES = BASE.count("\n")


def test_operators_load_with_their_roles_viewer_by_default() -> None:
    settings = parse_settings(BASE + f"""\
operators:
  - {{name: finance, sha256: "{HASH_B.upper()}"}}
  - {{name: platform, sha256: "{HASH_C}", role: editor}}
""", "test.yaml", env={})
    assert settings.operators == (OperatorSettings("finance", HASH_B, OperatorRole.VIEWER),
                                  OperatorSettings("platform", HASH_C, OperatorRole.EDITOR))


def test_no_operators_is_none() -> None:
    assert parse_settings(BASE, "test.yaml", env={}).operators == ()


@pytest.mark.parametrize(("snippet", "field", "line", "words"), [
    pytest.param(f"operators:\n  - {{name: o, sha256: '{HASH_B}', role: root}}\n",
                 "operators[0].role", 2, "viewer | editor", id="unknown-role"),
    pytest.param(f"operators:\n  - {{name: o, sha256: '{HASH_B}', role: admin}}\n",
                 "operators[0].role", 2, "viewer | editor", id="a-tenant-role"),
    pytest.param("operators:\n  - {name: o, sha256: abc}\n", "operators[0].sha256", 2,
                 "64 hex characters", id="sha256-short"),
    pytest.param(f"operators:\n  - {{name: o, sha256: '{'z' * 64}'}}\n", "operators[0].sha256",
                 2, "64 hex characters", id="sha256-not-hex"),
    pytest.param("operators:\n  - {name: o}\n", "operators[0].sha256", 2, "required",
                 id="no-sha256"),
    pytest.param(f"operators:\n  - {{sha256: '{HASH_B}'}}\n", "operators[0].name", 2,
                 "required", id="no-name"),
    pytest.param(f"operators:\n  - {{name: \"o\\u202e\", sha256: '{HASH_B}'}}\n",
                 "operators[0].name", 2, "printable", id="name-unprintable"),
    pytest.param(f"operators:\n  - {{name: o, sha256: '{HASH_B}'}}\n"
                 f"  - {{name: o, sha256: '{HASH_C}'}}\n", "operators[1].name", 3,
                 "duplicate operator name", id="duplicate-name"),
    pytest.param(f"operators:\n  - {{name: o, sha256: '{HASH_B}'}}\n"
                 f"  - {{name: p, sha256: '{HASH_B.upper()}'}}\n", "operators[1].sha256", 3,
                 "operators[0]", id="duplicate-hash"),
    pytest.param(f"operators:\n  - {{name: o, sha256: '{HASH_A}'}}\n", "operators[0].sha256",
                 2, "tenants.acme.keys[0]", id="hash-of-a-tenant-key"),
    pytest.param(f"operators:\n  - {{name: o, sha256: '{HASH_B}', tenant: acme}}\n",
                 "operators[0].tenant", 2, "unknown", id="unknown-field"),
    pytest.param("operators: {name: o}\n", "operators", 1, "list", id="not-a-list"),
])
def test_bad_operators_are_refused_with_line_and_field(snippet: str, field: str, line: int,
                                                       words: str) -> None:
    with pytest.raises(ConfigErrors) as caught:
        parse_settings(BASE + snippet, "test.yaml", env={})
    (error,) = caught.value.errors
    assert (error.field, error.line) == (field, BASE_LINES + line)
    assert words in error.message


def test_no_tenant_may_be_named_all() -> None:
    with pytest.raises(ConfigErrors) as caught:
        parse_settings(BASE + f"  all:\n    keys: [{{name: k, sha256: '{HASH_B}'}}]\n",
                       "test.yaml", env={})
    (error,) = caught.value.errors
    assert error.field == "tenants.all" and "?tenant=all" in error.message


def test_the_example_config_documents_its_demo_operators() -> None:
    """Like the tenant demo keys: the secret in a comment, its sha256 in the file."""
    from pathlib import Path

    from gateway.settings.load import load_settings

    config = Path(__file__).resolve().parents[2] / "config" / "gateway.yaml"
    settings = load_settings(config, env={})
    text = config.read_text()
    for operator in settings.operators:
        secret = f"sk-ops-demo-{operator.role.value}"
        assert f"# demo secret: {secret}" in text
        assert operator.sha256 == hashlib.sha256(secret.encode()).hexdigest()
    assert [op.role for op in settings.operators] == [OperatorRole.VIEWER, OperatorRole.EDITOR]
