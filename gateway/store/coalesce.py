"""Script calls issued in the same event-loop turn, sent to Redis together.

Under load many requests reserve and settle at once; each still makes its own atomic script
call (so a request's Redis round trips stay two), but the calls ready at the same moment share
one write and one read, instead of one each: on the store's own connection (``RespLane``) to a
plain TCP server, else in a redis-py pipeline. A batch that fails fails every call in it, each
raising as it would alone.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio.client import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import BusyLoadingError, NoScriptError

from gateway.store.resp_lane import RespLane, Unavailable

NOT_RUN = (NoScriptError, BusyLoadingError)  # answers that say Redis did not run the call

_MAX_BATCH = 256

Call = tuple[AsyncScript, list[str], list[Any], "asyncio.Future[Any]"]


class Coalescer:
    def __init__(self, client: Redis, lane: RespLane | None = None) -> None:
        self._client = client
        self._lane = lane
        self._queue: list[Call] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def call(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((script, keys, args, future))
        if len(self._queue) == 1:
            loop.call_soon(self._flush)
        return await future

    def close(self) -> None:
        if self._lane is not None:
            self._lane.close()

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
        for start in range(0, len(batch), _MAX_BATCH):
            task = asyncio.ensure_future(self._send(batch[start:start + _MAX_BATCH]))
            self._tasks.add(task)  # held until done: a bare task may be collected mid-flight
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[Call]) -> None:
        try:
            answers = await self._answers(batch)
        except BaseException as exc:  # the whole batch failed: each call learns why
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (script, keys, args, future), answer in zip(batch, answers, strict=True):
            if isinstance(answer, NOT_RUN):  # Redis restarted, or is loading: redis-py's way
                await _settle_future(future, script(keys=keys, args=args))
            elif isinstance(answer, Exception):
                future.set_exception(answer)
            else:
                future.set_result(answer)

    async def _answers(self, batch: list[Call]) -> list[Any]:
        """Each call's answer or error, in order; raises when the whole batch failed (a call
        written on a connection that then failed is not sent again: it may have run)."""
        if self._lane is not None:
            try:
                return await self._lane.send([("EVALSHA", script.sha, len(keys), *keys, *args)
                                              for script, keys, args, _ in batch])
            except Unavailable:  # nothing was sent: redis-py's way, with its retries
                pass
        if len(batch) == 1:
            script, keys, args, _ = batch[0]
            try:
                return [await script(keys=keys, args=args)]
            except Exception as exc:
                return [exc]
        pipe = self._client.pipeline(transaction=False)
        for script, keys, args, _ in batch:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))


async def _settle_future(future: asyncio.Future[Any], awaitable: Any) -> None:
    try:
        result = await awaitable
    except Exception as exc:
        future.set_exception(exc)
    else:
        future.set_result(result)
