"""API-created budgets in the embedded store: one process, so each call is atomic as written."""

from __future__ import annotations

from gateway.cost.model import Budget
from gateway.store.snapshot import typed


def stored_id(budget: Budget) -> str:
    """A stored budget needs an id; ``_``-prefixed ids are kept for the stores' own fields."""
    if not budget.id or budget.id.startswith("_"):
        raise ValueError(f"budget {budget.name!r}: a stored budget needs an id not starting "
                         f"with '_', got {budget.id!r}")
    return budget.id


class MemoryBudgetDefinitions:
    """Per tenant: budgets by id in creation order, and a version every change raises."""

    def __init__(self) -> None:
        self._budgets: dict[str, dict[str, Budget]] = {}
        self._versions: dict[str, int] = {}

    async def put(self, budget: Budget) -> int:
        """Replacing keeps the budget's place (a dict keeps a key's first position)."""
        budget_id = stored_id(budget)
        budgets = self._budgets.setdefault(budget.tenant, {})
        if budgets.get(budget_id) != budget:
            budgets[budget_id] = budget
            self._versions[budget.tenant] = self._versions.get(budget.tenant, 0) + 1
        return self._versions.get(budget.tenant, 0)

    async def delete(self, tenant: str, budget_id: str) -> bool:
        if self._budgets.get(tenant, {}).pop(budget_id, None) is None:
            return False
        self._versions[tenant] += 1
        return True

    async def list(self, tenant: str) -> tuple[int, list[Budget]]:
        return self._versions.get(tenant, 0), list(self._budgets.get(tenant, {}).values())

    async def version(self, tenant: str) -> int:
        return self.current_version(tenant)

    def current_version(self, tenant: str) -> int:
        """For the store's own atomic checks, which must not await."""
        return self._versions.get(tenant, 0)

    def snapshot(self) -> dict[str, object]:
        """JSON-safe; a tenant whose budgets were all deleted keeps its version."""
        return {
            tenant: {
                "version": version,
                "budgets": [b.to_dict() for b in self._budgets.get(tenant, {}).values()],
            }
            for tenant, version in self._versions.items()
        }

    def restore(self, state: object) -> None:
        """Replaces everything with ``state`` (from ``snapshot``); ValueError if malformed."""
        budgets: dict[str, dict[str, Budget]] = {}
        versions: dict[str, int] = {}
        for tenant, entry in typed(state, dict, "budgets").items():
            where = f"budgets.{tenant}"
            fields = typed(entry, dict, where)
            versions[tenant] = typed(fields.get("version"), int, f"{where}.version")
            kept = budgets[tenant] = {}
            for i, data in enumerate(typed(fields.get("budgets"), list, f"{where}.budgets")):
                budget = _budget(data, f"{where}.budgets[{i}]")
                if budget.tenant != tenant:
                    raise ValueError(f"{where}.budgets[{i}]: belongs to {budget.tenant!r}")
                kept[stored_id(budget)] = budget
        self._budgets, self._versions = budgets, versions


def _budget(data: object, where: str) -> Budget:
    try:
        return Budget.from_dict(typed(data, dict, where))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None
