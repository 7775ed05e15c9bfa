"""The fault suite: a gateway and a mock upstream as real processes on loopback ports (and a real
redis-server for the store faults), every fault the mock can inject, clients that leave at every
stage, and the store killed between admission and settlement.

After each case: the gateway still serves (a normal request succeeds), the client got a
well-formed answer or a clean close, nothing is left reserved, and the ledger is right: the
spend the gateway recorded (its admin API) is exactly the usage the mock reported, or, where
the mock reported none, the counted usage (the request's input estimate plus the output the
mock produced), or nothing for an upstream failure. Never both, never neither.

Cases run one after another (each compares before/after totals); the slow ones are bounded by
an upstream ``timeout_s`` of 1 s. ``TALLY`` collects every case; the last test prints it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.store.redis import RedisStore
from tests import leaks
from tests.procs import Proc, free_port, gateway_process, mock_upstream, stop
from tests.servers import start_redis

SECRET = "sk-fault-suite-tenant-0123456789"
UPSTREAM_KEY = "sk-fault-suite-upstream-0123456789"
OPS_TOKEN = "fault-suite-ops-token-0123456789"
leaks.SECRETS.update([SECRET, UPSTREAM_KEY, OPS_TOKEN])
AUTH = {"Authorization": f"Bearer {SECRET}"}
SCRAPER = {"Authorization": f"Bearer {OPS_TOKEN}"}  # /metrics is the operators', not tenants'
UPSTREAM_TIMEOUT_S = 1
POLL_S = 0.02
SETTLE_BOUND_S = 10.0  # safety bound on waiting for a settlement, never an assertion of speed
CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=30)

CONFIG = """
store: "{store}"
on_store_error: {policy}
upstreams:
  mock: {{base_url: "{mock}/v1", api_key: "{upstream_key}", timeout_s: {timeout}}}
pricing:
  gpt-4o-mini: {{input: 0.15, cached_input: 0.075, output: 0.60}}
tenants:
  faults:
    keys:
      - {{name: app, sha256: "{sha}"}}
budgets:
  - {{name: roomy, tenant: faults, max_tokens_per_day: 1000000000}}
ops: {{token: "{ops_token}"}}
"""

OUTPUT_CAP = 6  # every body's output cap: what a lost answer is charged beside its input
BODIES: dict[str, dict[str, Any]] = {
    "/chat/completions": {"model": "gpt-4o-mini", "max_tokens": 6,
                          "messages": [{"role": "user", "content": "count the faults"}]},
    "/completions": {"model": "gpt-4o-mini", "max_tokens": 6, "prompt": "count the faults"},
    "/responses": {"model": "gpt-4o-mini", "max_output_tokens": 6, "input": "count the faults"},
}


@dataclass(frozen=True, slots=True)
class Ledger:
    """Input and output tokens."""

    input: int = 0
    output: int = 0

    def __sub__(self, other: Ledger) -> Ledger:
        return Ledger(self.input - other.input, self.output - other.output)

    def gap(self, other: Ledger) -> int:
        return abs(self.input - other.input) + abs(self.output - other.output)


@dataclass
class Tally:
    injected: int = 0
    survived: int = 0
    ledger_difference: int = 0
    names: list[str] = field(default_factory=list)


TALLY = Tally()


@dataclass
class Gateway:
    proc: Proc
    session: aiohttp.ClientSession

    async def metric(self, name: str) -> float:
        async with self.session.get(f"{self.proc.url}/metrics", headers=SCRAPER) as resp:
            assert resp.status == 200, await resp.text()
            text = await resp.text()
        values = [float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(name + " ")]
        assert values, f"{name} not in /metrics"
        return values[0]

    async def spend(self) -> Ledger:
        async with self.session.get(f"{self.proc.url}/api/client/v1/spend/report",
                                    headers=AUTH) as resp:
            assert resp.status == 200, await resp.text()
            report = await resp.json()
        return Ledger(report["total_input_tokens"], report["total_output_tokens"])

    async def settled(self) -> None:
        """Nothing reserved any more (bounded wait: a left client's request may still run)."""
        deadline = time.monotonic() + SETTLE_BOUND_S
        while await self.metric("gateway_reservations_in_flight") > 0:
            assert time.monotonic() < deadline, "a reservation is still held"
            await asyncio.sleep(POLL_S)

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        async with self.session.post(f"{self.proc.url}/v1{path}", json=body,
                                     headers=AUTH) as resp:
            return resp.status, dict(resp.headers), await resp.read()

    async def healthy(self) -> None:
        """The process is up and a normal request goes through."""
        assert self.proc.popen.poll() is None, self.proc.output()[-3000:]
        status, _, payload = await self.post("/chat/completions", BODIES["/chat/completions"])
        assert status == 200, payload


@dataclass
class Mock:
    proc: Proc
    session: aiohttp.ClientSession

    async def stats(self) -> dict[str, Any]:
        async with self.session.get(f"{self.proc.url}/v1/mock/stats") as resp:
            stats: dict[str, Any] = await resp.json()
            return stats

    async def reported(self) -> tuple[Ledger, int]:
        """The usage the mock reported, and the output tokens it produced (reported or not)."""
        stats = await self.stats()
        return (Ledger(stats["input_tokens"], stats["output_tokens"]),
                stats["produced_output_tokens"])


@dataclass
class Rig:
    mock: Mock
    gateway: Gateway
    tmp: Path
    input_tokens: dict[str, int]  # the input estimate of each body in BODIES


@dataclass
class Procs:
    mock: Proc
    gateway: Proc
    tmp: Path


def write_config(path: Path, mock: str, store: str, policy: str = "reject") -> Path:
    path.write_text(CONFIG.format(store=store, policy=policy, mock=mock, upstream_key=UPSTREAM_KEY,
                                  timeout=UPSTREAM_TIMEOUT_S, ops_token=OPS_TOKEN,
                                  sha=hashlib.sha256(SECRET.encode()).hexdigest()))
    return path


def serve(tmp: Path, config: Path, name: str) -> contextlib.AbstractContextManager[Proc]:
    return gateway_process(config, tmp / f"{name}.log")


@pytest.fixture(scope="module")
def procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Procs]:
    """The mock and the gateway (memory store), for the whole module."""
    tmp = tmp_path_factory.mktemp("faults")
    with mock_upstream(tmp) as mock:
        config = write_config(tmp / "memory.yaml", mock.url, "memory://")
        with serve(tmp, config, "gateway-memory") as gateway:
            yield Procs(mock, gateway, tmp)


