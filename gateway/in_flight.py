"""The requests being handled, for a graceful shutdown (``gateway.serve``): the one middleware
counts each as it starts."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web


class InFlight:
    """The requests being handled (each runs in its own task), so that a shutdown can wait for
    them, tell busy connections from idle ones, and cut off what outlasts the grace period."""

    def __init__(self) -> None:
        self._tasks: dict[asyncio.Task[Any], object] = {}  # the request's task: its connection

    def add(self, request: web.Request) -> None:
        """Counts ``request`` (run in the current task) until its response is fully written."""
        task = asyncio.current_task()
        if task is not None and task not in self._tasks:
            self._tasks[task] = request.protocol
            task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)

    def __len__(self) -> int:
        return len(self._tasks)

    def connections(self) -> set[object]:
        """The connections with a request in flight."""
        return set(self._tasks.values())

    async def wait(self, timeout_s: float) -> bool:
        """Waits until no request is in flight (True), or ``timeout_s`` passed (False)."""
        deadline = time.monotonic() + timeout_s
        while self._tasks:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.wait(list(self._tasks), timeout=left)
        return True

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()
