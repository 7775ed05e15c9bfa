"""One identity rule for YAML and API budgets, kept across reloads.

A budget is known by its ``id``: the admin API gives each one (``bud_...``); in the YAML it is
optional and the name stands in for it. Counters follow the identity, so an API budget, or a
YAML budget with an ``id``, keeps its usage through a rename and a change of scope (``key``,
``model``, ``domain``: the usage so far counts against the new scope), while renaming a YAML
budget that has no ``id`` starts it afresh: that is logged, with the way to avoid it. Names are
unique per tenant across the YAML and the API: a reload that gives a YAML budget the name of
an API budget is refused.
"""

from __future__ import annotations

import logging

from gateway.errors import ConfigError
from gateway.runtime import Runtime
from gateway.store.base import BudgetDefinitions, StoreError

log = logging.getLogger(__name__)


async def names_taken_by_api(runtime: Runtime, definitions: BudgetDefinitions
                             ) -> list[ConfigError]:
    """A YAML budget named as one of its tenant's API budgets: a problem of the new file."""
    problems = []
    budgets = runtime.settings.budgets
    for tenant in sorted({b.tenant for b in budgets}):
        try:
            _, api = await definitions.list(tenant)
        except StoreError as exc:  # the store will be right again; the file may be too
            log.warning("could not compare YAML budget names with API budgets: %s", exc)
            return []
        api_names = {b.name: b.ident for b in api}
        for i, budget in enumerate(budgets):
            if budget.tenant == tenant and budget.name in api_names:
                problems.append(ConfigError(
                    runtime.settings.source, None, f"budgets[{i}].name",
                    f"'{budget.name}' is the name of tenant '{tenant}''s API budget "
                    f"{api_names[budget.name]}; budget names are unique across the YAML and "
                    "the admin API: rename one"))
    return problems


def log_renames(old: Runtime, new: Runtime) -> None:
    """Says which YAML budgets a reload started afresh, as an operator would want to know."""
    before = {(b.tenant, b.ident): b for b in old.settings.budgets}
    after = {(b.tenant, b.ident): b for b in new.settings.budgets}
    for tenant in sorted({t for t, _ in before}):
        gone = sorted(i for t, i in before.keys() - after.keys() if t == tenant)
        added = sorted(i for t, i in after.keys() - before.keys() if t == tenant)
        for name in gone:
            replaced = f"replaced by {', '.join(repr(a) for a in added)}" if added else "removed"
            log.warning("budget '%s' of tenant '%s' %s: its usage stays with its old name (back "
                        "if the name comes back); give a YAML budget an `id:` to keep its usage "
                        "across renames", name, tenant, replaced)