_INPUTS: dict[str, int] = {}  # measured once per session, by the first test that needs them


@pytest.fixture
async def rig(procs: Procs) -> AsyncIterator[Rig]:
    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session:
        mock = Mock(procs.mock, session)
        gateway = Gateway(procs.gateway, session)
        if not _INPUTS:
            for path, body in BODIES.items():  # the mock counts input as the gateway does
                before, _ = await mock.reported()
                status, _, payload = await gateway.post(path, body)
                assert status == 200, payload
                _INPUTS[path] = ((await mock.reported())[0] - before).input
        yield Rig(mock, gateway, procs.tmp, dict(_INPUTS))


# -- the cases -------------------------------------------------------------------------------

NONE, REPORTED, COUNTED = "none", "reported", "counted"
RESERVED = "reserved"
"""The answer was lost after the request reached the upstream (a timeout, a cut connection, a
stream broken off by the upstream): the upstream bills the work, so the reservation is
charged, never less."""
SENT = "sent"
"""The client left before the first byte: the input and none of the output is charged (what
the client received, as the contract says), or, if the gateway read the whole answer first,
the reported usage. Either is right; both or neither is not."""


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    fault: str
    status: int
    ledger: str  # NONE, REPORTED, COUNTED or RESERVED
    stream: bool = False
    path: str = "/chat/completions"
    fields: dict[str, Any] = field(default_factory=dict)
    code: str | None = None  # the error code the client must see
    retry_after: str | None = None


