"""`PolicyRuntime`: one replica's policy, request admission, dynamic batching and weight swaps.

A plain class (no deployment, no HTTP), so it runs in any asyncio loop: the Serve deployment in
`serving/app.py` wraps it, and the unit tests drive it directly. Requests are admitted by a
`QueueGate` (503 past `limits.max_queued_requests`), validated and encoded off the event loop by
`serving.prepare`, then grouped by a `DynamicBatcher` (`serving/batching.py`): each item carries
its own sampling parameters, and `generate_batch` honours them row by row. A batch runs in a
worker thread under `VersionedWeights.reading()`, so the event loop keeps answering health checks
and a weight swap waits for the batch to end.

A batch that fails is retried one request at a time, so one request that slipped past
validation cannot fail the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from typing import NamedTuple

from learner.models import LoadedPolicy
from serving.batching import DynamicBatcher
from serving.config import ServingConfig
from serving.generation import GenerationRequest, GenerationResult, generate_batch
from serving.limits import QueueGate
from serving.prepare import PolicyLimits, prepare
from serving.schemas import GenerateRequest, GenerateResponse, Timing
from serving.weights import SwapResult, VersionedWeights

logger = logging.getLogger(__name__)
SEED_SPACE = 2**63


@dataclass
class _Pending:
    request: GenerationRequest
    enqueued_s: float


class _Attempt(NamedTuple):
    result: GenerationResult | None
    error: Exception | None


@dataclass
class _Outcome:
    result: GenerationResult | None
    error: Exception | None
    version: int
    queue_s: float
    generate_s: float


@dataclass
class RuntimeStats:
    """Counters since the replica started (reported by `GET /v1/policy`)."""

    batches: int = 0
    requests: int = 0
    largest_batch: int = 0


class PolicyRuntime:
    """Serves generate requests for one loaded policy; see the module docstring."""

    def __init__(self, policy: LoadedPolicy, config: ServingConfig, *, device: str):
        self.policy = policy
        self.config = config
        self.device = device
        self.limits = PolicyLimits.of(policy)
        self.weights = VersionedWeights(policy.model)
        self.gate = QueueGate(config.limits.max_queued_requests, retry_after_s=config.limits.retry_after_s)
        self.stats = RuntimeStats()
        self.batcher = DynamicBatcher(
            self._run_batch,
            max_batch_size=config.max_batch_size,
            batch_wait_timeout_s=config.batch_wait_timeout_s,
            batch_max_wait_s=config.batch_max_wait_s,
        )

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        """One completion; raises `RequestError` for a refused request."""
        return (await self.generate_many(request, n=1))[0]

    async def generate_many(self, request: GenerateRequest, *, n: int) -> list[GenerateResponse]:
        """`n` completions of one prompt (seeds `seed + i` when seeded), batched with everything else."""
        self.gate.enter(n)
        try:
            prepared = await asyncio.to_thread(prepare, self.policy, self.limits, request, config=self.config)
            seeds = [None if request.seed is None else (request.seed + i) % SEED_SPACE for i in range(n)]
            outcomes = await asyncio.gather(
                *(self.batcher.submit(_Pending(replace(prepared, seed=seed), time.perf_counter())) for seed in seeds)
            )
        finally:
            self.gate.leave(n)
        return [self._response(prepared, outcome) for outcome in outcomes]

    async def load_weights(self, weights: dict, version: int) -> SwapResult:
        """Swap to `version` once the running batch ends; see `VersionedWeights.swap`."""
        return await asyncio.to_thread(self.weights.swap, weights, version)

    def _run_batch(self, items: list[_Pending]) -> list[_Outcome]:
        with self.weights.reading() as version:
            start = time.perf_counter()
            try:
                attempts = [_Attempt(r, None) for r in generate_batch(self.policy, [item.request for item in items])]
            except Exception:  # isolate the culprit: rerun each request alone
                logger.exception("batch of %d failed; retrying its requests one by one", len(items))
                attempts = [self._alone(item) for item in items]
            seconds = time.perf_counter() - start
        self.stats.batches += 1
        self.stats.requests += len(items)
        self.stats.largest_batch = max(self.stats.largest_batch, len(items))
        return [
            _Outcome(attempt.result, attempt.error, version, start - item.enqueued_s, seconds)
            for item, attempt in zip(items, attempts, strict=True)
        ]

    def _alone(self, item: _Pending) -> _Attempt:
        try:
            return _Attempt(generate_batch(self.policy, [item.request])[0], None)
        except Exception as error:
            return _Attempt(None, error)

    def _response(self, prepared: GenerationRequest, outcome: _Outcome) -> GenerateResponse:
        if outcome.error is not None:
            raise outcome.error
        result = outcome.result
        return GenerateResponse(
            text=result.text,
            prompt_token_ids=prepared.prompt_ids,
            output_token_ids=result.output_ids,
            logprobs=result.logprobs,
            finish_reason=result.finish_reason,
            policy_version=outcome.version,
            timing=Timing(queue_s=outcome.queue_s, generate_s=outcome.generate_s),
        )
