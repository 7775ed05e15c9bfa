"""The HTTP layer under the app: what aiohttp's server does before a request reaches the
middleware, bounded by ``limits:`` and answered the gateway's way.

- A request's head (request line and headers) must arrive within ``header_timeout_s``, counted
  from the connection's opening, or on a kept-alive connection from the first byte of the next
  request: else 408 and the connection is closed. A connection that sent nothing is closed
  without an answer (there is no request to answer; browsers treat a 408 there as an error).
- Its body must arrive within ``body_timeout_s`` of the gateway starting on the request: else
  the reader gets ``BodyTimeout``, which ``read_body`` answers with 408, and the connection is
  closed after the answer (the partial body goes with it).
- One header line at most ``max_header_bytes``, the whole head at most ``HEAD_LINES`` times
  that (as nginx's ``large_client_header_buffers``): else 431.
- Every error aiohttp itself answers (a request its parser cannot read, a handler that failed
  outside the middleware) is OpenAI-shaped JSON that echoes nothing the client sent, and is
  logged without it: a malformed header may carry a key.

``GatewayRunner`` is ``web.AppRunner`` serving the app through ``GatewayServer``, whose
connections are ``GatewayProtocol``; each connection takes the limits current when it opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from http import HTTPStatus
from typing import Any, cast

import orjson
from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestPayloadError

from gateway.errors import (
    ClientClosedRequest,
    GatewayError,
    HeadersTooLarge,
    InvalidRequest,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedEncoding,
)
from gateway.log import FIELDS
from gateway.settings.schema import LimitSettings

log = logging.getLogger(__name__)

HEAD_LINES = 4  # a request's whole head: at most this many longest header lines
_READ_CHUNK = 1 << 16
_IDENTITY = frozenset({"", "identity"})
_HEAD_END = b"\r\n\r\n"  # aiohttp's parser takes CRLF only

RequestFactory = Callable[
    [RawRequestMessage, StreamReader, web.RequestHandler, AbstractStreamWriter,
     "asyncio.Task[None]"],
    web.BaseRequest,
]


class BodyTimeout(asyncio.TimeoutError):
    """Set on a request's body that did not arrive within ``body_timeout_s``. A TimeoutError,
    so that aiohttp stops reading the rest of it after the answer and closes the connection."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"request body not received within {timeout_s:g}s")
        self.timeout_s = timeout_s


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request's body, uncompressed as sent: at most ``limit`` bytes (a larger one is
    refused before it is held in memory), within the connection's ``body_timeout_s``.

    A body whose length its head states is read in one call (the common case, and ~20 us
    cheaper than chunk by chunk); a chunked one as it arrives, counted against ``limit``."""
    length = request.content_length
    if length is None:
        return b"".join([chunk async for chunk in body_chunks(request, limit)])
    _check_head(request, limit)
    if length == 0:
        return b""  # (aiohttp's empty body reader refuses even a read of nothing)
    with _body_errors():
        return await request.content.readexactly(length)


async def body_chunks(request: web.Request, limit: int,
                      chunks: AsyncIterator[bytes] | None = None) -> AsyncIterator[bytes]:
    """The body as it arrives (or ``chunks`` read from it, such as a multipart part's), at
    most ``limit`` bytes in all; its failures said as the client's errors (413, 408, 499)."""
    _check_head(request, limit)
    size = 0
    with _body_errors():
        async for chunk in chunks or request.content.iter_chunked(_READ_CHUNK):
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            yield chunk


def _check_head(request: web.Request, limit: int) -> None:
    """What the head alone can refuse: a compressed body, or one longer than ``limit``."""
    if request.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower() not in _IDENTITY:
        raise UnsupportedEncoding(
            "Request bodies with a Content-Encoding are not accepted: send the JSON "
            "uncompressed (OpenAI's API takes no compressed request bodies either)."
        )
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)


@contextlib.contextmanager
def _body_errors() -> Iterator[None]:
    """A body's failures to arrive, said as the client's errors (408, 499, 400)."""
    try:
        yield
    except BodyTimeout as late:
        raise RequestTimeout(
            f"The request body was not received within {late.timeout_s:g}s."
        ) from None
    except (ConnectionResetError, asyncio.IncompleteReadError):
        raise ClientClosedRequest(
            "The client closed the connection before its body was sent."
        ) from None
    except RequestPayloadError:
        raise InvalidRequest(
            "The request body's framing is not valid HTTP/1.1 (chunked encoding or length).",
            code="invalid_request_body",
        ) from None