CASES = [
    # upstream errors: the status passes through, the body is OpenAI-shaped, nothing charged
    Case("500", "500", 500, NONE),
    Case("500, text body", "500,plain", 500, NONE),
    Case("503", "503", 503, NONE),
    Case("503, text body, Retry-After", "503,plain,retry_after:2", 503, NONE, retry_after="2"),
    Case("429, Retry-After", "429,retry_after:7", 429, NONE, code="rate_limit_exceeded",
         retry_after="7"),
    Case("429, text body, Retry-After", "429,plain,retry_after:3", 429, NONE, retry_after="3"),
    Case("429, no Retry-After", "429", 429, NONE, code="rate_limit_exceeded"),
    Case("502 from the upstream", "502", 502, NONE),
    Case("500 streamed", "500", 500, NONE, stream=True),
    Case("503 streamed, text body", "503,plain,retry_after:2", 503, NONE, stream=True,
         retry_after="2"),
    Case("429 on /responses", "429,retry_after:1", 429, NONE, path="/responses",
         retry_after="1"),
    Case("500 on /completions", "500,plain", 500, NONE, path="/completions"),
    # stalls and cut connections
    Case("stall before headers", "timeout:3", 504, RESERVED, code="upstream_timeout"),
    Case("stall after headers", "stall_body:3", 504, RESERVED, code="upstream_timeout"),
    Case("stall before headers, streamed", "timeout:3", 504, RESERVED, stream=True,
         code="upstream_timeout"),
    Case("stall after headers, streamed", "stall_body:3", 200, RESERVED, stream=True),
    Case("short body (Content-Length not met)", "short_body", 502, RESERVED,
         code="upstream_unavailable"),
    Case("closed without an answer", "reset_after:0", 502, RESERVED,
         code="upstream_unavailable"),
    Case("closed mid-stream", "reset_after:3", 200, RESERVED, stream=True),
    Case("closed before the first chunk", "reset_after:0", 200, RESERVED, stream=True),
    Case("closed mid-stream, /responses", "reset_after:2", 200, RESERVED, stream=True,
         path="/responses"),
    Case("closed mid-stream, /completions", "reset_after:2", 200, RESERVED, stream=True,
         path="/completions"),
    # usage missing, twice, or in a malformed stream
    Case("no usage", "no_usage", 200, COUNTED),
    Case("no usage, streamed", "no_usage", 200, COUNTED, stream=True),
    Case("no usage, /responses streamed", "no_usage", 200, COUNTED, stream=True,
         path="/responses"),
    Case("usage twice", "double_usage", 200, REPORTED, stream=True),
    Case("usage twice, client asked for usage", "double_usage", 200, REPORTED, stream=True,
         fields={"stream_options": {"include_usage": True}}),
    Case("usage twice, /responses", "double_usage", 200, REPORTED, stream=True,
         path="/responses"),
    Case("malformed SSE", "bad_sse", 200, REPORTED, stream=True),
    Case("malformed SSE, /responses", "bad_sse", 200, REPORTED, stream=True, path="/responses"),
    Case("malformed SSE, usage twice, byte by byte", "bad_sse,double_usage,drip:0", 200,
         REPORTED, stream=True),
    # slow but in time
    Case("byte by byte", "drip:0", 200, REPORTED),
    Case("byte by byte, paced", "drip:0.0005", 200, REPORTED, fields={"max_tokens": 2}),
    Case("byte by byte, streamed", "drip:0", 200, REPORTED, stream=True),
    Case("slow frames", "slow_stream:0.01", 200, REPORTED, stream=True),
    Case("late headers, in time", "timeout:0.3", 200, REPORTED),
    Case("late body, in time", "stall_body:0.3", 200, REPORTED),
    Case("late body, in time, streamed", "stall_body:0.3", 200, REPORTED, stream=True),
]


def body_of(case: Case) -> dict[str, Any]:
    return {**BODIES[case.path], **case.fields, "stream": case.stream,
            "metadata": {"mock_fault": case.fault}}


async def expected(rig: Rig, kind: str, path: str, reported: Ledger, produced: int,
                   requests: int, charged: Ledger) -> Ledger:
    if kind == SENT:
        assert reported.output > 0, "the upstream answered in full"
        return reported if charged == reported else Ledger(rig.input_tokens[path] * requests, 0)
    if kind == REPORTED:
        assert reported.input > 0 and reported.output > 0, "the mock reported usage"
        return reported
    if kind == COUNTED:
        assert reported == Ledger(), "the mock reported nothing"
        return Ledger(rig.input_tokens[path] * requests, produced)
    if kind == RESERVED:
        return Ledger(rig.input_tokens[path] * requests, OUTPUT_CAP * requests)
    assert reported == Ledger() and produced == 0
    return Ledger()


async def checked(rig: Rig, name: str, kind: str, path: str,
                  action: Callable[[], Awaitable[None]],
                  gateway: Gateway | None = None, requests: int = 1) -> None:
    """Runs one fault and checks what every case must hold."""
    gw = gateway or rig.gateway
    TALLY.injected += 1
    TALLY.names.append(name)
    spent_before = await gw.spend()
    reported_before, produced_before = await rig.mock.reported()
    await action()
    await gw.settled()
    deadline = time.monotonic() + SETTLE_BOUND_S
    while True:  # the mock counts a usage just after writing it: poll, bounded
        reported, produced = await rig.mock.reported()
        charged = await gw.spend() - spent_before
        try:
            want = await expected(rig, kind, path, reported - reported_before,
                                  produced - produced_before, requests, charged)
        except AssertionError:  # the mock has not finished (a stream read on after a client
            if time.monotonic() > deadline:  # left ends later): poll on, bounded
                raise
            await asyncio.sleep(POLL_S)
            continue
        if charged == want or time.monotonic() > deadline:
            break
        await asyncio.sleep(POLL_S)
    TALLY.ledger_difference += charged.gap(want)
    assert charged == want, f"{name}: charged {charged}, expected {want} ({kind})"
    await gw.healthy()
    TALLY.survived += 1


