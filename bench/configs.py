"""Gateway configurations for the bench: one tenant (``bench``) whose key sends every request,
``budgets`` budgets that all match its requests, and filler tenants up to ``keys`` keys in all.

Filler tenants hold ``KEYS_PER_TENANT`` keys each (sha256 of generated secrets) and one budget
each, as a real deployment with many customers would; none of them matches a bench request.
Every limit is far out of reach, so every request is admitted and reserves in every line.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path

from bench.upstream import JSON_MODEL, STREAM_MODEL

SECRET = "sk-bench-run-0000"
KEYS_PER_TENANT = 10
LIMITS = "max_tokens_per_hour: 1000000000000, max_cost_per_day: 1000000"
# Scopes of the bench tenant's budgets beyond the first (tenant-wide): all match its requests.
SCOPES = ("key: app", 'model: "gpt-4o*"', "domain: llm", "")


@dataclass(frozen=True)
class GatewayConfig:
    store: str
    json_base: str  # the upstream for JSON_MODEL
    stream_base: str  # the upstream for STREAM_MODEL (SSE)
    keys: int = 1
    budgets: int = 1

    def write(self, path: Path) -> Path:
        lines = [
            f'store: "{self.store}"',
            "upstreams:",
            f'  json: {{base_url: "{self.json_base}", api_key: "k", models: ["{JSON_MODEL}"]}}',
            f'  stream: {{base_url: "{self.stream_base}", api_key: "k", '
            f'models: ["{STREAM_MODEL}"]}}',
            "tenants:",
            "  bench:",
            f'    keys: [{{name: app, sha256: "{sha256(SECRET)}"}}]',
            *self._filler_tenants(),
            "budgets:",
            *self._bench_budgets(),
            *self._filler_budgets(),
        ]
        path.write_text("\n".join(lines) + "\n")
        return path

    def _fillers(self) -> list[tuple[str, int]]:
        """(tenant, keys) for the keys beyond the bench tenant's one."""
        left = self.keys - 1
        sizes = [KEYS_PER_TENANT] * (left // KEYS_PER_TENANT)
        if left % KEYS_PER_TENANT:
            sizes.append(left % KEYS_PER_TENANT)
        return [(f"t{i:06d}", n) for i, n in enumerate(sizes)]

    def _filler_tenants(self) -> list[str]:
        lines = []
        for tenant, count in self._fillers():
            lines += [f"  {tenant}:", "    keys:"]
            lines += [f'      - {{name: k{k}, sha256: "{sha256(f"sk-{tenant}-{k}")}"}}'
                      for k in range(count)]
        return lines

    def _bench_budgets(self) -> list[str]:
        scopes = itertools.chain([""], itertools.cycle(SCOPES))
        return [f"  - {{name: bench-{i}, tenant: bench, {scope + ', ' if scope else ''}{LIMITS}}}"
                for i, scope in zip(range(self.budgets), scopes, strict=False)]

    def _filler_budgets(self) -> list[str]:
        return [f"  - {{name: {tenant}-daily, tenant: {tenant}, {LIMITS}}}"
                for tenant, _ in self._fillers()]


def sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
