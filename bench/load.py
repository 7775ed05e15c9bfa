"""Load with wrk (one thread, C connections, a fixed duration) through ``wrk_report.lua``,
whose ``done()`` hook prints the run's counts and its whole latency histogram (1 us buckets)
as one JSON line, so that several short runs of one target pool into one figure."""

from __future__ import annotations

import collections
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from bench.services import require

SCRIPT = Path(__file__).with_name("wrk_report.lua")
RESULT_PREFIX = "WRK_RESULT "
TIMEOUT_S = 10
ERRORS = ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")


@dataclass(frozen=True)
class Load:
    clients: int
    requests: int  # answered with 2xx/3xx
    seconds: float
    errors: int
    histogram: collections.Counter[int] = field(repr=False)  # latency us -> requests

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile_ms(self, p: float) -> float:
        """As wrk computes it: the smallest latency with at least p% of requests at or below."""
        total = self.histogram.total()
        if not total:
            return float("nan")
        rank = round(p / 100 * total + 0.5)
        seen = 0
        for value in sorted(self.histogram):
            seen += self.histogram[value]
            if seen >= rank:
                return value / 1e3
        return max(self.histogram) / 1e3

    @property
    def p50_ms(self) -> float:
        return self.percentile_ms(50)

    @property
    def p90_ms(self) -> float:
        return self.percentile_ms(90)

    @property
    def p99_ms(self) -> float:
        return self.percentile_ms(99)

    @classmethod
    def pooled(cls, runs: Iterable[Load]) -> Load:
        runs = list(runs)
        histogram: collections.Counter[int] = collections.Counter()
        for run in runs:
            histogram.update(run.histogram)
        return cls(runs[0].clients, sum(r.requests for r in runs),
                   sum(r.seconds for r in runs), sum(r.errors for r in runs), histogram)

    def as_json(self) -> dict[str, float | int]:
        return {"clients": self.clients, "requests": self.requests,
                "seconds": round(self.seconds, 3), "errors": self.errors,
                "rps": round(self.rps, 1), "p50_ms": self.p50_ms, "p90_ms": self.p90_ms,
                "p99_ms": self.p99_ms}


def wrk(url: str, body: Path, secret: str, clients: int, seconds: float) -> Load:
    """``clients`` connections for ``seconds`` against ``url`` (POST ``body``)."""
    binary = require("wrk", "apt-get install wrk")
    command = [binary, "-t1", f"-c{clients}", f"-d{seconds:g}s", "--latency",
               f"--timeout={TIMEOUT_S}s", "-s", str(SCRIPT), url, "--", str(body), secret]
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          timeout=seconds + 60)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or len(lines) != 1:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    found = orjson.loads(lines[0].removeprefix(RESULT_PREFIX))
    return Load(clients=clients, requests=found["requests"] - found["status_errors"],
                seconds=found["duration_us"] / 1e6, errors=sum(found[k] for k in ERRORS),
                histogram=collections.Counter({v: c for v, c in found["histogram"]}))