def _too_large(limit: int) -> PayloadTooLarge:
    """Made only when raised: an error made for every body would cost every request."""
    return PayloadTooLarge(
        f"The request body is larger than this gateway's limit of {limit} bytes."
    )


def raw_response(error: GatewayError, request_id: str) -> bytes:
    """A whole HTTP/1.1 answer, for a connection that has no request object to answer."""
    body = orjson.dumps(error.body())
    head = (f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"x-request-id: {request_id}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode("ascii") + body


def protocol_error(status: int, exc: BaseException | None) -> GatewayError:
    """What aiohttp's server would answer in plain text (echoing the offending bytes), as a
    gateway error that says only what kind of problem it was."""
    if isinstance(exc, LineTooLong):
        return HeadersTooLarge("A header line of the request is longer than this gateway "
                               "accepts (limits.max_header_bytes).")
    if isinstance(exc, HttpProcessingError) or status == 400:
        return InvalidRequest("The request is not valid HTTP/1.1 and could not be read.",
                              code="invalid_http_request")
    if status == 504:
        error = GatewayError("The gateway timed out handling the request.")
        error.status = 504
        return error
    return GatewayError("The gateway failed to handle the request.")


class GatewayProtocol(web.RequestHandler):
    """One connection: aiohttp's, with deadlines for the head and the body and JSON errors."""

    def __init__(self, manager: web.Server, *, limits: LimitSettings, **kwargs: Any) -> None:
        super().__init__(manager, max_line_size=limits.max_header_bytes,
                         max_field_size=limits.max_header_bytes, auto_decompress=False,
                         **kwargs)
        self._limits = limits
        self._max_head = limits.max_header_bytes * HEAD_LINES
        self._awaiting_head = True  # the parser is between requests (not in a body)
        self._head_bytes = 0  # received of the head being awaited
        self._head_tail = b""  # its last bytes: the end of the head may span two reads
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_was_late = False  # its 408 is answered with the rest of the body unread

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_head_timer()

    def close(self) -> None:
        """aiohttp closes a connection whose body was not all read once the answer is sent;
        after a late body's 408 the client is likely still sending, so it lingers."""
        if self._body_was_late and self.transport is not None and not self._force_close:
            self._linger(self.transport)
        else:
            super().close()

    def connection_lost(self, exc: BaseException | None) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._force_close or self._close:
            return
        in_head = self._awaiting_head and bool(data)  # else body bytes (or a reparse)
        if in_head:
            if self._head_timer is None:  # the next request on a kept-alive connection
                self._arm_head_timer()
            if self._head_too_large(data):  # refused before the parser holds any of it
                self._refuse(HeadersTooLarge(
                    f"The request's headers are larger than this gateway accepts "
                    f"({self._max_head} bytes in all, limits.max_header_bytes per line)."))
                return
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:
            self._head_received(self._messages[-1][1])
        elif in_head:  # all of it within the head
            self._head_bytes += len(data)
            self._head_tail = (self._head_tail + data)[-len(_HEAD_END) + 1:]

    def start_body_clock(self, payload: StreamReader) -> None:
        """The gateway starts on a request: its body has ``body_timeout_s`` to arrive."""
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        if payload.is_eof():
            return
        timer = self._loop.call_later(self._limits.body_timeout_s, self._body_late, payload)
        self._body_timer = timer
        payload.on_eof(timer.cancel)

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None, message: str | None = None
                     ) -> web.StreamResponse:
        """aiohttp's error answer (the parser's 400s, a failure outside the middleware), as
        JSON that echoes nothing; the log says what kind of error, never its bytes."""
        error = protocol_error(status, exc)
        if error.status >= 500:
            log.error("%d from the HTTP layer: %s", error.status, type(exc).__name__,
                      exc_info=exc)
        elif not (isinstance(exc, BadHttpMethod) and self._request_count == 1):
            log.info("refused a request the HTTP parser could not read (%s): %d",
                     type(exc).__name__, error.status)
        if request.writer.output_size > 0:  # an answer is under way: only closing is left
            raise ConnectionError("the response is already being sent")
        response = web.Response(body=orjson.dumps(error.body()), status=error.status,
                                content_type="application/json",
                                headers={"x-request-id": f"req_{uuid.uuid4().hex}"})
        response.force_close()
        return response

    def _head_too_large(self, data: bytes) -> bool:
        """Would the head being awaited, with what ``data`` holds of it, pass ``_max_head``?"""
        window = self._head_tail + data
        end = window.find(_HEAD_END)
        in_data = len(data) if end < 0 else end + len(_HEAD_END) - len(self._head_tail)
        return self._head_bytes + in_data > self._max_head

    def _arm_head_timer(self) -> None:
        self._head_timer = self._loop.call_later(self._limits.header_timeout_s, self._head_late)

    def _head_received(self, payload: StreamReader) -> None:
        """A head was parsed: the parser now reads its body, if it has one."""
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._head_bytes, self._head_tail = 0, b""
        self._awaiting_head = payload.is_eof()
        if not self._awaiting_head:
            payload.on_eof(self._body_received)

    def _body_received(self) -> None:
        self._awaiting_head = True
        self._head_bytes, self._head_tail = 0, b""

    def _head_late(self) -> None:
        self._head_timer = None
        if self._force_close or self._close or self.transport is None:
            return
        if self._request_in_progress or self._messages:  # answering earlier requests first
            self._arm_head_timer()
            return
        if not self._head_bytes:
            log.debug("closed a connection that sent no request within %gs",
                      self._limits.header_timeout_s)
            self.force_close()
            return
        self._refuse(RequestTimeout(
            f"The request's headers were not received within {self._limits.header_timeout_s:g}s."
        ))

    def _body_late(self, payload: StreamReader) -> None:
        self._body_timer = None
        if not payload.is_eof() and payload.exception() is None:
            self._body_was_late = True
            payload.set_exception(BodyTimeout(self._limits.body_timeout_s))

    def _refuse(self, error: GatewayError) -> None:
        """Answers a request whose head never came whole, and closes the connection after
        lingering: the client may well be still sending it."""
        request_id = f"req_{uuid.uuid4().hex}"
        log.info("%d before the request's head was read: %s", error.status, error.message,
                 extra={FIELDS: {"request_id": request_id}})
        transport = self.transport
        if transport is not None:
            transport.write(raw_response(error, request_id))
            self._linger(transport)
        else:
            self.force_close()

    def _linger(self, transport: asyncio.BaseTransport) -> None:
        """Closes a connection whose client may still be sending, once the answer is written:
        the answer is ended (half-close), and what the client sends is read and dropped for
        aiohttp's ``lingering_time`` before the socket is closed. Closing at once with unread
        bytes would reset the connection, and the client could lose the answer."""
        stream = cast(asyncio.Transport, transport)  # uvloop's are not asyncio subclasses
        if stream.can_write_eof():
            stream.write_eof()
        super().close()  # no more requests; data_received drops what comes
        self._force_close = True  # aiohttp's request loop leaves the socket to the timer
        self._loop.call_later(self._lingering_time, self.force_close)


