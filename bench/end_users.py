"""What one million distinct end users cost the embedded store, and what expiry gives back.

Run from the repository root: ``python -m bench.end_users [--users N] [--limits K]``.

Directly on a ``MemoryStore`` (no HTTP): one tenant, one ``per: end_user`` budget with K limits
(1: ``max_cost_per_day``; 2: and ``max_tokens_per_hour``; 3: and ``max_cost_per_month``), and N
distinct end users each making one request: a reservation then its settlement, through the
slots the proxy builds (``BudgetIndex`` with the user's ``EndUser``), so every user leaves K
counters. Prints the process's resident memory (VmRSS) before, after N users, and after the
clock has moved past the longest window and the store's sweeps have dropped the idle counters.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from pathlib import Path

from gateway.cost.model import Budget, Domain, Per
from gateway.proxy.auth import Principal
from gateway.proxy.budget_index import BudgetIndex
from gateway.proxy.end_user import EndUser, end_user_of
from gateway.settings.schema import Role, Settings
from gateway.store.memory import MemoryStore

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC: a month's first second
LIMITS = ({"max_cost_per_day": 2.0}, {"max_tokens_per_hour": 100_000},
          {"max_cost_per_month": 20.0})


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def fill(store: MemoryStore, index: BudgetIndex, users: int, settings: Settings) -> None:
    principal = Principal("saas", "backend", Role.MEMBER)
    for i in range(users):
        end_user: EndUser = end_user_of({"safety_identifier": f"user-{i:07d}"}, {}, settings)
        slots = index.slots(principal, "gpt-4o-mini", Domain.LLM, end_user)
        now = T0 + i * 1e-3  # a thousand users a second
        reserve = [slot.line(1_000, 300_000) for slot in slots]
        result = await store.reserve("saas", f"r{i}", reserve, now, 660.0)
        assert result.ok, result
        await store.settle("saas", f"r{i}", [slot.line(400, 120_000) for slot in slots],
                           None, now + 1)


async def bench(users: int, limits: int) -> None:
    settings = Settings()
    fields: dict[str, object] = {"name": "each", "tenant": "saas", "per": Per.END_USER}
    for extra in LIMITS[:limits]:
        fields.update(extra)
    budget = Budget.from_dict(fields)
    index = BudgetIndex([budget])
    store = MemoryStore(counters_max=users * limits + 1)
    gc.collect()
    before = rss_mib()
    started = time.perf_counter()
    await fill(store, index, users, settings)
    took = time.perf_counter() - started
    gc.collect()
    full = rss_mib()
    counters = len(store._lines)
    # past the longest window (a calendar month, else a day): every counter is empty; the
    # sweeps run with each reservation, so one more user's requests drive them to the end
    later = T0 + (40 * 86_400 if limits >= 3 else 2 * 86_400)
    principal = Principal("saas", "backend", Role.MEMBER)
    last = end_user_of({"user": "late"}, {}, settings)
    lines = [s.line(1, 1) for s in index.slots(principal, "gpt-4o-mini", Domain.LLM, last)]
    sweeps = 0
    while len(store._lines) > len(lines):
        await store.reserve("saas", f"late{sweeps}", lines, later, 1.0)
        await store.settle("saas", f"late{sweeps}", lines,
                           None, later)
        sweeps += 1
    gc.collect()
    after = rss_mib()
    per = (full - before) * 1024 * 1024 / counters
    print(f"end users: {users:,}; limits per user: {limits}; counters kept: {counters:,}")
    print(f"reserve+settle per user: {took / users * 1e6:.1f} us")
    print(f"RSS before: {before:.0f} MiB; after {users:,} users: {full:.0f} MiB "
          f"(+{full - before:.0f} MiB, {per:.0f} bytes per counter)")
    print(f"after expiry ({sweeps:,} requests swept {counters - len(store._lines):,} "
          f"counters): RSS {after:.0f} MiB, counters left {len(store._lines):,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--limits", type=int, default=1, choices=(1, 2, 3))
    args = parser.parse_args()
    asyncio.run(bench(args.users, args.limits))


if __name__ == "__main__":
    main()
