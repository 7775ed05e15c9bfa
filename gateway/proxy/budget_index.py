"""Budgets compiled for matching: each limit of each budget as a Slot with its counter's key,
indexed by scope. A ``per: end_user`` budget's slots are templates: a request's end user is
added to their keys, so each end user has counters of their own.

Compiled once per configuration load (file budgets) or per version (API budgets), so a request
only looks up precomputed slots, and only among the budgets that can match it.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

from gateway.cost.model import Budget, BudgetAction, Domain, Limit, Per, nano_to_usd
from gateway.cost.pricing import is_glob
from gateway.cost.windows import Window, window_of
from gateway.proxy.auth import Principal
from gateway.proxy.end_user import UNNAMED, EndUser
from gateway.store.base import Line


@dataclass(frozen=True, slots=True)
class Slot:
    """One limit of one budget: where its counter lives and how big it is."""

    budget: Budget
    limit: Limit
    window: Window
    max: int  # tokens or nano-dollars
    key: str
    enforce: bool  # False for alert-only budgets
    is_cost: bool  # the limit's, kept here: read for every line of every request

    def line(self, tokens: int, cost_nano: int) -> Line:
        return Line(self.key, self.window, self.max, cost_nano if self.is_cost else tokens,
                    self.enforce)

    def of_end_user(self, end_user: EndUser) -> Slot:
        """A ``per: end_user`` slot's own for ``end_user``: the template's key and theirs."""
        return replace(self, key=end_user_key(self.key, end_user))

    def describe(self, value: int) -> str:
        if self.is_cost:
            return f"${nano_to_usd(value):.6f}".rstrip("0").rstrip(".")
        return f"{value} tokens"


class BudgetIndex:
    """Budgets by tenant, then by scope, compiled once per configuration load (or per version
    of a tenant's API budgets).

    A lookup touches only the budgets that can match: those of the caller's tenant, of its key
    or of no key, of the request's domain or of none; among them the budgets of no model, of
    exactly the request's model, and the globs whose literal prefix (or, for a glob that starts
    with a wildcard, literal suffix) the model has. Only globs that start and end with a
    wildcard are tried one by one. Nothing is cached, so nothing grows with the model names
    clients send.
    """

    def __init__(self, budgets: Sequence[Budget]) -> None:
        self._scopes: dict[str, dict[tuple[str | None, Domain | None], _Models]] = {}
        for order, budget in enumerate(budgets):
            scopes = self._scopes.setdefault(budget.tenant, {})
            models = scopes.setdefault((budget.key, budget.domain), _Models())
            models.add(budget.model, _Entry.of(order, budget))
        for scopes in self._scopes.values():
            for models in scopes.values():
                models.freeze()

    def slots(self, principal: Principal, model: str, domain: Domain,
              end_user: EndUser = UNNAMED) -> tuple[Slot, ...]:
        """Every slot of every matching budget, in the budgets' order; a ``per: end_user``
        budget's for ``end_user`` (none without one), and a 400 when a matching budget
        requires an end user and the request names none."""
        scopes = self._scopes.get(principal.tenant)
        if scopes is None:
            return ()
        found: list[_Entry] = []
        for scope in ((principal.key_name, domain), (principal.key_name, None), (None, domain),
                      (None, None)):
            models = scopes.get(scope)
            if models is not None:
                models.collect(model, found)
        if len(found) > 1:
            found.sort(key=_order)
        return tuple(slot for entry in found for slot in entry.met_by(end_user))


@dataclass(frozen=True, slots=True)
class _Entry:
    order: int  # the budget's place in its list: slots come back in the budgets' order
    slots: tuple[Slot, ...]
    per_end_user: bool = False
    end_user_required: bool = False

    @classmethod
    def of(cls, order: int, budget: Budget) -> _Entry:
        return cls(order, slots_of(budget), budget.per is Per.END_USER, budget.end_user_required)

    def met_by(self, end_user: EndUser) -> tuple[Slot, ...]:
        if not (self.per_end_user or self.end_user_required):
            return self.slots
        if not end_user.named():
            if self.end_user_required:
                raise end_user.required_by(self.slots[0].budget.name)
            return () if self.per_end_user else self.slots
        if self.per_end_user:
            return tuple(slot.of_end_user(end_user) for slot in self.slots)
        return self.slots


@dataclass(frozen=True, slots=True)
class _Glob:
    entry: _Entry
    match: Callable[[str], object]  # the glob compiled once (fnmatchcase's meaning)


def _order(entry: _Entry) -> int:
    return entry.order


class _Models:
    """The budgets of one (key, domain) scope, by how their model can match."""

    def __init__(self) -> None:
        self._any: list[_Entry] = []  # no model: every model
        self._exact: dict[str, list[_Entry]] = {}
        self._prefixed = _Affixes(suffix=False)
        self._suffixed = _Affixes(suffix=True)  # globs with no literal prefix
        self._floating: list[_Glob] = []  # globs with neither: tried one by one

    def add(self, pattern: str | None, entry: _Entry) -> None:
        if pattern is None:
            self._any.append(entry)
        elif not is_glob(pattern):
            self._exact.setdefault(pattern, []).append(entry)
        else:
            glob = _Glob(entry, re.compile(fnmatch.translate(pattern)).match)
            prefix, suffix = literal_prefix(pattern), literal_suffix(pattern)
            if prefix:
                self._prefixed.add(prefix, glob)
            elif suffix:
                self._suffixed.add(suffix, glob)
            else:
                self._floating.append(glob)

    def freeze(self) -> None:
        self._prefixed.freeze()
        self._suffixed.freeze()

    def collect(self, model: str, found: list[_Entry]) -> None:
        found.extend(self._any)
        found.extend(self._exact.get(model, ()))
        for glob in (*self._prefixed.candidates(model), *self._suffixed.candidates(model),
                     *self._floating):
            if glob.match(model):
                found.append(glob.entry)


class _Affixes:
    """Globs by their literal prefix (or suffix): a model is looked up once per distinct
    affix length, never tried against globs whose affix it does not have."""

    def __init__(self, *, suffix: bool) -> None:
        self._suffix = suffix
        self._by_affix: dict[str, list[_Glob]] = {}
        self._lengths: tuple[int, ...] = ()

    def add(self, affix: str, glob: _Glob) -> None:
        self._by_affix.setdefault(affix, []).append(glob)

    def freeze(self) -> None:
        self._lengths = tuple(sorted({len(affix) for affix in self._by_affix}))

    def candidates(self, model: str) -> Iterator[_Glob]:
        for length in self._lengths:
            if length > len(model):
                return
            yield from self._by_affix.get(model[-length:] if self._suffix else model[:length], ())


def slots_of(budget: Budget) -> tuple[Slot, ...]:
    enforce = budget.action is not BudgetAction.ALERT
    return tuple(
        Slot(budget, limit, window_of(limit), value, _key(budget, limit), enforce, limit.is_cost)
        for limit, value in budget.limits()
    )


def _key(budget: Budget, limit: Limit) -> str:
    return f"{{{budget.tenant}}}:b:{budget.ident}:{limit.value}"


def end_user_key(key: str, end_user: EndUser) -> str:
    """The counter of a ``per: end_user`` budget's limit (``key``) for one end user."""
    return f"{key}:u:{end_user.digest}"


def literal_prefix(pattern: str) -> str:
    """What every name a glob matches starts with."""
    for i, c in enumerate(pattern):
        if c in "*?[":
            return pattern[:i]
    return pattern


def literal_suffix(pattern: str) -> str:
    """What every name a glob matches ends with (``]`` ends a bracket, so it ends the suffix)."""
    for i in range(len(pattern) - 1, -1, -1):
        if pattern[i] in "*?[]":
            return pattern[i + 1:]
    return pattern
