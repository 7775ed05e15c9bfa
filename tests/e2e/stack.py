"""The end-to-end stack: one mock upstream and one gateway as real processes on loopback ports,
with the gateway's YAML written to a temporary directory so that a test can edit it live.

Tenants, one per concern so that budgets never interfere (``{kind}`` is ``sync`` or ``async``):

========================  ===================================================================
``apps``                  every priced model, a roomy budget: the SDK surface itself
``scoped``                allow-list ``gpt-4o-mini`` and ``text-embedding-3-*``: models, 403
``probe``                 no budget, no allow-list: sees the reload markers in ``/v1/models``
``meter-{kind}``          ``max_tokens_per_day`` set by the test (hot edit): exact charging
``never-{kind}``          ``max_tokens_per_hour: 100``: a request that can never fit
``hourly-{kind}``         ``max_tokens_per_hour: 1000``: a window that frees within the hour
========================  ===================================================================
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests import leaks
from tests.procs import Proc

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("sync", "async")
RELOAD_TIMEOUT_S = 15.0
SETTLE_TIMEOUT_S = 5.0
POLL_S = 0.05
HTTP_TIMEOUT_S = 5.0

UPSTREAM_KEY = "sk-e2e-upstream-secret-0123456789"
METER_START = 1_000_000
NEVER_FITS_PER_HOUR = 100
HOURLY_LIMIT = 1000
SCOPED_MODELS = ("gpt-4o-mini", "text-embedding-3-*")
TENANTS = (
    "apps", "scoped", "probe",
    *(f"{concern}-{kind}" for concern in ("meter", "never", "hourly") for kind in KINDS),
)
SECRETS = {tenant: f"sk-e2e-{tenant}-0123456789abcdef" for tenant in TENANTS}
leaks.SECRETS.update(SECRETS.values())

MakeClient = Callable[..., Any]
"""``sdk(tenant)`` or ``sdk(api_key=...)``: an ``openai.OpenAI`` or ``openai.AsyncOpenAI``."""


def sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def marker(generation: int) -> str:
    """A priced model name that exists only in one generation of the file: when ``probe`` sees
    it in ``/v1/models``, the gateway runs on that generation (and everything else in it)."""
    return f"e2e-reload-marker-{generation}"


@dataclass(frozen=True, slots=True)
class Tokens:
    """Usage totals the mock says it reported."""

    input: int
    output: int

    def __sub__(self, other: Tokens) -> Tokens:
        return Tokens(self.input - other.input, self.output - other.output)

    @property
    def total(self) -> int:
        return self.input + self.output


def _tenant(name: str, models: tuple[str, ...] | None = None) -> str:
    allow = "" if models is None else f"\n    models: {json.dumps(list(models))}"
    return (
        f"  {name}:{allow}\n"
        f"    keys:\n"
        f'      - {{name: {name}-key, sha256: "{sha(SECRETS[name])}"}}\n'
    )


def _budget(name: str, tenant: str, limit: str, value: int) -> str:
    return f"  - {{name: {name}, tenant: {tenant}, {limit}: {value}, action: reject}}\n"


def render_config(mock_url: str, generation: int, meter: Mapping[str, int]) -> str:
    tenants = "".join(
        _tenant(name, SCOPED_MODELS if name == "scoped" else None) for name in TENANTS
    )
    budgets = _budget("apps-daily", "apps", "max_tokens_per_day", 100_000_000)
    for kind in KINDS:
        budgets += _budget(f"meter-{kind}", f"meter-{kind}", "max_tokens_per_day", meter[kind])
        budgets += _budget(f"never-{kind}", f"never-{kind}", "max_tokens_per_hour",
                           NEVER_FITS_PER_HOUR)
        budgets += _budget(f"hourly-{kind}", f"hourly-{kind}", "max_tokens_per_hour",
                           HOURLY_LIMIT)
    return f"""# written by tests/e2e/stack.py, generation {generation}
store: "memory://"
upstreams:
  mock:
    base_url: "{mock_url}/v1"
    api_key: "{UPSTREAM_KEY}"
    models: ["*"]
    timeout_s: 30
pricing:
  gpt-4o-mini: {{input: 0.15, cached_input: 0.075, output: 0.60}}
  gpt-4o: {{input: 2.50, cached_input: 1.25, output: 10.00}}
  text-embedding-3-small: {{input: 0.02}}
  {marker(generation)}: {{input: 1.0, output: 1.0}}
default_max_output_tokens: 64
tenants:
{tenants}budgets:
{budgets}"""


def write_config(path: Path, text: str) -> None:
    """Replaces the file in one rename, as an editor's atomic save does."""
    scratch = path.with_suffix(".tmp")
    scratch.write_text(text)
    os.replace(scratch, path)


def _get_json(url: str, secret: str | None = None) -> Any:
    headers = {} if secret is None else {"Authorization": f"Bearer {secret}"}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as resp:
        return json.load(resp)


@dataclass
class Stack:
    mock: Proc
    gateway: Proc
    config: Path
    generation: int = 0
    meter: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, METER_START))

    @property
    def base_url(self) -> str:
        return f"{self.gateway.url}/v1"

    def write_config(self) -> None:
        write_config(self.config, render_config(self.mock.url, self.generation, self.meter))

    # -- the mock's side ---------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = _get_json(f"{self.mock.url}/v1/mock/stats")
        return stats

    def reported(self) -> Tokens:
        stats = self.stats()
        return Tokens(stats["input_tokens"], stats["output_tokens"])

    def reported_since(self, before: Tokens, until: Callable[[Tokens], bool]) -> Tokens:
        """The mock's reported usage since ``before``, polled (bounded) until ``until`` holds:
        the mock counts a stream's usage just after writing it, so a fast client may ask first.
        Returns the last delta seen either way; the caller asserts on it."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:
            delta = self.reported() - before
            if until(delta) or time.monotonic() > deadline:
                return delta
            time.sleep(POLL_S)

    def upstream_requests(self) -> int:
        counts: dict[str, int] = self.stats()["requests"]
        return sum(counts.values())

    def last_upstream_body(self) -> dict[str, Any]:
        body: dict[str, Any] = self.stats()["last_request"]["body"]
        return body

    # -- the gateway's side ------------------------------------------------------------------

    def models(self, tenant: str) -> list[str]:
        listing = _get_json(f"{self.base_url}/models", SECRETS[tenant])
        return [model["id"] for model in listing["data"]]

    def set_meter(self, kind: str, max_tokens_per_day: int) -> None:
        """Edits the YAML (as ops would) and waits, bounded, until the gateway runs on it."""
        self.meter[kind] = max_tokens_per_day
        self.generation += 1
        self.write_config()
        wanted = marker(self.generation)
        deadline = time.monotonic() + RELOAD_TIMEOUT_S
        while wanted not in self.models("probe"):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the gateway did not reload {self.config} within {RELOAD_TIMEOUT_S}s:\n"
                    f"{self.gateway.output()[-4000:]}"
                )
            time.sleep(POLL_S)