def assert_openai_error(payload: bytes, code: str | None) -> None:
    error = orjson.loads(payload)["error"]
    assert set(error) >= {"message", "type", "param", "code"} and error["message"], error
    if code is not None:
        assert error["code"] == code, error
    assert UPSTREAM_KEY not in payload.decode(errors="replace")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_upstream_fault(rig: Rig, case: Case) -> None:
    async def act() -> None:
        status, headers, payload = await rig.gateway.post(case.path, body_of(case))
        assert status == case.status, payload
        if status >= 400:
            assert headers["Content-Type"].startswith("application/json"), headers
            assert_openai_error(payload, case.code)
        if case.retry_after is not None:
            assert headers.get("Retry-After") == case.retry_after
        if case.stream and status == 200:
            text = payload.decode()
            assert text.count('"usage":{') <= (
                2 if case.fields.get("stream_options") or case.path == "/responses" else 0
            ), "a usage chunk the client did not ask for stays hidden"
            cut = case.ledger == COUNTED and "no_usage" not in case.fault
            if cut and case.path != "/responses":
                assert '"error"' in text, "the client is told the stream broke off"

    await checked(rig, f"upstream: {case.name}", case.ledger, case.path, act)


# -- clients that leave ----------------------------------------------------------------------


async def _raw(rig: Rig, data: bytes, linger_s: float) -> None:
    url = rig.gateway.proc.url.removeprefix("http://")
    host, port = url.split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    await writer.drain()
    await asyncio.sleep(linger_s)  # the gateway is now waiting for the rest
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def test_client_leaves_before_its_body_is_sent(rig: Rig) -> None:
    body = orjson.dumps(BODIES["/chat/completions"])

    async def act() -> None:
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                f"{SECRET}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body) + 100}\r\n\r\n").encode()
        await _raw(rig, head + body[:10], 0.2)

    await checked(rig, "client: leaves before its body is sent", NONE, "/chat/completions", act)


