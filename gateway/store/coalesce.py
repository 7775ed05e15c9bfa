"""Script calls issued in the same event-loop turn, sent to Redis together.

Under load many requests reserve and settle at once; each still makes its own atomic script
call (so a request's Redis round trips stay two), but the calls ready at the same moment share
one pipeline: one connection checkout, one write, one read, instead of one each. A batch that
fails fails every call in it, each raising as it would alone.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio.client import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

_MAX_BATCH = 256

Call = tuple[AsyncScript, list[str], list[Any], "asyncio.Future[Any]"]


class Coalescer:
    def __init__(self, client: Redis) -> None:
        self._client = client
        self._queue: list[Call] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def call(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((script, keys, args, future))
        if len(self._queue) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
        for start in range(0, len(batch), _MAX_BATCH):
            task = asyncio.ensure_future(self._send(batch[start:start + _MAX_BATCH]))
            self._tasks.add(task)  # held until done: a bare task may be collected mid-flight
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[Call]) -> None:
        if len(batch) == 1:
            script, keys, args, future = batch[0]
            await _settle_future(future, script(keys=keys, args=args))
            return
        pipe = self._client.pipeline(transaction=False)
        for script, keys, args, _ in batch:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        try:
            results = await pipe.execute(raise_on_error=False)
        except BaseException as exc:  # the whole batch failed: each call learns why
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (script, keys, args, future), result in zip(batch, results, strict=True):
            if isinstance(result, NoScriptError):  # Redis restarted: load it, call alone
                await _settle_future(future, script(keys=keys, args=args))
            elif isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)


async def _settle_future(future: asyncio.Future[Any], awaitable: Any) -> None:
    try:
        result = await awaitable
    except Exception as exc:
        future.set_exception(exc)
    else:
        future.set_result(result)
