"""Slow clients and the HTTP layer's own errors against a real gateway process (issue 13).

- Slow clients: 300 connections at once, half sending a large head a byte at a time, half a
  large head then a body announced as 1,000,000 bytes a byte at a time; each is answered 408
  and closed within ``limits.header_timeout_s`` / ``body_timeout_s``, RSS stays bounded, and a
  normal request goes through meanwhile.
- Errors aiohttp's parser raises (bad header bytes, oversized heads, a request line it cannot
  read, compressed bodies): OpenAI-shaped JSON that echoes nothing the client sent, never a
  500; the key sent in a malformed header appears neither in the answer nor in the log file.

Raw sockets throughout: no client library would send these bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiohttp import web

from gateway.errors import Unauthenticated
from gateway.http_server import GatewayRunner
from gateway.log import JsonFormatter
from gateway.proxy.auth import Keyring
from gateway.settings.schema import KeySettings, LimitSettings, TenantSettings
from tests import leaks
from tests.procs import Proc, gateway_process, mock_upstream, rss_mb

SECRET = "sk-e2e-http-layer-0123456789abcdef"
leaks.SECRETS.add(SECRET)
HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 3.0
MAX_HEADER_BYTES = 16_384
CLOSE_MARGIN_S = 2.0  # scheduling slack with 300 connections open, never a speed claim
GIVE_UP_S = 20.0  # a slow client that is still open by then was never closed
TRICKLE_S = 0.25  # one byte this often
SLOW_CLIENTS = 300
RSS_GROWTH_BOUND_MB = 120.0
CHAT = {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
BODY = orjson.dumps(CHAT)

CONFIG = """
store: "memory://"
upstreams:
  mock: {{base_url: "{mock}/v1", api_key: "sk-e2e-http-upstream-0123456789", timeout_s: 10}}
pricing:
  gpt-4o-mini: {{input: 0.15, cached_input: 0.075, output: 0.60}}
limits:
  header_timeout_s: {header}
  body_timeout_s: {body}
  max_header_bytes: {max_header}
tenants:
  http:
    keys:
      - {{name: app, sha256: "{sha}", role: admin}}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("abuse-http")
    with mock_upstream(tmp) as mock:
        path = tmp / "gateway.yaml"
        path.write_text(CONFIG.format(
            mock=mock.url, header=HEADER_TIMEOUT_S, body=BODY_TIMEOUT_S,
            max_header=MAX_HEADER_BYTES, sha=hashlib.sha256(SECRET.encode()).hexdigest()))
        with gateway_process(path, tmp / "gateway.log") as proc:
            yield proc


def address(gw: Proc) -> tuple[str, int]:
    host, port = gw.url.removeprefix("http://").split(":")
    return host, int(port)


def head(request_line: str, *headers: bytes) -> bytes:
    return request_line.encode() + b"\r\nHost: x\r\n" + b"".join(h + b"\r\n" for h in headers)