class GatewayServer(web.Server):
    """``web.Server`` whose connections are ``GatewayProtocol``s, each with the limits current
    when it opens, and whose requests start their body clock as the gateway starts on them."""

    def __init__(self, handler: Callable[..., Any], *, request_factory: RequestFactory,
                 limits: Callable[[], LimitSettings], handler_cancellation: bool = False,
                 loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any) -> None:
        super().__init__(handler, request_factory=self._start_request,
                         handler_cancellation=handler_cancellation, loop=loop, **kwargs)
        self._app_request = request_factory
        self._limits = limits
        self._protocol_loop = loop or asyncio.get_running_loop()
        self._protocol_kwargs = kwargs

    def __call__(self) -> GatewayProtocol:
        return GatewayProtocol(self, loop=self._protocol_loop, limits=self._limits(),
                               **self._protocol_kwargs)

    def _start_request(self, message: RawRequestMessage, payload: StreamReader,
                       protocol: web.RequestHandler, writer: AbstractStreamWriter,
                       task: asyncio.Task[None]) -> web.BaseRequest:
        if isinstance(protocol, GatewayProtocol):
            protocol.start_body_clock(payload)
        return self._app_request(message, payload, protocol, writer, task)


class GatewayRunner(web.AppRunner):
    """``web.AppRunner`` serving the app through ``GatewayServer``; ``limits`` is read as each
    connection opens (a reload applies to the connections opened after it)."""

    def __init__(self, app: web.Application, *, limits: Callable[[], LimitSettings],
                 **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._limits = limits

    async def _make_server(self) -> web.Server:
        app_server = await super()._make_server()  # the app's start-up, then aiohttp's server
        return GatewayServer(app_server.request_handler,
                             request_factory=app_server.request_factory,
                             limits=self._limits, **self._kwargs)
