"""Answers on the wire: JSON bodies, OpenAI-shaped errors, and the faults that act while an
answer is being sent (delays, half bodies, dripped bytes, cut streams, junk frames)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.mock.faults import Fault
from gateway.mock.shapes import Frame, MockError

# OpenAI's edge sets a cookie on every answer; a gateway must neither pass it to its tenants
# nor replay it upstream on another tenant's request.
_COOKIE = "__cf_bm=mock-upstream-cookie; path=/; HttpOnly; SameSite=None"
JSON_HEADERS = {"Content-Type": "application/json", "Set-Cookie": _COOKIE}
SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
               "Set-Cookie": _COOKIE}


def json_response(body: bytes) -> web.Response:
    return web.Response(body=body, headers=JSON_HEADERS)


async def deliver(
    request: web.Request, body: bytes, fault: Fault | None
) -> tuple[web.StreamResponse, bool]:
    """Send a JSON answer now, so the caller knows whether it went out (the client may have
    left during a ``timeout`` fault) before counting its usage as reported."""
    response = web.StreamResponse(headers=JSON_HEADERS)
    response.content_length = len(body)
    try:
        await response.prepare(request)
        if fault is not None and fault.body_delay_s:
            await asyncio.sleep(fault.body_delay_s)
        if fault is not None and fault.short_body:
            await response.write(body[: len(body) // 2])
            hang_up(request)
            return response, False
        await write(response, body, None if fault is None else fault.drip_s)
        await response.write_eof()
    except ConnectionError:
        return response, False
    return response, True


async def write(response: web.StreamResponse, data: bytes, drip_s: float | None) -> None:
    """All at once, or (``drip``) one byte per write."""
    if drip_s is None:
        await response.write(data)
        return
    for i in range(len(data)):
        await response.write(data[i : i + 1])
        await asyncio.sleep(drip_s)


def error_response(exc: MockError) -> web.Response:
    return web.Response(status=exc.status, body=exc.body(), headers=JSON_HEADERS)


def fault_response(fault: Fault) -> web.Response:
    """An injected error status: OpenAI-shaped JSON, or (``plain``) text; ``Retry-After``."""
    exc = fault.error()
    headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
    if fault.plain:
        return web.Response(status=exc.status, text=f"{exc.message}\n", headers=headers)
    return web.Response(status=exc.status, body=exc.body(), headers={**JSON_HEADERS, **headers})


_JUNK_FRAMES = (
    b": a comment line\n\n",
    b"a line with no field\n\n",
    b"data: {not json\n\n",
    b"event: ping\ndata: {}\n\n",
    b"data:[1,2,3]\n\n",
    b"\n\n",
)


def faulty_frames(frames: list[Frame], fault: Fault | None) -> list[Frame]:
    """``double_usage`` and ``bad_sse`` applied to a stream's frames."""
    if fault is None:
        return frames
    if fault.double_usage:
        frames = [f for frame in frames
                  for f in ((frame, frame) if b'"usage":{' in frame.data else (frame,))]
    if fault.bad_sse and frames:
        last = frames[-1]
        frames = [*(Frame(junk, 0) for junk in _JUNK_FRAMES), *frames[:-1],
                  Frame(last.data.rstrip(b"\n"), last.tokens)]
    return frames


def hang_up(request: web.Request) -> None:
    """Close the connection under the response; aiohttp then finds it closed and gives up."""
    if request.transport is not None:
        request.transport.close()


def cut(frames: list[Frame], k: int) -> int:
    """How many frames to send so that exactly ``min(k, all)`` content frames go out and
    nothing after the last of them (no finish, usage or [DONE] frame)."""
    sent = 0
    end = 0
    for i, frame in enumerate(frames):
        if frame.tokens:
            if sent == k:
                return i
            sent += 1
            end = i + 1
    return end
