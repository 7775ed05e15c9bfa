"""The YAML contract: what loads, what is refused, and where the refusal points."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from gateway.cost.model import Budget, BudgetAction, Domain
from gateway.cost.price_data import shipped_table
from gateway.cost.pricing import Item, Price
from gateway.errors import ConfigError, ConfigErrors
from gateway.settings.load import load_settings, parse_settings
from gateway.settings.schema import Role, StoreErrorPolicy

ROOT = Path(__file__).resolve().parents[2]
HASH_A = hashlib.sha256(b"secret-a").hexdigest()
HASH_B = hashlib.sha256(b"secret-b").hexdigest()

# A minimal valid file, by section. A snippet that defines one of these sections replaces it;
# the others come first, so a snippet's own line numbers are offset by the base's length.
BASE = {
    "upstreams": """\
upstreams:
  openai:
    base_url: "https://api.openai.com/v1"
    api_key: "sk-upstream"
""",
    "tenants": f"""\
tenants:
  acme:
    keys:
      - name: ci
        sha256: "{HASH_A}"
""",
}


def document(snippet: str) -> tuple[str, int]:
    """The file text for ``snippet``, and how many lines precede the snippet in it."""
    snippet = textwrap.dedent(snippet).lstrip("\n")
    own = {line.split(":")[0] for line in snippet.splitlines() if line[:1].isalpha()}
    base = "".join(text for name, text in BASE.items() if name not in own)
    return base + snippet, base.count("\n")


def errors_of(text: str, env: dict[str, str] | None = None) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as caught:
        parse_settings(text, "test.yaml", env or {})
    assert all(e.file == "test.yaml" for e in caught.value.errors)
    return caught.value.errors


def test_the_example_config_loads() -> None:
    settings = load_settings(ROOT / "config" / "gateway.yaml", env={})
    assert settings.source.endswith("config/gateway.yaml")
    assert settings.listen == "127.0.0.1:8080"
    assert settings.store == "sqlite://gateway-state.db"
    assert [u.name for u in settings.upstreams] == ["mock"]
    assert settings.upstreams[0].base_url == "http://127.0.0.1:9000/v1"
    keys = {k.name: k for k in settings.tenants["acme"].keys}
    assert keys["acme-member"].sha256 == hashlib.sha256(b"sk-acme-demo-member").hexdigest()
    assert keys["acme-admin"].sha256 == hashlib.sha256(b"sk-acme-demo-admin").hexdigest()
    assert keys["acme-admin"].role is Role.ADMIN
    assert {b.name for b in settings.budgets} == {
        "acme-daily",
        "acme-member-hourly-tokens",
        "acme-monthly",
        "acme-gpt-4o-monthly",
        "acme-per-customer-daily",
    }
    monthly = next(b for b in settings.budgets if b.name == "acme-monthly")
    assert monthly.max_cost_per_month == 100.0
    assert monthly.alert_threshold == 0.8


def test_a_full_file_becomes_typed_settings() -> None:
    text, _ = document(
        f"""
        listen: "0.0.0.0:9999"
        store: "memory://?persist=state.json"
        on_store_error: allow
        max_body_bytes: 1000
        default_max_output_tokens: 256
        upstreams:
          local:
            base_url: "http://127.0.0.1:9000/v1/"
            api_key: ""
            models: ["llama-*"]
            timeout_s: 5
          openai:
            base_url: "https://api.openai.com/v1"
            api_key: "sk-x"
        tenants:
          acme:
            models: ["gpt-4o-mini"]
            keys:
              - name: ci
                sha256: "{HASH_A.upper()}"
              - name: boss
                sha256: "{HASH_B}"
                role: owner
        budgets:
          - name: daily
            tenant: acme
            key: ci
            model: "gpt-4o*"
            domain: embedding
            max_tokens_per_hour: 1000
            max_cost_per_day: 2
            alert_threshold: 0.5
            action: throttle
            max_wait_s: 1.5
            clamp_max_tokens: true
        alerts:
          webhook_url: "https://hooks.example.com/x?token=1"
        """
    )
    s = parse_settings(text, "conf.yaml", env={})
    assert s.source == "conf.yaml"
    assert (s.listen, s.store, s.on_store_error) == (
        "0.0.0.0:9999",
        "memory://?persist=state.json",
        StoreErrorPolicy.ALLOW,
    )
    assert (s.max_body_bytes, s.default_max_output_tokens) == (1000, 256)
    local, openai = s.upstreams  # file order: the first match wins at routing
    assert (local.base_url, local.api_key, local.models, local.timeout_s) == (
        "http://127.0.0.1:9000/v1",
        "",
        ("llama-*",),
        5.0,
    )
    assert (openai.models, openai.timeout_s) == (("*",), 600.0)
    acme = s.tenants["acme"]
    assert acme.models == ("gpt-4o-mini",)
    assert [(k.name, k.sha256, k.role) for k in acme.keys] == [
        ("ci", HASH_A, Role.MEMBER),
        ("boss", HASH_B, Role.OWNER),
    ]
    assert s.budgets == (
        Budget(
            name="daily",
            tenant="acme",
            key="ci",
            model="gpt-4o*",
            domain=Domain.EMBEDDING,
            max_tokens_per_hour=1000,
            max_cost_per_day=2.0,
            alert_threshold=0.5,
            action=BudgetAction.THROTTLE,
            max_wait_s=1.5,
            clamp_max_tokens=True,
            source="file",
        ),
    )
    assert s.alerts.webhook_url == "https://hooks.example.com/x?token=1"


def test_defaults_for_what_the_file_leaves_out() -> None:
    text, _ = document("budgets:\n  - {name: b, tenant: acme, max_tokens_per_day: 1}\n")
    s = parse_settings(text, "t.yaml", env={})
    assert (s.listen, s.store, s.on_store_error) == ("127.0.0.1:8080", "sqlite://gateway-state.db",
                                                     "reject")
    assert s.tenants["acme"].models is None
    (budget,) = s.budgets
    assert (budget.action, budget.max_wait_s, budget.clamp_max_tokens) == ("reject", 30.0, False)
    assert (budget.key, budget.model, budget.domain, budget.alert_threshold) == (None,) * 4


def test_merge_keys_share_budget_defaults() -> None:
    text, _ = document(
        """
        budgets:
          - &base {name: one, tenant: acme, max_cost_per_day: 1, action: alert}
          - <<: *base
            name: two
        """
    )
    one, two = parse_settings(text, "t.yaml", env={}).budgets
    assert (two.name, two.max_cost_per_day, two.action) == ("two", 1.0, BudgetAction.ALERT)
    assert one.name == "one"


# --- environment variables ----------------------------------------------------------------


def test_env_variables_are_substituted_anywhere_in_a_value() -> None:
    text, _ = document(
        """
        upstreams:
          openai:
            base_url: "https://${HOST}/v1"
            api_key: ${KEY}
            timeout_s: ${TIMEOUT}
        """
    )
    env = {"HOST": "api.example.com", "KEY": "12345", "TIMEOUT": "7.5"}
    (up,) = parse_settings(text, "t.yaml", env=env).upstreams
    assert up.base_url == "https://api.example.com/v1"
    assert up.api_key == "12345"  # a string field stays a string, whatever the value looks like
    assert up.timeout_s == 7.5  # an unquoted reference takes the type of its value


def test_env_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_TEST_KEY", "sk-from-env")
    text, _ = document(
        'upstreams:\n  o:\n    base_url: "http://h"\n    api_key: "${GW_TEST_KEY}"\n'
    )
    assert parse_settings(text, "t.yaml").upstreams[0].api_key == "sk-from-env"


def test_a_missing_env_variable_is_named_with_its_field_and_line() -> None:
    text, offset = document(
        """
        upstreams:
          openai:
            base_url: "https://api.openai.com/v1"
            api_key: "${OPENAI_API_KEY}"
        """
    )
    (error,) = errors_of(text, env={"OTHER": "x"})
    assert "OPENAI_API_KEY" in error.message
    assert error.field == "upstreams.openai.api_key"
    assert error.line == offset + 4


def test_a_quoted_reference_stays_a_string() -> None:
    text, offset = document('max_body_bytes: "${SIZE}"\n')
    (error,) = errors_of(text, env={"SIZE": "100"})
    assert (error.field, error.line) == ("max_body_bytes", offset + 1)
    assert "expected an integer" in error.message


# --- refusals: (snippet, a substring of the field, the line within the snippet) ------------

REFUSED = [
    pytest.param("listne: '127.0.0.1:8080'\n", "listne", 1, id="unknown-top-level-key"),
    pytest.param("listen: '127.0.0.1:0'\n", "listen", 1, id="port-zero"),
    pytest.param("listen: '127.0.0.1'\n", "listen", 1, id="no-port"),
    pytest.param("store: 'postgres://db'\n", "store", 1, id="store-scheme"),
    pytest.param("store: 'memory://?keep=1'\n", "store", 1, id="store-memory-option"),
    pytest.param("store: 'redis://'\n", "store", 1, id="store-redis-no-host"),
    pytest.param("on_store_error: ignore\n", "on_store_error", 1, id="store-error-policy"),
    pytest.param("max_body_bytes: 0\n", "max_body_bytes", 1, id="body-zero"),
    pytest.param("max_body_bytes: '1000'\n", "max_body_bytes", 1, id="body-string"),
    pytest.param("max_body_bytes: true\n", "max_body_bytes", 1, id="body-bool"),
    pytest.param("default_max_output_tokens: 1.5\n", "default_max_output_tokens", 1, id="float"),
    pytest.param("upstreams: {}\n", "upstreams", 1, id="no-upstream"),
    pytest.param("upstreams: [a]\n", "upstreams", 1, id="upstreams-list"),
    pytest.param(
        "upstreams:\n  o:\n    base_url: ftp://h\n    api_key: ''\n",
        "upstreams.o.base_url",
        3,
        id="base-url-scheme",
    ),
    pytest.param(
        "upstreams:\n  o:\n    base_url: http://h\n", "upstreams.o.api_key", 2, id="no-api-key"
    ),
    pytest.param(
        "upstreams:\n  o: {base_url: 'http://h', api_key: k, timeout_s: 0}\n",
        "upstreams.o.timeout_s",
        2,
        id="timeout-zero",
    ),
    pytest.param(
        "upstreams:\n  o: {base_url: 'http://h', api_key: k, models: '*'}\n",
        "upstreams.o.models",
        2,
        id="models-not-a-list",
    ),
    pytest.param(
        "upstreams:\n  o: {base_url: 'http://h', api_key: k, model: ['*']}\n",
        "upstreams.o.model",
        2,
        id="unknown-upstream-key",
    ),
    pytest.param("pricing:\n  m: {input: -1}\n", "pricing.m.input", 2, id="price-negative"),
    pytest.param("pricing:\n  m: {output: 1}\n", "pricing.m.input", 2, id="price-no-input"),
    pytest.param(
        "pricing:\n  m:\n    input: 1\n    ouput: 2\n", "pricing.m.ouput", 4, id="price-typo"
    ),
    pytest.param(
        'pricing:\n  "gpt-4.1": {input: x}\n', 'pricing["gpt-4.1"].input', 2, id="price-str"
    ),
    pytest.param(
        "tenants:\n  t:\n    keys:\n      - {name: k, sha256: abc}\n",
        "tenants.t.keys[0].sha256",
        4,
        id="sha256-short",
    ),
    pytest.param(
        f"tenants:\n  t:\n    keys:\n      - name: k\n        sha256: '{'z' * 64}'\n",
        "tenants.t.keys[0].sha256",
        5,
        id="sha256-not-hex",
    ),
    pytest.param(
        f"tenants:\n  t:\n    keys:\n      - {{name: k, sha256: '{HASH_A}', role: root}}\n",
        "tenants.t.keys[0].role",
        4,
        id="role",
    ),
    pytest.param(
        f"tenants:\n  t:\n    keys:\n      - {{name: k, sha256: '{HASH_A}'}}\n"
        f"      - {{name: k, sha256: '{HASH_B}'}}\n",
        "tenants.t.keys[1].name",
        5,
        id="duplicate-key-name",
    ),
    pytest.param(
        f"tenants:\n  t:\n    keys:\n      - {{name: a, sha256: '{HASH_A}'}}\n"
        f"  u:\n    keys:\n      - {{name: b, sha256: '{HASH_A.upper()}'}}\n",
        "tenants.u.keys[0].sha256",
        7,
        id="duplicate-hash-across-tenants",
    ),
    pytest.param("tenants:\n  t:\n    models: gpt-4o\n", "tenants.t.models", 3, id="t-models"),
    pytest.param("tenants:\n  t:\n    key: []\n", "tenants.t.key", 3, id="unknown-tenant-key"),
    pytest.param("budgets: {name: b}\n", "budgets", 1, id="budgets-not-a-list"),
    pytest.param("budgets:\n  - name: b\n    tenant: acme\n", "budgets[0]", 2, id="no-limit"),
    pytest.param(
        "budgets:\n  - name: b\n    max_cost_per_day: 1\n",
        "budgets[0].tenant",
        2,
        id="budget-no-tenant",
    ),
    pytest.param(
        "budgets:\n  - name: b\n    tenant: acme\n    max_tokens_per_hour: -5\n",
        "budgets[0].max_tokens_per_hour",
        4,
        id="negative-tokens",
    ),
    pytest.param(  # past 2**53: not exact in Redis's Lua numbers, and reservations overflow
        "budgets:\n  - name: b\n    tenant: acme\n    max_tokens_per_day: 9223372036854775808\n",
        "budgets[0].max_tokens_per_day",
        4,
        id="tokens-beyond-redis",
    ),
    pytest.param(
        "budgets:\n  - name: b\n    tenant: acme\n    max_cost_per_month: -0.01\n",
        "budgets[0].max_cost_per_month",
        4,
        id="negative-cost",
    ),
    pytest.param(
        "budgets:\n  - {name: b, tenant: acme, max_tokens_per_day: '100'}\n",
        "budgets[0].max_tokens_per_day",
        2,
        id="tokens-as-string",
    ),
    pytest.param(
        "budgets:\n  - {name: b, tenant: acme, max_tokens_per_day: 1.5}\n",
        "budgets[0].max_tokens_per_day",
        2,
        id="tokens-as-float",
    ),
    pytest.param(
        "budgets:\n  - name: b\n    tenant: acme\n    max_token_per_hour: 5\n",
        "budgets[0].max_token_per_hour",
        4,
        id="limit-typo",
    ),
    pytest.param(
        "budgets:\n  - name: b\n    tenant: acme\n    max_cost_per_day: 1\n"
        "    alert_threshold: 1.5\n",
        "budgets[0].alert_threshold",
        5,
        id="threshold-above-1",
    ),
    pytest.param(
        "budgets:\n  - {name: b, tenant: acme, max_cost_per_day: 1, alert_threshold: -0.1}\n",
        "budgets[0].alert_threshold",
        2,
        id="threshold-below-0",
    ),
    pytest.param(
        "budgets:\n  - name: b\n    tenant: acme-corp\n    max_cost_per_day: 1\n",
        "budgets[0].tenant",
        3,
        id="unknown-tenant",
    ),
    pytest.param(
        "budgets:\n  - name: b\n    tenant: acme\n    key: cd\n    max_cost_per_day: 1\n",
        "budgets[0].key",
        4,
        id="unknown-key",
    ),
    pytest.param(
        "budgets:\n  - {name: b, tenant: acme, max_cost_per_day: 1}\n"
        "  - {name: c, tenant: acme, max_cost_per_day: 1}\n"
        "  - {name: b, tenant: acme, max_cost_per_day: 2}\n",
        "budgets[2].name",
        4,
        id="duplicate-budget-name",
    ),
    pytest.param(
        "budgets:\n  - {name: b, tenant: acme, max_cost_per_day: 1, domain: chat}\n",
        "budgets[0].domain",
        2,
        id="domain",
    ),
    pytest.param(
        "budgets:\n  - {name: b, tenant: acme, max_cost_per_day: 1, action: block}\n",
        "budgets[0].action",
        2,
        id="action",
    ),
    pytest.param(
        "budgets:\n  - {name: b, tenant: acme, max_cost_per_day: 1, max_wait_s: -1}\n",
        "budgets[0].max_wait_s",
        2,
        id="wait-negative",
    ),
    pytest.param(
        "budgets:\n  - {name: b, tenant: acme, max_cost_per_day: 1, clamp_max_tokens: 'yes'}\n",
        "budgets[0].clamp_max_tokens",
        2,
        id="clamp-string",
    ),
    pytest.param("alerts:\n  webhook_url: hooks\n", "alerts.webhook_url", 2, id="webhook-url"),
    pytest.param("alerts:\n  webhook: 'http://h'\n", "alerts.webhook", 2, id="alerts-typo"),
    pytest.param(
        "listen: '127.0.0.1:8080'\nstore: 'memory://'\nlisten: '127.0.0.1:8081'\n",
        "listen",
        3,
        id="duplicate-mapping-key",
    ),
]


@pytest.mark.parametrize(("snippet", "field", "line"), REFUSED)
def test_refused_with_field_and_line(snippet: str, field: str, line: int) -> None:
    text, offset = document(snippet)
    errors = errors_of(text)
    assert any(field in e.field and e.line == offset + line for e in errors), errors


def test_an_unknown_field_suggests_the_close_one() -> None:
    text, _ = document("budgets:\n  - {name: b, tenant: acme, max_token_per_hour: 5}\n")
    messages = [e.message for e in errors_of(text)]
    assert "unknown field 'max_token_per_hour'; did you mean 'max_tokens_per_hour'?" in messages


@pytest.mark.parametrize(
    ("text", "field", "line"),
    [
        ("listen: [\n", "(syntax)", 2),
        ("upstreams:\n  a: b\n c: d\n", "(syntax)", 3),
        ("", "(document)", 1),
        ("# only a comment\n", "(document)", 1),
        ("- a\n- b\n", "(document)", 1),
    ],
)
def test_unreadable_documents_are_one_error(text: str, field: str, line: int) -> None:
    (error,) = errors_of(text)
    assert (error.field, error.line) == (field, line)


def test_every_problem_is_reported_at_once_in_file_order() -> None:
    text = textwrap.dedent(
        """\
        listen: "nowhere"
        upstreams:
          o: {base_url: "http://h", api_key: "${NOPE}"}
        tenants:
          acme:
            keys:
              - {name: ci, sha256: "short"}
        budgets:
          - {name: b, tenant: acme}
          - {name: b, tenant: ghost, max_cost_per_day: -1}
        """
    )
    errors = errors_of(text)
    found = [(e.line, e.field) for e in errors]
    assert found == [
        (1, "listen"),
        (3, "upstreams.o.api_key"),
        (7, "tenants.acme.keys[0].sha256"),
        (9, "budgets[0]"),
        (10, "budgets[1].name"),
        (10, "budgets[1].tenant"),
        (10, "budgets[1].max_cost_per_day"),
    ]
    assert str(errors[0]).startswith("test.yaml:1: listen: ")


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors) as caught:
        load_settings(tmp_path / "nope.yaml")
    (error,) = caught.value.errors
    assert error.file == str(tmp_path / "nope.yaml")
    assert "cannot read" in error.message


# --- pricing --------------------------------------------------------------------------------

SHIPPED_MODELS = [
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "gpt-4o",
    "gpt-4o-mini",
    "o1",
    "o3",
    "o3-mini",
    "o4-mini",
    "gpt-4-turbo",
    "gpt-3.5-turbo",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
]


def test_the_shipped_pricing_covers_the_common_models() -> None:
    table = shipped_table({})
    for model in SHIPPED_MODELS:
        price = table.lookup(model)
        assert price is not None and price.rates[Item.INPUT].pico > 0, model
    assert table.lookup("gpt-4o-mini-2024-07-18") == table.lookup("gpt-4o-mini")
    assert table.lookup("gpt-4o-2024-05-13") != table.lookup("gpt-4o")  # launch price was higher
    embedding = table.lookup("text-embedding-3-small")
    assert embedding is not None and embedding.rates[Item.OUTPUT].pico == 0


def test_the_file_overrides_and_extends_the_shipped_pricing() -> None:
    text, _ = document(
        """
        pricing:
          gpt-4o-mini: {input: 1, output: 2}
          "my-model-*": {input: 0.5, cached_input: 0.1}
        """
    )
    prices = parse_settings(text, "t.yaml", env={}).pricing
    assert prices["gpt-4o-mini"] == Price.per_million(input=1.0, output=2.0)  # whole, not merged
    assert prices["my-model-*"] == Price.per_million(input=0.5, cached_input=0.1, output=0.0)
    assert "gpt-4o" not in prices  # the shipped data answers for it


@pytest.mark.parametrize("text", [
    "max_body_bytes: 0x_",
    "max_body_bytes: 0b_",
    "max_body_bytes: !!int abc",
    "default_max_output_tokens: !!float abc",
    "[" * 2000,
])
def test_text_yaml_cannot_convert_is_a_config_error_not_a_crash(text: str) -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_settings(text, "f.yaml", {})
    assert all(e.file == "f.yaml" and e.field for e in info.value.errors)


@pytest.mark.parametrize("query", ["max_connections=0", "max_connections=x", "wait_s=-1",
                                   "wait_s=soon"])
def test_a_bad_store_bound_is_a_config_error(query: str) -> None:
    text = ('store: "redis://127.0.0.1:6379/0?' + query + '"\n'
            'upstreams:\n  u: {base_url: "http://127.0.0.1:1/v1", api_key: k}\n')
    with pytest.raises(ConfigErrors) as refused:
        parse_settings(text, "t.yaml", env={})
    assert "store" in str(refused.value) and query.split("=")[0] in str(refused.value)


@pytest.mark.parametrize(("store", "says"), [
    ("redis://a:6379,b:6379/0", "several hosts are for redis+cluster://"),
    ("redis+cluster://a:7000,:7001", "host:port"),
    ("redis+cluster://a:7000,b:port", "host:port"),
    ("redis+cluster://a:7000,", "host:port"),
])
def test_a_bad_store_host_list_is_a_config_error(store: str, says: str) -> None:
    text = (f'store: "{store}"\n'
            'upstreams:\n  u: {base_url: "http://127.0.0.1:1/v1", api_key: k}\n')
    with pytest.raises(ConfigErrors) as refused:
        parse_settings(text, "t.yaml", env={})
    assert says in str(refused.value)


def test_a_cluster_named_by_several_seed_nodes_is_accepted() -> None:
    text = ('store: "redis+cluster://10.0.0.1:7000,10.0.0.2:7000?max_connections=8"\n'
            'upstreams:\n  u: {base_url: "http://127.0.0.1:1/v1", api_key: k}\n')
    assert parse_settings(text, "t.yaml", env={}).store.startswith("redis+cluster://")


@pytest.mark.parametrize(("tenants", "problem"), [
    ('"": {keys: []}', "tenant name must not be empty"),
    ('"ac\\u202eme": {keys: []}', "tenant name must be printable: U+202E"),
    ('acme: {keys: [{name: "k\\tx", sha256: "' + "a" * 64 + '"}]}', "must be printable: U+0009"),
])
def test_tenant_and_key_names_are_printable_and_not_empty(tenants: str, problem: str) -> None:
    """A name that cannot be shown or logged as it is (a log line, a report's heading) is a
    configuration error naming the field, as budget names are."""
    text = ('upstreams: {u: {base_url: "http://127.0.0.1:9/v1", api_key: k}}\n'
            f"tenants: {{{tenants}}}\n")
    with pytest.raises(ConfigErrors) as caught:
        parse_settings(text, "t.yaml", env={})
    assert problem in str(caught.value)
