"""The contract between `PolicyRuntime` and a generation engine, and how a replica picks one.

An engine generates validated `GenerationRequest`s (prompt ids in; output ids, per-token log-probs
under the request's temperature, finish reason out) and owns the served weights and their version:

- `await generate(request)` -> `Generated`: the result, or the error of that request alone, plus
  the weights version it was generated with (one version per request, never two) and its queue
  and generation seconds;
- `await load_weights(weights, version)` -> `SwapResult`: swap to a HF state dict, or the
  safetensors file at a path, once the running requests end; versions only go up
  (`StaleVersionError` below the served one, a no-op at it);
- `await receive_weights(plan, version, address=, path=)` -> `SwapResult`: the same swap, from a
  training run's weight broadcast (`learner.weight_stream`), joined from this host's `address`;
  `path` is the file the learner wrote the same weights to;
- `await snapshot()` -> (version, CPU state dict) of what is served, for republishing;
- `version`, `stats` (`RuntimeStats`), `name` ("transformers" or "vllm"); `check_health()` raises
  once the engine cannot generate any more; `shutdown()` frees it.

Engines: `serving.transformers_engine.TransformersEngine` (our batched loop over transformers
forward calls) and `serving.vllm_engine.VllmEngine` (vLLM's async engine: continuous batching,
prefix caching). `engine_for` says which one a replica runs for a config and a model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import torch

from learner.weight_stream import StreamPlan
from serving.config import ServingConfig
from serving.generation import GenerationRequest, GenerationResult
from serving.weights import SwapResult, WeightsSource

logger = logging.getLogger(__name__)


@dataclass
class RuntimeStats:
    """Counters since the replica started (reported by `GET /v1/policy`)."""

    batches: int = 0
    requests: int = 0
    largest_batch: int = 0


@dataclass
class Generated:
    """One request's outcome: its result or its error, and the version and timings it ran with."""

    result: GenerationResult | None
    error: Exception | None
    version: int
    queue_s: float
    generate_s: float


class Engine(Protocol):
    """See the module docstring."""

    name: str
    stats: RuntimeStats

    @property
    def version(self) -> int:
        """The weights version being served (0: the loaded checkpoint)."""

    async def generate(self, request: GenerationRequest) -> Generated:
        """Generate `request` with one weights version."""

    async def load_weights(self, weights: WeightsSource, version: int) -> SwapResult:
        """Swap to `weights` as `version` once the running requests end."""

    async def receive_weights(self, plan: StreamPlan, version: int, *, address: str, path: str) -> SwapResult:
        """Swap to the weights a broadcast `plan` streams, as `version`, once the running requests end."""

    async def snapshot(self) -> tuple[int, dict[str, torch.Tensor]]:
        """(version, CPU state dict) of the served weights."""

    def check_health(self) -> None:
        """Raise when the engine can no longer generate (Serve's health check then replaces the replica)."""

    def shutdown(self) -> None:
        """Free the engine (processes, files)."""


def engine_for(config: ServingConfig, *, is_vlm: bool) -> str:
    """The engine a replica runs: `config.engine`, except vLLM for a VLM, which falls back (logged once).

    sftrl hands vLLM token ids only; its image inputs (pixel values, Mllama's cross-attention
    masks) go through the transformers engine, where server and learner share one processor.
    """
    if config.engine == "vllm" and is_vlm:
        logger.warning(
            "serving.engine=vllm: %s is a vision-language policy, which sftrl serves with the "
            "transformers engine (its image inputs are not passed to vLLM)",
            config.checkpoint or config.model,
        )
        return "transformers"
    return config.engine
