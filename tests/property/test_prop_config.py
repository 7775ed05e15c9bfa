"""Property tests: the YAML loader answers any document with Settings or ConfigErrors, and
every error names its file and field (an ops mistake must never surface as a traceback)."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import ConfigErrors
from gateway.settings.load import (
    BUDGET_FIELDS,
    KEY_FIELDS,
    PRICE_FIELDS,
    TENANT_FIELDS,
    TOP_LEVEL,
    UPSTREAM_FIELDS,
    parse_settings,
)
from gateway.settings.schema import Settings

BOUNDED = settings(max_examples=80, deadline=None, derandomize=True)
SOURCE = "prop.yaml"
ENV = {"PORT": "8080", "KEY": "sk-x", "WORD": "reject"}

# Keys the loader knows (so generated documents get past the top level) and some it does not.
KNOWN = (*TOP_LEVEL, *UPSTREAM_FIELDS, *PRICE_FIELDS, *TENANT_FIELDS, *KEY_FIELDS, *BUDGET_FIELDS)
KEYS = st.sampled_from(KNOWN) | st.text(max_size=8)
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats()
           | st.text(max_size=12) | st.sampled_from(
               ["${PORT}", "${KEY}", "${MISSING}", "${", "memory://", "redis://", "http://h",
                "reject", "throttle", "member", "llm", "*", "gpt-4o*", "1e3", "0x1f", "0o7",
                "1_000", ".inf", "-.inf", ".nan", "~", "yes", "2024-01-01", "12:30"]))
VALUES: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(KEYS, c, max_size=4),
    max_leaves=15,
)

VALID: dict[str, Any] = {
    "listen": "127.0.0.1:8080",
    "store": "memory://",
    "upstreams": {"openai": {"base_url": "https://api.openai.com/v1", "api_key": "sk-up"}},
    "pricing": {"gpt-4o-mini": {"input": 0.15, "output": 0.6}},
    "tenants": {"acme": {"models": ["gpt-4o*"], "keys": [
        {"name": "ci", "sha256": hashlib.sha256(b"secret").hexdigest(), "role": "admin"}]}},
    "budgets": [{"name": "daily", "tenant": "acme", "key": "ci", "max_cost_per_day": 5.0,
                 "max_tokens_per_hour": 1000, "alert_threshold": 0.8, "action": "throttle",
                 "max_wait_s": 5}],
    "alerts": {"webhook_url": "http://127.0.0.1:9000/hook"},
}


def _loads_or_names_every_error(text: str) -> Settings | None:
    try:
        return parse_settings(text, SOURCE, ENV)
    except ConfigErrors as exc:
        assert exc.errors, "ConfigErrors with no error in it"
        for error in exc.errors:
            assert error.file == SOURCE
            assert isinstance(error.field, str) and error.field
            assert isinstance(error.message, str) and error.message
            assert error.line is None or error.line >= 1
        return None


def test_the_valid_base_loads() -> None:
    assert _loads_or_names_every_error(yaml.safe_dump(VALID)) is not None


@BOUNDED
@given(st.dictionaries(KEYS, VALUES, max_size=8))
def test_random_mappings(document: dict[str, Any]) -> None:
    _loads_or_names_every_error(yaml.safe_dump(document))


@BOUNDED
@given(st.text(max_size=200))
def test_random_text(text: str) -> None:
    _loads_or_names_every_error(text)


@BOUNDED
@given(st.text(st.sampled_from(list("ab:-[]{}&*!|>'\"#%@`,? \n\t0123456789.$")), max_size=80))
def test_random_yaml_punctuation(text: str) -> None:
    _loads_or_names_every_error(text)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a document where a value sits."""
    found = [path] if path else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*path, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found += _paths(child, (*path, i))
    return found


PLACES = _paths(VALID)


@BOUNDED
@given(st.lists(st.tuples(st.sampled_from(PLACES), VALUES | st.just("DELETE")), max_size=4),
       st.dictionaries(KEYS, VALUES, max_size=2))
def test_a_valid_file_with_random_edits(
    edits: list[tuple[tuple[Any, ...], Any]], extra: dict[str, Any]
) -> None:
    document = copy.deepcopy(VALID)
    for path, value in edits:
        parent: Any = document
        try:
            for step in path[:-1]:
                parent = parent[step]
            if value == "DELETE":
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed or replaced this place
    document.update(extra)
    _loads_or_names_every_error(yaml.safe_dump(document))
