"""The YAML side of the budget rules (``gateway/settings/checks.py``): names of at most
``limits.budget_name_max`` printable characters, model globs that are well formed, ``max_wait_s``
at most ``limits.max_wait_s``. The admin API's side is ``tests/admin/test_api_budget_rules.py``."""

from __future__ import annotations

import fnmatch

import pytest

from gateway.errors import ConfigError, ConfigErrors
from gateway.settings import checks
from gateway.settings.load import parse_settings
from gateway.settings.schema import LimitSettings, Settings
from tests.settings.test_load import BASE

HEAD = BASE["upstreams"] + BASE["tenants"]
FIRST_BUDGET_LINE = HEAD.count("\n") + 2


def load(budgets: str, limits: str = "") -> Settings:
    return parse_settings(HEAD + limits + "budgets:\n" + budgets, "test.yaml", {})


def errors(budgets: str, limits: str = "") -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as caught:
        load(budgets, limits)
    return caught.value.errors


def budget(fields: str) -> str:
    name = "" if fields.startswith("name:") else "name: b, "
    return f"  - {{{name}tenant: acme, max_cost_per_day: 1, {fields}}}\n"


@pytest.mark.parametrize(("name", "code_point"), [
    ('"a\\0b"', "U+0000"),
    ('"daily\\nX-Evil: 1"', "U+000A"),
    ('"tab\\there"', "U+0009"),
    ('"\\e[31mred"', "U+001B"),
    ('"c1\\x85"', "U+0085"),
    ('"abc\\u202Egpj.exe"', "U+202E"),
    ('"line\\u2028sep"', "U+2028"),
    ('"zero\\u200Bwidth"', "U+200B"),
    ('"no\\_break"', "U+00A0"),
])
def test_a_budget_name_must_be_printable(name: str, code_point: str) -> None:
    [error] = errors(f"  - {{name: {name}, tenant: acme, max_cost_per_day: 1}}\n")
    assert error.field == "budgets[0].name" and error.line == FIRST_BUDGET_LINE
    assert code_point in error.message and "printable" in error.message
    assert "X-Evil" not in error.message


def test_printable_names_of_any_script_are_fine() -> None:
    names = ["team a: daily", "équipe-budget", "予算 月次", "ops/team-42 (EU)"]
    settings = load("".join(f"  - {{name: '{n}', tenant: acme, max_cost_per_day: 1}}\n"
                            for n in names))
    assert [b.name for b in settings.budgets] == names


def test_a_budget_name_is_at_most_budget_name_max_characters() -> None:
    assert load(budget("name: " + "n" * 128)).budgets[0].name == "n" * 128
    [error] = errors(budget("name: " + "n" * 129))
    assert error.field == "budgets[0].name"
    assert error.message == "at most 128 characters (limits.budget_name_max), got 129"
    limits = "limits: {budget_name_max: 8}\n"
    assert load(budget("name: eight888"), limits).budgets[0].name == "eight888"
    [error] = errors(budget("name: nine99999"), limits)
    assert "at most 8 characters" in error.message


@pytest.mark.parametrize("glob", ["[[[[", "gpt-4o-[mini", "gpt-[45]o-[", "[!", "[]", "[!]"])
def test_an_unclosed_bracket_in_a_budget_glob_is_refused(glob: str) -> None:
    [error] = errors(budget(f'model: "{glob}"'))
    assert error.field == "budgets[0].model" and error.line == FIRST_BUDGET_LINE
    assert "never closed" in error.message


@pytest.mark.parametrize(("glob", "matches", "misses"), [
    ("gpt-4o-[0-9]*", "gpt-4o-2024", "gpt-4o-mini"),
    ("[[]x", "[x", "x"),  # a literal '[' is a class of one
    ("a[]]b", "a]b", "ab"),  # a ']' first in a class is a member
    ("a[!]]b", "acb", "a]b"),
    ("gpt-4o]", "gpt-4o]", "gpt-4o"),  # a ']' outside a class is itself
])
def test_well_formed_globs_load_and_mean_what_fnmatch_says(
    glob: str, matches: str, misses: str
) -> None:
    [loaded] = load(budget(f'model: "{glob}"')).budgets
    assert loaded.model == glob
    assert fnmatch.fnmatchcase(matches, glob) and not fnmatch.fnmatchcase(misses, glob)


def test_a_control_character_in_a_glob_is_refused() -> None:
    [error] = errors(budget('model: "gpt-4o\\r\\n*"'))
    assert error.field == "budgets[0].model" and "U+000D" in error.message


def test_max_wait_s_is_at_most_limits_max_wait_s() -> None:
    assert load(budget("max_wait_s: 600")).budgets[0].max_wait_s == 600
    for value in ("600.5", "1.0e+300"):
        [error] = errors(budget(f"max_wait_s: {value}"))
        assert error.field == "budgets[0].max_wait_s" and error.line == FIRST_BUDGET_LINE
        assert error.message.startswith("at most 600 s (limits.max_wait_s), got ")
    [error] = errors(budget("max_wait_s: .inf"))
    assert error.message == "must be a finite number"
    raised = "limits: {max_wait_s: 3600}\n"
    assert load(budget("max_wait_s: 3600"), raised).budgets[0].max_wait_s == 3600


def test_a_lower_cap_lowers_the_default_wait() -> None:
    """A budget that sets no max_wait_s waits 30 s, or the cap if that is lower: a cap below
    30 s does not make every budget an error."""
    assert load(budget("action: throttle")).budgets[0].max_wait_s == 30
    lowered = "limits: {max_wait_s: 5}\n"
    assert load(budget("action: throttle"), lowered).budgets[0].max_wait_s == 5
    [error] = errors(budget("max_wait_s: 6"), lowered)
    assert error.message == "at most 5 s (limits.max_wait_s), got 6"


def test_every_rule_broken_at_once_is_reported_at_once() -> None:
    found = errors(budget('name: "x\\0", model: "[[", max_wait_s: 601')
                   + budget("name: " + "y" * 200))
    assert [e.field for e in found] == ["budgets[0].name", "budgets[0].model",
                                        "budgets[0].max_wait_s", "budgets[1].name"]


def test_the_checks_never_repeat_the_value() -> None:
    limits = LimitSettings()
    hostile = "evil\r\nX-Injected: 1\u202e" + "z" * 1000
    for problem in (checks.name_problem(hostile, limits), checks.glob_problem(hostile),
                    checks.unprintable(hostile)):
        assert problem is not None
        assert "X-Injected" not in problem and "\r" not in problem and "zzz" not in problem
