"""Token usage and budget library, usable without the proxy; imports nothing from aiohttp."""

from gateway.cost.checker import BudgetChecker
from gateway.cost.model import (
    Budget,
    BudgetAction,
    BudgetDecision,
    Domain,
    Filter,
    Limit,
    Summary,
    Usage,
)
from gateway.cost.pricing import Price, PriceTable
from gateway.cost.registry import Registry, names, new, register
from gateway.cost.tracker import InMemoryTracker, Tracker

__all__ = [
    "Budget",
    "BudgetAction",
    "BudgetChecker",
    "BudgetDecision",
    "Domain",
    "Filter",
    "InMemoryTracker",
    "Limit",
    "Price",
    "PriceTable",
    "Registry",
    "Summary",
    "Tracker",
    "Usage",
    "names",
    "new",
    "register",
]