async def test_client_leaves_before_its_headers_are_sent(rig: Rig) -> None:
    async def act() -> None:
        await _raw(rig, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthor", 0.2)

    await checked(rig, "client: leaves mid-headers", NONE, "/chat/completions", act)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_client_leaves_while_waiting_for_upstream_headers(rig: Rig, stream: bool) -> None:
    """The upstream answers after the client left (the handler is not cancelled): a whole JSON
    answer is read and its usage charged exactly; a stream finds nobody to write to (the
    gateway closes it and charges what the client received: the input)."""
    body = {**BODIES["/chat/completions"], "stream": stream,
            "metadata": {"mock_fault": "timeout:0.5"}}

    async def act() -> None:
        with pytest.raises(TimeoutError):
            async with rig.gateway.session.post(
                f"{rig.gateway.proc.url}/v1/chat/completions", json=body, headers=AUTH,
                timeout=aiohttp.ClientTimeout(total=0.15),
            ) as resp:
                await resp.read()

    await checked(rig, f"client: leaves while waiting for upstream headers ({stream=})",
                  SENT if stream else REPORTED, "/chat/completions", act)


async def _read_then_leave(rig: Rig, body: dict[str, Any],
                           enough: Callable[[bytes], bool]) -> None:
    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session:
        resp = await session.post(f"{rig.gateway.proc.url}/v1/chat/completions", json=body,
                                  headers=AUTH)
        assert resp.status == 200
        seen = b""
        async for chunk in resp.content.iter_any():
            seen += chunk
            if enough(seen):
                break
        resp.close()  # the client vanishes


async def test_client_leaves_mid_stream(rig: Rig) -> None:
    body = {**BODIES["/chat/completions"], "max_tokens": 40, "stream": True,
            "metadata": {"mock_fault": "slow_stream:0.015"}}  # ends within the 1 s timeout

    async def act() -> None:
        await _read_then_leave(rig, body, lambda seen: seen.count(b'"content":"') >= 3)

    # the gateway reads the upstream's stream on to its usage: what it billed is charged
    await checked(rig, "client: leaves mid-stream", REPORTED, "/chat/completions", act)


async def test_client_leaves_right_after_the_last_chunk(rig: Rig) -> None:
    body = {**BODIES["/chat/completions"], "stream": True}

    async def act() -> None:
        await _read_then_leave(rig, body, lambda seen: b"[DONE]" in seen)

    await checked(rig, "client: leaves right after the last chunk", REPORTED,
                  "/chat/completions", act)


async def test_many_clients_leave_at_once(rig: Rig) -> None:
    """Twenty streams cut at twenty points, concurrently: still nothing held, nothing lost."""
    body = {**BODIES["/chat/completions"], "max_tokens": 30, "stream": True,
            "metadata": {"mock_fault": "slow_stream:0.01"}}

    async def act() -> None:
        await asyncio.gather(*(
            _read_then_leave(rig, body, lambda seen, k=k: seen.count(b'"content":"') >= k)
            for k in range(1, 21)
        ))

    await checked(rig, "client: twenty leave mid-stream at once", REPORTED, "/chat/completions",
                  act, requests=20)
    TALLY.injected += 19  # twenty faults in one case, checked together
    TALLY.survived += 19


# -- the store goes away between admission and settlement ------------------------------------


@contextlib.contextmanager
def redis_proc(tmp: Path, port: int) -> Iterator[list[Any]]:
    """A redis-server that the test may kill and restart; stopped by its PID at the end."""
    procs = [start_redis(tmp, port, "--appendonly", "yes", "--appendfsync", "always")]
    try:
        yield procs
    finally:
        stop(procs[-1])


@pytest.mark.parametrize("policy", ["reject", "allow"])
async def test_store_killed_between_admission_and_settlement(rig: Rig, policy: str) -> None:
    tmp = rig.tmp / policy
    tmp.mkdir()
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    config = write_config(tmp / "redis.yaml", rig.mock.proc.url, url, policy)
    with redis_proc(tmp, port) as redis, serve(tmp, config, f"gateway-redis-{policy}") as proc:
        gateway = Gateway(proc, rig.gateway.session)
        body = {**BODIES["/chat/completions"], "max_tokens": 12, "stream": True,
                "metadata": {"mock_fault": "slow_stream:0.05"}}

        async def act() -> None:
            stream = asyncio.ensure_future(gateway.post("/chat/completions", body))
            deadline = time.monotonic() + SETTLE_BOUND_S
            while await gateway.metric("gateway_reservations_in_flight") < 1:
                assert time.monotonic() < deadline, "the request was never admitted"
                await asyncio.sleep(POLL_S)
            stop(redis[-1], signal.SIGKILL)  # admitted, not yet settled
            status, _, payload = await stream
            assert status == 200 and b"[DONE]" in payload
            during = await gateway.post("/chat/completions", BODIES["/chat/completions"])
            if policy == "reject":
                assert during[0] == 503
                assert_openai_error(during[2], "budget_store_unavailable")
            else:
                assert during[0] == 200, during[2]
            redis.append(start_redis(tmp, port, "--appendonly", "yes", "--appendfsync",
                                     "always"))
            await _spend_readable(gateway)

        await checked(rig, f"store: redis killed mid-request (on_store_error: {policy})",
                      REPORTED, "/chat/completions", act, gateway)
        store = RedisStore.from_url(url)
        try:
            assert await store.in_flight(time.time()) == 0, "no reservation left in Redis"
        finally:
            await store.close()
    TALLY.injected += 1  # the request refused or let through while the store was down
    TALLY.survived += 1


async def _spend_readable(gateway: Gateway) -> None:
    """The admin API answers again once Redis is back (bounded)."""
    deadline = time.monotonic() + SETTLE_BOUND_S
    while True:
        async with gateway.session.get(f"{gateway.proc.url}/api/client/v1/spend/report",
                                       headers=AUTH) as resp:
            if resp.status == 200:
                return
        assert time.monotonic() < deadline, "the store did not come back"
        await asyncio.sleep(POLL_S)


def test_zz_fault_summary(procs: Procs, capsys: pytest.CaptureFixture[str]) -> None:
    """Ordered last in this module: the figures for the README. A client that left is no
    error of the gateway's, nor of the upstream's: nothing above logged one as such."""
    log = procs.gateway.output()
    assert '"level":"error"' not in log
    assert "ClientConnectionResetError" not in log
    assert '"status":499' in log, "a client that left mid-body is logged as 499"
    assert TALLY.injected >= len(CASES)
    assert TALLY.survived == TALLY.injected
    assert TALLY.ledger_difference == 0
    with capsys.disabled():
        print(f"\nfault suite: {TALLY.injected} faults injected, {TALLY.survived} survived, "
              f"ledger difference {TALLY.ledger_difference}")
