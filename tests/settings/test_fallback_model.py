"""``action: downgrade`` and ``fallback_model`` in the YAML: one model or a list, required by
downgrade and refused with any other action, and each fallback one the budget's tenant may
send requests for (allow-list, price, upstream), checked at load with file, line and field.
The admin API's side is in ``tests/proxy/test_downgrade.py``."""

from __future__ import annotations

import pytest

from gateway.cost.checker import BudgetChecker
from gateway.cost.model import Budget, BudgetAction, Usage
from gateway.cost.tracker import InMemoryTracker
from gateway.errors import ConfigError, ConfigErrors
from gateway.settings.load import parse_settings
from gateway.settings.schema import Settings
from tests.settings.test_load import BASE, HASH_A

UPSTREAMS = """\
upstreams:
  main:
    base_url: "https://api.openai.com/v1"
    api_key: "sk-upstream"
    models: ["gpt-*", "in-house-*"]
pricing:
  in-house-large: {input: 1.0, output: 2.0}
"""
TENANTS = f"""\
tenants:
  acme:
    models: ["gpt-5*", "gpt-4o-mini", "in-house-*", "o3"]
    keys:
      - name: ci
        sha256: "{HASH_A}"
"""
HEAD = UPSTREAMS + TENANTS
FIRST_BUDGET_LINE = HEAD.count("\n") + 2


def load(budgets: str, limits: str = "") -> Settings:
    return parse_settings(HEAD + limits + "budgets:\n" + budgets, "test.yaml", {})


def errors(budgets: str, limits: str = "") -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as caught:
        load(budgets, limits)
    return caught.value.errors


def budget(fields: str) -> str:
    return f"  - {{name: b, tenant: acme, model: gpt-5, max_cost_per_day: 1, {fields}}}\n"


def test_one_fallback_or_an_ordered_list() -> None:
    settings = load(budget("action: downgrade, fallback_model: gpt-5-mini")
                    + budget("action: downgrade, fallback_model: [gpt-5-mini, gpt-4o-mini]")
                    .replace("name: b", "name: c"))
    one, two = settings.budgets
    assert one.action is BudgetAction.DOWNGRADE and one.fallback_model == ("gpt-5-mini",)
    assert two.fallback_model == ("gpt-5-mini", "gpt-4o-mini")


def test_a_fallback_the_budgets_own_glob_matches_is_fine() -> None:
    """A cost budget over gpt-5*: gpt-5-mini reserves less, so it may fit where gpt-5 did not."""
    [b] = load(budget("action: downgrade, fallback_model: gpt-5-mini")
               .replace("model: gpt-5,", 'model: "gpt-5*",')).budgets
    assert b.model == "gpt-5*" and b.fallback_model == ("gpt-5-mini",)


@pytest.mark.parametrize(("fields", "problem"), [
    ("action: downgrade", "action: downgrade needs fallback_model"),
    ("action: reject, fallback_model: gpt-5-mini",
     "only for action: downgrade (this budget's action is reject)"),
    ("fallback_model: gpt-5-mini", "only for action: downgrade (this budget's action is reject)"),
    ("action: throttle, fallback_model: gpt-5-mini", "this budget's action is throttle"),
    ("action: downgrade, fallback_model: gpt-4.1",
     "the model is not on tenant 'acme''s allow-list (tenants.acme.models)"),
    ("action: downgrade, fallback_model: in-house-small", "the model has no price"),
    ("action: downgrade, fallback_model: o3", "the model is served by no upstream"),
    ('action: downgrade, fallback_model: "gpt-5-*"', "the model is a glob"),
    ("action: downgrade, fallback_model: gpt-5", "the budget's own model"),
    ("action: downgrade, fallback_model: [gpt-5-mini, gpt-5-mini]", "entry 1 is listed twice"),
    ("action: downgrade, fallback_model: [gpt-5-mini, gpt-4.1]", "entry 1 is not on tenant"),
    ("action: downgrade, fallback_model: []", "must not be an empty list"),
    ("action: downgrade, fallback_model: 5", "expected a string"),
    ('action: downgrade, fallback_model: "gpt\\n5"', "U+000A"),
])
def test_fallback_problems_name_the_file_line_and_field(fields: str, problem: str) -> None:
    [error] = errors(budget(fields))
    assert error.file == "test.yaml" and error.line == FIRST_BUDGET_LINE
    assert error.field.startswith("budgets[0].fallback_model"), error
    assert problem in error.message, error.message


def test_at_most_limits_fallback_models_max() -> None:
    fallbacks = "[gpt-5-mini, gpt-5-nano, gpt-4o-mini]"
    [error] = errors(budget(f"action: downgrade, fallback_model: {fallbacks}"),
                     "limits: {fallback_models_max: 2}\n")
    assert "at most 2 models (limits.fallback_models_max), got 3" in error.message
    assert len(load(budget(f"action: downgrade, fallback_model: {fallbacks}")).budgets) == 1


def test_a_tenant_without_an_allow_list_may_fall_back_to_any_priced_routed_model() -> None:
    text = BASE["upstreams"] + BASE["tenants"] + (
        "budgets:\n  - {name: b, tenant: acme, model: gpt-5, max_cost_per_day: 1, "
        "action: downgrade, fallback_model: [gpt-5-mini, gpt-4.1-nano]}\n")
    [b] = parse_settings(text, "t.yaml", {}).budgets
    assert b.fallback_model == ("gpt-5-mini", "gpt-4.1-nano")


def test_stored_budgets_keep_their_fallbacks() -> None:
    """What the stores write (``to_dict``, JSON) and read back (``from_dict``)."""
    b = Budget(name="b", tenant="acme", max_cost_per_day=1.0, action=BudgetAction.DOWNGRADE,
               fallback_model=("gpt-5-mini", "gpt-4o-mini"))
    data = b.to_dict()
    assert data["action"] == "downgrade" and data["fallback_model"] == ["gpt-5-mini",
                                                                        "gpt-4o-mini"]
    assert Budget.from_dict(data) == b


async def test_the_library_checker_denies_the_model_and_names_its_fallbacks() -> None:
    b = Budget(name="b", max_tokens_per_hour=10, action=BudgetAction.DOWNGRADE,
               fallback_model=("gpt-5-mini",))
    decision = await BudgetChecker(InMemoryTracker()).check(b, Usage(total_tokens=20))
    assert not decision.allowed and "downgrade to gpt-5-mini" in decision.reason