AUTH = b"Authorization: Bearer " + SECRET.encode()


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    raw: bytes

    @classmethod
    def parse(cls, raw: bytes) -> Answer:
        top, _, body = raw.partition(b"\r\n\r\n")
        lines = top.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1]) if lines[0].startswith("HTTP/") else 0
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines[1:])}
        return cls(status, headers, body, raw)

    def error(self) -> dict[str, Any]:
        """The OpenAI-shaped error this answer must be; it echoes no key."""
        assert SECRET.encode() not in self.raw, self.raw[:300]
        assert self.headers.get("content-type", "").startswith("application/json"), self.raw
        error: dict[str, Any] = orjson.loads(self.body)["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
        return error


async def send(gw: Proc, data: bytes, timeout_s: float = 10.0) -> Answer:
    """Writes ``data`` at once and reads until the gateway closes the connection."""
    return await send_to(address(gw), data, timeout_s)


async def send_to(where: tuple[str, int], data: bytes, timeout_s: float = 10.0) -> Answer:
    reader, writer = await asyncio.open_connection(*where)
    try:
        writer.write(data)
        await writer.drain()
        return Answer.parse(await asyncio.wait_for(reader.read(), timeout_s))
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def still_serves(gw: Proc) -> float:
    """A normal chat completion through the gateway: 200; returns its latency."""
    started = time.monotonic()
    answer = await send(gw, head("POST /v1/chat/completions HTTP/1.1", AUTH,
                                 b"Content-Type: application/json",
                                 f"Content-Length: {len(BODY)}".encode(),
                                 b"Connection: close") + b"\r\n" + BODY)
    assert answer.status == 200, answer.raw[:300]
    return time.monotonic() - started



# -- slow clients ----------------------------------------------------------------------------


def large_headers(total: int) -> list[bytes]:
    """Header lines of up to 8,000 bytes (aiohttp's own default limit is 8,190) adding up to
    about ``total`` (the gateway's bound on a whole head is 4 x max_header_bytes)."""
    lines, left, i = [], total, 0
    while left > 0:
        size = min(8_000, left)
        lines.append(f"X-Pad-{i}: ".encode() + b"p" * size)
        left, i = left - size, i + 1
    return lines


SLOW_HEAD = head("POST /v1/chat/completions HTTP/1.1", AUTH, *large_headers(48_000)) + b"X-Last: "
SLOW_BODY = head("POST /v1/chat/completions HTTP/1.1", AUTH, *large_headers(48_000),
                 b"Content-Type: application/json", b"Content-Length: 1000000") + b"\r\n{"


@dataclass(frozen=True, slots=True)
class Slow:
    kind: str
    closed_s: float | None  # None: still open when the client gave up
    answer: Answer


async def slow_client(gw: Proc, kind: str, first: bytes) -> Slow:
    """Sends ``first`` at once, then a byte every ``TRICKLE_S`` until the gateway closes."""
    reader, writer = await asyncio.open_connection(*address(gw))
    started = time.monotonic()
    reading = asyncio.ensure_future(reader.read())
    try:
        writer.write(first)
        while not reading.done() and time.monotonic() - started < GIVE_UP_S:
            with contextlib.suppress(ConnectionError):
                writer.write(b"p")
                await writer.drain()
            await asyncio.wait([reading], timeout=TRICKLE_S)
        closed_s = time.monotonic() - started if reading.done() else None
        raw = reading.result() if reading.done() and not reading.exception() else b""
        return Slow(kind, closed_s, Answer.parse(raw))
    finally:
        reading.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_slow_clients_are_answered_408_and_closed_in_time(
    gateway: Proc, capsys: pytest.CaptureFixture[str]
) -> None:
    pid = gateway.popen.pid
    await still_serves(gateway)
    before = rss_mb(pid)
    kinds = [("head", SLOW_HEAD), ("body", SLOW_BODY)]
    clients = [asyncio.ensure_future(slow_client(gateway, *kinds[i % 2]))
               for i in range(SLOW_CLIENTS)]
    peak = before
    await asyncio.sleep(1.0)  # every slow client connected and sending
    normal_s = await still_serves(gateway)
    while not all(c.done() for c in clients):
        peak = max(peak, rss_mb(pid))
        await asyncio.wait(clients, timeout=0.2)
    slow = [c.result() for c in clients]
    await asyncio.sleep(1.0)
    after = rss_mb(pid)
    await still_serves(gateway)

    closes = {kind: sorted(s.closed_s or GIVE_UP_S for s in slow if s.kind == kind)
              for kind, _ in kinds}
    with capsys.disabled():
        print(f"\n{SLOW_CLIENTS} slow clients ({SLOW_CLIENTS // 2} heads and "
              f"{SLOW_CLIENTS // 2} bodies of 1,000,000 bytes, a byte every {TRICKLE_S}s, "
              f"~48 KB of headers each): heads closed after {closes['head'][0]:.1f}-"
              f"{closes['head'][-1]:.1f} s (header_timeout_s {HEADER_TIMEOUT_S:g}), bodies "
              f"after {closes['body'][0]:.1f}-{closes['body'][-1]:.1f} s (body_timeout_s "
              f"{BODY_TIMEOUT_S:g}); gateway RSS {before:.0f} -> peak {peak:.0f} -> "
              f"{after:.0f} MB; a normal request meanwhile: 200 in {normal_s * 1000:.0f} ms")
    for client in slow:
        limit = HEADER_TIMEOUT_S if client.kind == "head" else BODY_TIMEOUT_S
        assert client.closed_s is not None, f"a slow {client.kind} still open after {GIVE_UP_S}s"
        assert client.closed_s <= limit + CLOSE_MARGIN_S, client
        assert client.answer.status == 408, client.answer.raw[:300]
        assert client.answer.error()["code"] == "request_timeout"
    assert peak - before < RSS_GROWTH_BOUND_MB


async def test_large_heads_are_refused_before_they_are_held(
    gateway: Proc, capsys: pytest.CaptureFixture[str]
) -> None:
    """The shape that took 469 MB: 300 connections, each a head of ~1 MB (125 lines of 8,000
    bytes, each line within the limit) then a slow body. Refused with 431 at 64 KiB, before
    the parser holds it; the rest is read and dropped so that the client reads its answer."""
    pid = gateway.popen.pid
    before = rss_mb(pid)
    first = head("POST /v1/chat/completions HTTP/1.1", AUTH, *large_headers(1_000_000),
                 b"Content-Length: 1000000") + b"\r\n{"
    clients = [asyncio.ensure_future(slow_client(gateway, "huge", first))
               for _ in range(SLOW_CLIENTS)]
    peak = before
    while not all(c.done() for c in clients):
        peak = max(peak, rss_mb(pid))
        await asyncio.wait(clients, timeout=0.1)
    slow = [c.result() for c in clients]
    closed = sorted(s.closed_s or GIVE_UP_S for s in slow)
    with capsys.disabled():
        print(f"\n{SLOW_CLIENTS} heads of ~1 MB then a slow body: closed after "
              f"{closed[0]:.1f}-{closed[-1]:.1f} s, each answered 431; gateway RSS "
              f"{before:.0f} -> peak {peak:.0f} MB")
    assert closed[-1] <= CLOSE_MARGIN_S
    for client in slow:
        assert client.answer.status == 431, client.answer.raw[:300]
        assert client.answer.error()["code"] == "request_header_fields_too_large"
    assert peak - before < RSS_GROWTH_BOUND_MB
    await still_serves(gateway)


async def test_a_connection_that_sends_nothing_is_closed_without_an_answer(
    gateway: Proc
) -> None:
    reader, writer = await asyncio.open_connection(*address(gateway))
    started = time.monotonic()
    try:
        assert await asyncio.wait_for(reader.read(), GIVE_UP_S) == b""
    finally:
        writer.close()
    assert time.monotonic() - started <= HEADER_TIMEOUT_S + CLOSE_MARGIN_S


async def test_a_slow_admin_body_is_answered_408(gateway: Proc) -> None:
    """The admin API reads its bodies through the same bounded reader."""
    first = head("POST /api/client/v1/budgets HTTP/1.1", AUTH, b"Content-Type: application/json",
                 b"Content-Length: 1000") + b"\r\n{"
    client = await slow_client(gateway, "body", first)
    assert client.closed_s is not None and client.closed_s <= BODY_TIMEOUT_S + CLOSE_MARGIN_S
    assert client.answer.status == 408 and client.answer.error()["code"] == "request_timeout"


async def test_a_slow_keep_alive_request_is_timed_from_its_first_byte(gateway: Proc) -> None:
    """A kept-alive connection idles under keepalive rules; the head of its next request has
    ``header_timeout_s`` from its first byte."""
    reader, writer = await asyncio.open_connection(*address(gateway))
    try:
        writer.write(head("GET /v1/models HTTP/1.1", AUTH) + b"\r\n")
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert first.startswith(b"HTTP/1.1 200"), first
        length = int(Answer.parse(first).headers["content-length"])
        await reader.readexactly(length)
        await asyncio.sleep(HEADER_TIMEOUT_S + 0.5)  # idle: still open
        writer.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        answer = Answer.parse(await asyncio.wait_for(reader.read(), GIVE_UP_S))
    finally:
        writer.close()
    assert answer.status == 408 and answer.error()["code"] == "request_timeout"
    assert time.monotonic() - started <= HEADER_TIMEOUT_S + CLOSE_MARGIN_S


async def test_large_bodies_on_a_kept_alive_connection_are_not_taken_for_heads(
    gateway: Proc
) -> None:
    """Bodies of 300 KB, one request after another on one connection, and pipelined: the head
    bound counts heads only."""
    content = "x" * 300_000
    body = orjson.dumps({**CHAT, "messages": [{"role": "user", "content": content}]})
    one = head("POST /v1/chat/completions HTTP/1.1", AUTH, b"Content-Type: application/json",
               f"Content-Length: {len(body)}".encode()) + b"\r\n" + body
    reader, writer = await asyncio.open_connection(*address(gateway))
    try:
        for pipelined in (1, 1, 3):
            writer.write(one * pipelined)
            for _ in range(pipelined):
                top = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                answer = Answer.parse(top)
                assert answer.status == 200, top
                await reader.readexactly(int(answer.headers["content-length"]))
    finally:
        writer.close()


# -- the HTTP layer's own errors -------------------------------------------------------------


def chat_request(*headers: bytes, body: bytes = BODY, path: str = "/v1/chat/completions"
                 ) -> bytes:
    return head(f"POST {path} HTTP/1.1", *headers, b"Content-Type: application/json",
                f"Content-Length: {len(body)}".encode(), b"Connection: close") + b"\r\n" + body


def models_request(*headers: bytes) -> bytes:
    return head("GET /v1/models HTTP/1.1", *headers, b"Connection: close") + b"\r\n"


KEY = SECRET.encode()
ERRORS: list[tuple[str, bytes, int]] = [
    ("key then \\x0b", models_request(b"Authorization: Bearer " + KEY + b"\x0b"), 400),
    ("key then byte 0xA0", models_request(b"Authorization: Bearer " + KEY + b"\xa0"), 401),
    ("key then UTF-8 no-break space",
     models_request(b"Authorization: Bearer " + KEY + b"\xc2\xa0"), 401),
    ("key then NUL", models_request(b"Authorization: Bearer " + KEY + b"\x00"), 400),
    ("key then DEL", models_request(b"Authorization: Bearer " + KEY + b"\x7f"), 400),
    ("\\x0b between Bearer and key", models_request(b"Authorization: Bearer\x0b" + KEY), 400),
    ("key then a second word", models_request(b"Authorization: Bearer " + KEY + b" more"), 401),
    ("key in a header line over max_header_bytes",
     models_request(b"X-Note: " + KEY + b"A" * MAX_HEADER_BYTES), 431),
    ("key in a head over 4 x max_header_bytes",
     models_request(b"X-Note: " + KEY, *large_headers(4 * MAX_HEADER_BYTES)), 431),
    ("key in a request line over max_header_bytes",
     b"GET /" + KEY + b"a" * MAX_HEADER_BYTES + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431),
    ("Content-Encoding: br", chat_request(AUTH, b"Content-Encoding: br"), 415),
    ("Content-Encoding: gzip (a bomb)",
     chat_request(AUTH, b"Content-Encoding: gzip", body=gzip.compress(b" " * 10_000_000)), 415),
    ("Content-Encoding: unknown", chat_request(AUTH, b"Content-Encoding: x-unknown"), 415),
    ("admin body with Content-Encoding: gzip",
     chat_request(AUTH, b"Content-Encoding: gzip", body=gzip.compress(b"{}"),
                  path="/api/client/v1/budgets"), 415),
    ("request line POST *", chat_request(AUTH, path="*"), 400),
    ("TLS on the HTTP port", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + KEY, 400),
    ("byte 0xA0 in the path", b"GET /v1/\xa0" + KEY + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("chunk size not hex", head("POST /v1/chat/completions HTTP/1.1", AUTH,
                                b"Transfer-Encoding: chunked", b"Connection: close")
     + b"\r\nzz\r\n" + KEY + b"\r\n0\r\n\r\n", 400),
    ("negative Content-Length", head("POST /v1/chat/completions HTTP/1.1", AUTH,
                                     b"Content-Length: -1") + b"\r\n", 400),
]


@pytest.mark.parametrize(("name", "data", "status"), ERRORS, ids=[e[0] for e in ERRORS])
async def test_http_layer_errors_are_json_and_echo_nothing(
    gateway: Proc, name: str, data: bytes, status: int
) -> None:
    answer = await send(gateway, data)
    assert answer.status == status, answer.raw[:300]
    answer.error()


async def test_odd_bytes_where_the_gateway_reads_them_never_make_a_500(gateway: Proc) -> None:
    """Bytes aiohttp lets through, in headers the gateway reads or forwards."""
    for data in [chat_request(AUTH, b"User-Agent: x\xa0\xff"),
                 chat_request(AUTH, b"Accept: \xa0"),
                 chat_request(AUTH, b"x-request-id: \xa0\xff" + KEY),
                 chat_request(AUTH, b"Content-Type: application/json; charset=\xff"),
                 models_request(b"Authorization: \xa0Bearer " + KEY),
                 models_request(b"Authorization: Basic " + KEY + b"\xa0")]:
        answer = await send(gateway, data)
        assert 200 <= answer.status < 500, answer.raw[:300]
        assert SECRET.encode() not in answer.raw
        if answer.status >= 400:
            answer.error()


async def test_zz_no_key_in_the_log_and_it_still_serves(
    gateway: Proc, capsys: pytest.CaptureFixture[str]
) -> None:
    """After every case above against this process (a module runs in order): it still serves,
    and its log holds no key, no traceback and no logging error."""
    await still_serves(gateway)
    text = gateway.output()
    assert SECRET not in text
    assert "Traceback" not in text and "Logging error" not in text
    assert '"status":500' not in text
    with capsys.disabled():
        print(f"\nHTTP layer: {len(ERRORS)} malformed requests answered as JSON, 0 echoed the "
              f"key, 0 log lines held it ({len(text.splitlines())} lines)")


# -- in-process: the formatter and the key parser --------------------------------------------


def record(msg: str, *args: object, exc: BaseException | None = None,
           fields: dict[str, Any] | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    made = logging.LogRecord("t", logging.ERROR, __file__, 1, msg, args, exc_info)
    if fields is not None:
        made.fields = fields
    return made


def test_the_log_formatter_never_raises_and_scrubs_bearer_tokens() -> None:
    formatter = JsonFormatter()
    try:
        raise ValueError(f"Invalid header value char: b'Authorization: Bearer {SECRET}\\x0b'")
    except ValueError as exc:
        caught = exc
    lines = [
        formatter.format(record("key %s", f"Bearer {SECRET}\udca0")),  # a lone surrogate
        formatter.format(record("%d of %d", "not a number")),  # arguments that do not fit
        formatter.format(record("huge", fields={"n": 2**80, "k": f"bearer\x0b{SECRET}"})),
        formatter.format(record("failed", exc=caught)),
        formatter.format(record("nested", fields={"d": {"a": [f"Bearer {SECRET}"]}})),
    ]
    for line in lines:
        assert SECRET not in line, line
        orjson.loads(line)
    assert "Bearer ****" in lines[0]


@pytest.mark.parametrize("value", [
    f"Bearer {SECRET}\udca0", f"Bearer {SECRET}\xa0", f"Bearer {SECRET} more",
    f"Bearer {SECRET}\x0b", f"Bearer \u202e{SECRET}", f"Basic {SECRET}", "Bearer ", "Bearer",
])
def test_a_malformed_authorization_value_is_a_401_that_echoes_nothing(value: str) -> None:
    key = KeySettings(name="k", sha256=hashlib.sha256(SECRET.encode()).hexdigest())
    keyring = Keyring({"t": TenantSettings(name="t", keys=(key,))})
    with pytest.raises(Unauthenticated) as refused:
        keyring.authenticate(value)
    assert SECRET[3:-4] not in refused.value.message
    assert SECRET[-4:] not in refused.value.message
    assert "Malformed" in refused.value.message
    orjson.dumps(refused.value.body())  # renderable: no lone surrogate


async def test_a_failure_outside_the_middleware_is_a_json_500_that_echoes_nothing(
    caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp's own 500 (a handler that raised past every middleware), as GatewayRunner
    serves it: JSON that says nothing of the exception; its log line keeps no key."""
    async def fail(request: web.Request) -> web.Response:
        raise ValueError(f"Authorization: Bearer {SECRET}")

    app = web.Application()
    app.router.add_get("/", fail)
    runner = GatewayRunner(app, limits=lambda: LimitSettings(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        answer = await send_to((host, port), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        await runner.cleanup()
    assert answer.status == 500 and answer.error()["type"] == "server_error"
    lines = [JsonFormatter().format(r) for r in caplog.records if r.name == "gateway.http_server"]
    assert lines and all(SECRET not in line for line in lines)
