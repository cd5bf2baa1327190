"""`VersionGate`: asyncio admission that keeps every request on one weights version across swaps.

For an engine that runs requests concurrently (vLLM's continuous batching), a swap must not land
while a request is being generated: `generating()` admits a request and yields the version it
runs with; `swapping(version)` stops admitting, waits for the running requests to end, and holds
new ones until the swap is done (they then run with the new version). One swap at a time;
versions only go up (`StaleVersionError` below the current one; at the current one
`swapping` yields False and the caller does nothing).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from serving.weights import check_not_stale


class VersionGate:
    """See the module docstring. Create it inside the event loop that uses it."""

    def __init__(self, version: int = 0):
        self.version = version
        self.running = 0
        self._swapping = False
        self._changed = asyncio.Condition()

    @property
    def swap_pending(self) -> bool:
        """True from when a swap stops admitting requests until it ends."""
        return self._swapping

    @asynccontextmanager
    async def generating(self) -> AsyncIterator[int]:
        """Run one request: waits while a swap is pending; yields the version it is generated with."""
        async with self._changed:
            await self._changed.wait_for(lambda: not self._swapping)
            self.running += 1
            version = self.version
        try:
            yield version
        finally:
            async with self._changed:
                self.running -= 1
                self._changed.notify_all()

    @asynccontextmanager
    async def swapping(self, version: int) -> AsyncIterator[bool]:
        """Hold requests for a swap to `version`; yields True when the caller should swap.

        The version is set when the block exits normally; if it raises, the old version stays.
        """
        async with self._changed:
            await self._changed.wait_for(lambda: not self._swapping)
            check_not_stale(version, self.version)
            fresh = version > self.version
            if fresh:
                self._swapping = True
                await self._changed.wait_for(lambda: self.running == 0)
        if not fresh:
            yield False
            return
        try:
            yield True
            self.version = version
        finally:
            async with self._changed:
                self._swapping = False
                self._changed.notify_all()
