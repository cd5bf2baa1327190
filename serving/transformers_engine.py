"""`TransformersEngine`: our batched generation loop (`serving.generation`) as an `Engine`.

Requests are grouped by a `DynamicBatcher` (`serving/batching.py`); a batch runs in a worker thread
under `VersionedWeights.reading()`, so the event loop keeps answering health checks and a weight
swap waits for the batch to end. A batch that fails is retried one request at a time, so one
request that slipped past validation cannot fail the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from learner.models import LoadedPolicy
from learner.weight_stream import StreamPlan, receive
from serving.batching import DynamicBatcher
from serving.config import ServingConfig
from serving.engine import Generated, RuntimeStats
from serving.generation import GenerationRequest, generate_batch
from serving.weights import (
    SwapResult,
    VersionedWeights,
    WeightsSource,
    check_not_stale,
    file_shapes,
    file_tensors,
    require_weights_file,
)

logger = logging.getLogger(__name__)


@dataclass
class _Pending:
    request: GenerationRequest
    enqueued_s: float


class TransformersEngine:
    """Generates with a `LoadedPolicy` in dynamic batches; see the module docstring and `serving.engine`."""

    name = "transformers"

    def __init__(self, policy: LoadedPolicy, config: ServingConfig):
        self.policy = policy
        self.weights = VersionedWeights(policy.model)
        self.stats = RuntimeStats()
        self.batcher = DynamicBatcher(
            self._run_batch,
            max_batch_size=config.max_batch_size,
            batch_wait_timeout_s=config.batch_wait_timeout_s,
            batch_max_wait_s=config.batch_max_wait_s,
        )

    @property
    def version(self) -> int:
        """The weights version being served."""
        return self.weights.version

    async def generate(self, request: GenerationRequest) -> Generated:
        """Generate `request` in the next batch."""
        return await self.batcher.submit(_Pending(request, time.perf_counter()))

    async def load_weights(self, weights: WeightsSource, version: int) -> SwapResult:
        """Swap to a state dict or a weights file's contents once the running batch ends.

        A state dict goes through `VersionedWeights.swap`; a file is copied into the model one tensor
        at a time (`VersionedWeights.receive`), never read whole.
        """
        if isinstance(weights, (str, Path)):
            check_not_stale(version, self.weights.version)  # before reading the file
            if version == self.weights.version:
                return SwapResult(version, False, 0.0, 0)
            path = require_weights_file(weights)
            return await asyncio.to_thread(self.weights.receive, file_shapes(path), file_tensors(path), version)
        return await asyncio.to_thread(self.weights.swap, weights, version)

    async def receive_weights(self, plan: StreamPlan, version: int, *, address: str, path: str) -> SwapResult:
        """Receive a weight stream (`learner.weight_stream`) from this host's `address` into the model as `version`.

        The running batch ends first; generation waits for the stream (`VersionedWeights.receive`).
        `path` (the same weights, as a file) is not needed: the model itself holds what is served.
        """
        shapes = {spec.name: spec.shape for spec in plan.tensors}
        return await asyncio.to_thread(self.weights.receive, shapes, receive(plan, address=address), version)

    async def snapshot(self) -> tuple[int, dict[str, torch.Tensor]]:
        """(version, CPU copy of the state dict), read between batches."""
        return await asyncio.to_thread(self.weights.snapshot)

    def check_health(self) -> None:
        """Raise once a weight stream broke off midway (Serve then replaces the replica).

        A failing batch fails only its own requests.
        """
        if self.weights.torn is not None:
            raise RuntimeError(self.weights.torn)

    def shutdown(self) -> None:
        """Nothing to stop: the model lives in this process."""

    def _run_batch(self, items: list[_Pending]) -> list[Generated]:
        with self.weights.reading() as version:
            start = time.perf_counter()
            try:
                outcomes = [(r, None) for r in generate_batch(self.policy, [item.request for item in items])]
            except Exception:  # isolate the culprit: rerun each request alone
                logger.exception("batch of %d failed; retrying its requests one by one", len(items))
                outcomes = [self._alone(item) for item in items]
            seconds = time.perf_counter() - start
        self.stats.batches += 1
        self.stats.requests += len(items)
        self.stats.largest_batch = max(self.stats.largest_batch, len(items))
        return [
            Generated(result, error, version, start - item.enqueued_s, seconds)
            for item, (result, error) in zip(items, outcomes, strict=True)
        ]

    def _alone(self, item: _Pending) -> tuple:
        try:
            return generate_batch(self.policy, [item.request])[0], None
        except Exception as error:
            return None, error
