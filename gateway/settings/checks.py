"""The rules a budget's own fields meet, wherever the budget comes from: the YAML loader
(``load.py``) and the admin API (through ``load.parse_budget``) both call these.

Each check returns what is wrong, or ``None``. A message never repeats the offending value (it
may be long, or carry control characters into a log line); it names a character by its code
point.
"""

from __future__ import annotations

import fnmatch
import math
import re

from gateway.cost.model import Budget, BudgetAction
from gateway.cost.pricing import is_glob
from gateway.settings.models import ModelAccess
from gateway.settings.schema import LimitSettings


def unprintable(value: str) -> str | None:
    """Printable as Python's ``str.isprintable`` says: no control characters (C0, C1: NUL, CR,
    LF, tab...), no format characters (bidi controls such as U+202E, zero-width characters), no
    line or paragraph separators, no space other than U+0020."""
    if value.isprintable():
        return None
    bad = next(c for c in value if not c.isprintable())
    return (f"must be printable: U+{ord(bad):04X} at character {value.index(bad) + 1} is a "
            "control, format or separator character")


def name_problem(name: str, limits: LimitSettings) -> str | None:
    return bounded_problem(name, limits.budget_name_max, "limits.budget_name_max")


def bounded_problem(value: str, maximum: int, setting: str) -> str | None:
    """A name or id: at most ``maximum`` characters (``setting`` says where that is set), and
    printable."""
    if len(value) > maximum:
        return f"at most {maximum} characters ({setting}), got {len(value)}"
    return unprintable(value)


def glob_problem(pattern: str) -> str | None:
    """A model glob: printable (a model name that is not can never be asked for) and well
    formed. fnmatch reads an unclosed ``[`` as a literal character, which is never what was
    meant, so it is refused here."""
    problem = unprintable(pattern) or _unclosed_bracket(pattern)
    if problem is not None:
        return problem
    try:
        re.compile(fnmatch.translate(pattern))
    except re.error as exc:
        return f"not a valid glob: {exc.msg}"
    return None


def _unclosed_bracket(pattern: str) -> str | None:
    """Brackets read as fnmatch reads them: ``[!...]`` negates, a ``]`` first is a member."""
    i, n = 0, len(pattern)
    while i < n:
        if pattern[i] != "[":
            i += 1
            continue
        j = i + 1
        if j < n and pattern[j] == "!":
            j += 1
        if j < n and pattern[j] == "]":
            j += 1
        j = pattern.find("]", j)
        if j < 0:
            return (f"not a valid glob: the '[' at character {i + 1} is never closed "
                    "(write [[] for a literal '[')")
        i = j + 1
    return None


def wait_problem(max_wait_s: float, limits: LimitSettings) -> str | None:
    """A budget's throttle wait (a number that is not finite is the reader's to refuse)."""
    if math.isfinite(max_wait_s) and max_wait_s > limits.max_wait_s:
        return f"at most {limits.max_wait_s:g} s (limits.max_wait_s), got {max_wait_s:g}"
    return None


def fallback_problems(budget: Budget, limits: LimitSettings, access: ModelAccess | None
                      ) -> list[str]:
    """A budget's ``fallback_model``: required by ``action: downgrade`` and refused with any
    other action; at most ``limits.fallback_models_max`` models, each a model name (not a
    glob), named once, not the budget's own model, and one its tenant may send requests for
    (allowed, priced, routed), where ``access`` says (the file and the API both know)."""
    fallbacks = budget.fallback_model
    if budget.action is BudgetAction.DOWNGRADE and not fallbacks:
        return ["action: downgrade needs fallback_model: the model (or list of models, tried "
                "in order) that serves a request instead of denying it"]
    if fallbacks is None:
        return []
    if budget.action is not BudgetAction.DOWNGRADE:
        return [f"only for action: downgrade (this budget's action is {budget.action.value})"]
    problems = []
    if len(fallbacks) > limits.fallback_models_max:
        problems.append(f"at most {limits.fallback_models_max} models "
                        f"(limits.fallback_models_max), got {len(fallbacks)}")
    for i, model in enumerate(fallbacks):
        problem = _fallback_problem(budget, model, fallbacks[:i], access)
        if problem is not None:
            who = "the model" if len(fallbacks) == 1 else f"entry {i}"
            problems.append(f"{who} {problem}")
    return problems


def _fallback_problem(budget: Budget, model: str, earlier: tuple[str, ...],
                      access: ModelAccess | None) -> str | None:
    problem = unprintable(model)
    if problem is not None:
        return problem
    if is_glob(model):
        return "is a glob; name one model, the one the request is sent to"
    if model in earlier:
        return "is listed twice"
    if model == budget.model:
        return "is the budget's own model, the one it denies"
    return None if access is None else access.unusable(budget.tenant, model)
