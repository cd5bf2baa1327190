"""`DynamicBatcher`: groups concurrent asyncio submissions into batches for a blocking function.

Why not `@serve.batch`: in Ray 2.60 its queue is created per decorated function (shared by every
instance in the process) and requires a Serve replica context, so it cannot run in unit tests or
the in-process benchmark. This batcher belongs to one object, runs in any event loop, and keeps
each item whole, so per-request sampling parameters travel with their request.

Policy: one batch runs at a time, in a worker thread (the event loop stays free for health
checks and new arrivals). When the batcher is idle, the first arrival waits for company until
the arrivals pause for `batch_wait_timeout_s` (each arrival restarts that wait), at most
`batch_max_wait_s` in all, or the batch is full: a burst of clients whose requests trickle in
(HTTP parsing, a busy proxy) then shares one batch instead of splitting into a small batch and a
long wait for the next. Requests that arrived while a batch ran start together as soon as it
ends, up to `max_batch_size`. A cancelled submission is dropped before its batch starts.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class DynamicBatcher(Generic[T, R]):
    """`await submit(item)` returns `run_batch(batch)[i]` for the item's position in its batch.

    `run_batch(items) -> results` is blocking, runs in a thread, and returns one result per item in
    order; if it raises, or returns another number of results (ValueError), every item of that batch
    receives the exception.
    """

    def __init__(
        self,
        run_batch: Callable[[list[T]], list[R]],
        *,
        max_batch_size: int,
        batch_wait_timeout_s: float,
        batch_max_wait_s: float,
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size={max_batch_size}; it must be >= 1")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.batch_wait_timeout_s = batch_wait_timeout_s
        self.batch_max_wait_s = batch_max_wait_s
        self._pending: deque[tuple[T, asyncio.Future]] = deque()
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    async def submit(self, item: T) -> R:
        """Queue `item` and wait for its result."""
        if self._worker is None or self._worker.done():
            self._arrived = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._loop())
        future = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._arrived.set()
        return await future

    async def _fill(self) -> None:
        """Wait for company until arrivals pause for the timeout, the cap passes, or the batch is full."""
        loop = asyncio.get_running_loop()
        cap = loop.time() + self.batch_max_wait_s
        while len(self._pending) < self.max_batch_size:
            remaining = min(self.batch_wait_timeout_s, cap - loop.time())
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return

    async def _loop(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            if len(self._pending) == 1:
                await self._fill()
            batch = []
            while self._pending and len(batch) < self.max_batch_size:
                item, future = self._pending.popleft()
                if not future.done():  # a cancelled caller does not cost a row
                    batch.append((item, future))
            if self._pending:
                self._arrived.set()
            if batch:
                await self._run([item for item, _ in batch], [future for _, future in batch])

    async def _run(self, items: list[T], futures: list[asyncio.Future]) -> None:
        try:
            results = await asyncio.to_thread(self.run_batch, items)
            if len(results) != len(items):  # a broken contract reaches every caller instead of hanging some
                raise ValueError(
                    f"run_batch returned {len(results)} results for {len(items)} items; it must return one per item"
                )
        except Exception as error:
            for future in futures:
                if not future.done():
                    future.set_exception(error)
            return
        for future, result in zip(futures, results, strict=True):
            if not future.done():
                future.set_result(result)
