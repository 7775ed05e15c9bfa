"""The request path's script calls over one connection of their own, spoken in RESP directly.

redis-py's asyncio client costs ~100 us of CPU per call (a pooled connection checked out and
back, a timeout and a retry wrapper per read, event dispatch), about twice what Redis takes to
run the reserve script, and it is paid twice per request. The two scripts the request path
calls are plain EVALSHAs whose answers are plain arrays, so they need none of that: this lane
writes every call of one event-loop turn in one write on one kept connection (Redis answers in
order), and hiredis, the parser redis-py itself uses, reads the answers. ~35 us per call.

It only carries calls; redis-py stays in charge of everything else. A call the lane cannot
make (no connection yet and none to be had) goes the redis-py way, as do those Redis answered
NOSCRIPT or LOADING (it did not run them). A call written on a connection that then fails is
never sent again (it may have run): it fails with ``ConnectionError``, as a store error.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import time
from collections.abc import Sequence
from typing import Any, cast

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio.connection import ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse
from redis.exceptions import TimeoutError as RedisTimeoutError

REPLY_TIMEOUT_S = 5.0  # redis-py's socket timeout: a connection this slow to answer is dropped
CONNECT_TIMEOUT_S = 5.0
RETRY_AFTER_S = 1.0  # after a failed connection attempt, before the next

Command = tuple[Any, ...]  # a command and its arguments: str, bytes, int or float


class Unavailable(Exception):
    """The lane has no connection and could not open one: nothing was sent."""


class RespLane:
    def __init__(self, host: str, port: int, *, username: str | None = None,
                 password: str | None = None, db: int = 0) -> None:
        self._address = host, port
        self._hello: list[Command] = []  # sent first on every new connection
        if password:
            self._hello.append(("AUTH", username, password) if username else ("AUTH", password))
        if db:
            self._hello.append(("SELECT", db))
        self._protocol: _Protocol | None = None
        self._opening: asyncio.Future[_Protocol] | None = None
        self._retry_at = 0.0  # after a failed attempt, calls go redis-py's way for a while

    @classmethod
    def of(cls, pool: ConnectionPool) -> RespLane:
        """A lane to the server of ``pool``, a plain TCP one (the caller knows: not TLS, not a
        Unix socket, whose connections the lane does not make)."""
        kwargs = pool.connection_kwargs
        return cls(kwargs.get("host", "localhost"), int(kwargs.get("port", 6379)),
                   username=kwargs.get("username"), password=kwargs.get("password"),
                   db=int(kwargs.get("db", 0) or 0))

    async def send(self, commands: Sequence[Command]) -> list[Any]:
        """Each command's answer, in order (an error answer as the exception redis-py makes
        of it: ``NoScriptError``, ``ResponseError``...).

        Raises ``Unavailable`` when nothing was sent, ``ConnectionError`` or
        ``TimeoutError`` (redis-py's) when the connection failed after the write."""
        protocol = await self._connection()
        futures = protocol.send(commands)
        try:
            return [await future for future in futures]  # answered in order
        finally:
            for future in futures:  # on failure all fail alike: one is raised, none is lost
                if future.done() and not future.cancelled():
                    future.exception()

    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and protocol.open:
            return protocol
        if self._opening is None:  # one connection attempt for every caller waiting on it
            if time.monotonic() < self._retry_at:
                raise Unavailable("redis was unreachable a moment ago")
            self._opening = asyncio.ensure_future(self._open())
        opening = self._opening
        try:
            return await asyncio.shield(opening)
        finally:
            if opening.done() and self._opening is opening:
                self._opening = None

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                _, protocol = await loop.create_connection(_Protocol, *self._address)
                if self._hello:
                    for future in protocol.send(self._hello):
                        reply = await future
                        if isinstance(reply, Exception):
                            protocol.close()
                            raise RedisConnectionError(f"redis refused the handshake: {reply}")
        except (OSError, TimeoutError, RedisConnectionError) as exc:
            self._retry_at = time.monotonic() + RETRY_AFTER_S
            raise Unavailable(str(exc) or type(exc).__name__) from None
        self._protocol = protocol
        return protocol

    def close(self) -> None:
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None


class _Protocol(asyncio.Protocol):
    """One connection: commands written in order, each answer given to its waiter in order."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader(protocolError=InvalidResponse,
                                      replyError=BaseParser.parse_error)  # as redis-py's
        self._waiting: collections.deque[tuple[float, asyncio.Future[Any]]] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self.open = False
        self.closed = asyncio.Event()  # set once the connection is not used again

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None:  # as redis-py's: a peer gone silent is found, not waited on
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.open = True

    def send(self, commands: Sequence[Command]) -> list[asyncio.Future[Any]]:
        if not self.open or self._transport is None:
            raise Unavailable("the lane's connection closed")
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        futures = [loop.create_future() for _ in commands]
        self._transport.write(b"".join(hiredis.pack_command(c) for c in commands))
        self._waiting.extend((deadline, f) for f in futures)
        if self._watchdog is None:
            self._watchdog = loop.call_later(REPLY_TIMEOUT_S, self._check_late)
        return futures

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            if not self._waiting:  # an answer nobody asked for: the stream is out of step
                self._fail(RedisConnectionError("redis answered more than it was asked"))
                return
            _, future = self._waiting.popleft()
            if not future.done():
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"connection to redis lost: {exc or 'closed'}"))

    def close(self) -> None:
        self._fail(RedisConnectionError("the lane was closed"))

    def _check_late(self) -> None:
        self._watchdog = None
        if not self._waiting:
            return
        deadline, _ = self._waiting[0]
        late = deadline - time.monotonic()
        if late <= 0:
            self._fail(RedisTimeoutError(f"redis did not answer within {REPLY_TIMEOUT_S:g} s"))
        else:
            self._watchdog = asyncio.get_running_loop().call_later(late, self._check_late)

    def _fail(self, exc: Exception) -> None:
        """Every waiting call fails with ``exc``, and the connection is not used again."""
        self.open = False
        self.closed.set()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._transport is not None:
            self._transport.abort()
            self._transport = None
        while self._waiting:
            _, future = self._waiting.popleft()
            if not future.done():
                future.set_exception(exc)
