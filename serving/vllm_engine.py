"""`VllmEngine`: vLLM's async engine (continuous batching, prefix caching) as an sftrl `Engine`.

`AsyncLLM` runs in the Serve replica's event loop; requests join the running batch as they
arrive. What sftrl's contract needs, and how it is met:

- **Ids in, ids out.** Prompts go in as token ids (`serving.prepare` encodes them exactly as the
  learner does); the eos ids of the policy end a request ("stop", eos kept in `output_ids`), stop
  strings end it ("stop", `text` cut before the string), `max_new_tokens` gives "length".
- **Log-probs** are vLLM's `processed_logprobs`: `log_softmax(logits / temperature)` of the sampled
  token (greedy requests: temperature 1), what the learner recomputes. With `top_p < 1` they are
  of the renormalised nucleus instead (vLLM masks before its log-softmax).
- **Weights.** `load_weights` takes a weights file's path (a training run's sync) or a state dict,
  which it first writes to a safetensors file of its own (tied weights dropped); then, with
  requests held by a `VersionGate` (each request runs under one version), it calls
  `WeightLoader.sftrl_load_safetensors` on the workers (`collective_rpc`: they read the file one
  tensor at a time) and resets the prefix cache. The served file is what `snapshot` reads.
  `receive_weights` takes a training run's broadcast instead (`learner.weight_stream`): the
  worker joins the stream and reloads each bucket as it arrives (`sftrl_receive_stream`).
- **CPU threads.** vLLM's CPU backend binds one OpenMP thread per core in
  `VLLM_CPU_OMP_THREADS_BIND`; `vllm.cpu_threads_bind="all"` gives it every core this process may
  use (Ray's 1-CPU reservation would otherwise leave the rest idle in a synchronous loop) and
  reserves none (`VLLM_CPU_NUM_OF_RESERVED_CPU=0`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import PretrainedConfig

from learner.weight_stream import StreamPlan, drain
from serving.config import ServingConfig, VllmSettings
from serving.engine import Generated, RuntimeStats
from serving.generation import GenerationRequest, GenerationResult
from serving.limits import RequestError
from serving.prepare import PolicyLimits
from serving.version_gate import VersionGate
from serving.vllm_worker import EXTENSION, LOAD_SAFETENSORS, RECEIVE_STREAM
from serving.weights import (
    SwapResult,
    WeightsSource,
    check_not_stale,
    check_weights,
    file_shapes,
    require_weights_file,
    shapes_of,
)

TIED_OUTPUT = "lm_head.weight"


def cpu_cores_spec(cores: set[int]) -> str:
    """`cores` as a list of ranges ("0-3,6"), the form `VLLM_CPU_OMP_THREADS_BIND` reads."""
    ranges: list[list[int]] = []
    for core in sorted(cores):
        if ranges and core == ranges[-1][1] + 1:
            ranges[-1][1] = core
        else:
            ranges.append([core, core])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def configure_cpu_backend(settings: VllmSettings) -> None:
    """Set the CPU backend's environment (read when the engine starts): cores, reserve, KV cache size."""
    bind = settings.cpu_threads_bind
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = cpu_cores_spec(os.sched_getaffinity(0)) if bind == "all" else bind
    os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(settings.kv_cache_gib)


def checkpoint_shapes(directory: Path) -> dict[str, tuple[int, ...]]:
    """{name: shape} of every tensor in the directory's safetensors files (headers only)."""
    shapes = {}
    for path in sorted(directory.glob("*.safetensors")):
        shapes.update(file_shapes(path))
    return shapes


class VllmEngine:
    """See the module docstring; build one with `await VllmEngine.start(...)` inside the serving loop."""

    name = "vllm"

    def __init__(self, llm, *, directory: Path, model_config: PretrainedConfig, eos_token_ids: list[int]):
        self.llm = llm
        self.directory = directory
        self.eos_token_ids = eos_token_ids
        self.gate = VersionGate()
        self.stats = RuntimeStats()
        self._expected = checkpoint_shapes(directory)
        self._tied = set()
        if model_config.get_text_config().tie_word_embeddings and TIED_OUTPUT not in self._expected:
            self._tied = {TIED_OUTPUT}
            self._expected[TIED_OUTPUT] = self._expected["model.embed_tokens.weight"]
        self._swap_dir = Path(tempfile.mkdtemp(prefix="sftrl-vllm-weights-"))
        self._served: tuple[Path, bool] | None = None  # (file, owned by this engine) of the served version
        self._torn: str | None = None  # why the worker holds part of a version (a stream broke off)

    @classmethod
    async def start(
        cls, directory: Path, config: ServingConfig, *, device: str, limits: PolicyLimits, eos_token_ids: list[int]
    ) -> VllmEngine:
        """Start vLLM on the HF model `directory` with `config`'s settings.

        Start-up is ~40 s on this 2-core CPU even eager: vLLM's CPU backend always runs its engine
        core and its worker as two more processes (spawned, so each imports vLLM, ~12 s).
        """
        from transformers import AutoConfig
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        settings = config.vllm
        max_model_len = settings.max_model_len or limits.context_tokens
        on_cpu = device == "cpu"
        if on_cpu:
            configure_cpu_backend(settings)
        args = AsyncEngineArgs(
            model=str(directory),
            dtype=config.resolved_dtype(device),
            seed=0,
            max_model_len=max_model_len,
            max_num_seqs=config.max_batch_size,
            # On CPU, vLLM 0.32's chunked prefill kills the engine on a seeded request whose prompt
            # is split ("CPU Generator does not use offset"): whole prompts, up to one full context
            # per step (the setting vLLM's CPU platform itself picks where it cannot chunk).
            enable_chunked_prefill=not on_cpu,
            max_num_batched_tokens=max_model_len if on_cpu else None,
            enforce_eager=settings.enforce_eager,
            enable_prefix_caching=settings.prefix_caching,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            logprobs_mode="processed_logprobs",
            worker_extension_cls=EXTENSION,
            disable_log_stats=True,
        )
        llm = AsyncLLM.from_engine_args(args)
        model_config = AutoConfig.from_pretrained(directory)
        return cls(llm, directory=directory, model_config=model_config, eos_token_ids=eos_token_ids)

    @property
    def version(self) -> int:
        """The weights version being served."""
        return self.gate.version

    def check_health(self) -> None:
        """Raise RuntimeError once vLLM's engine has died (Serve then replaces the replica)."""
        if self.llm.errored:
            raise RuntimeError("the vLLM engine of this replica died; see the replica log for its error")
        if self._torn is not None:
            raise RuntimeError(self._torn)

    async def generate(self, request: GenerationRequest) -> Generated:
        """Generate `request` in vLLM's running batch, under the version the gate admits it with.

        Once the engine has died, every request gets a 503 `engine_dead` until Serve replaces the replica.
        """
        if self.llm.errored:
            error = RequestError(503, "this replica's vLLM engine died and is being replaced: retry", "engine_dead", 5)
            return Generated(None, error, self.gate.version, 0.0, 0.0)
        enqueued = time.perf_counter()
        async with self.gate.generating() as version:
            start = time.perf_counter()
            self._count_admission()
            try:
                result, error = await self._generate(request), None
            except Exception as failure:  # this request's alone (e.g. an id vLLM refuses)
                result, error = None, failure
            return Generated(result, error, version, start - enqueued, time.perf_counter() - start)

    def _count_admission(self) -> None:
        """`batches` counts busy periods (a request that found none running); `largest_batch` the most at once."""
        self.stats.requests += 1
        self.stats.batches += self.gate.running == 1
        self.stats.largest_batch = max(self.stats.largest_batch, self.gate.running)

    async def _generate(self, request: GenerationRequest) -> GenerationResult:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(
            max_tokens=request.max_new_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            stop=list(request.stop) or None,
            stop_token_ids=self.eos_token_ids,
            logprobs=0,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        final = None
        prompt = TokensPrompt(prompt_token_ids=list(request.prompt_ids))
        async for output in self.llm.generate(prompt, params, request_id=uuid.uuid4().hex):
            final = output
        completion = final.outputs[0]
        if completion.finish_reason not in ("stop", "length"):
            raise RuntimeError(f"vLLM ended the request with finish_reason={completion.finish_reason!r}")
        ids = list(completion.token_ids)
        logprobs = [step[token].logprob for step, token in zip(completion.logprobs, ids, strict=True)]
        return GenerationResult(completion.text, ids, logprobs, completion.finish_reason)

    async def load_weights(self, weights: WeightsSource, version: int) -> SwapResult:
        """Swap to `weights` as `version` once the running requests end; see the module docstring.

        A weights file's path is loaded as it is (it stays its writer's); a state dict is written to
        a file of this engine's first (tied weights dropped), which it deletes once superseded.
        """
        check_not_stale(version, self.gate.version)
        if version == self.gate.version:
            return SwapResult(version, False, 0.0, 0)
        if isinstance(weights, (str, Path)):
            path, owned = require_weights_file(weights), False
            check_weights(self._expected, file_shapes(path), optional=self._tied)
        else:
            path, owned = self._swap_dir / f"v{version}.safetensors", True
            check_weights(self._expected, shapes_of(weights), optional=self._tied)
            kept = {name: tensor.contiguous() for name, tensor in weights.items() if name not in self._tied}
            await asyncio.to_thread(save_file, kept, str(path))
            del kept
        start = time.perf_counter()
        async with self.gate.swapping(version) as fresh:
            if fresh:
                await self.llm.collective_rpc(LOAD_SAFETENSORS, args=(str(path),))
                self._torn = None  # a whole version is loaded again
                await self.llm.reset_prefix_cache()
        if not fresh:  # another swap to this version got there first
            if owned:
                path.unlink(missing_ok=True)
            return SwapResult(version, False, 0.0, 0)
        self._serve_file(path, owned=owned)
        return SwapResult(version, True, time.perf_counter() - start, path.stat().st_size)

    async def receive_weights(self, plan: StreamPlan, version: int, *, address: str, path: str) -> SwapResult:
        """Receive a weight stream (`learner.weight_stream`) into vLLM's worker as `version`, once running requests end.

        The worker joins the stream from this host's `address` and loads it as it arrives
        (`WeightLoader.sftrl_receive_stream`); `path`, the same weights as a file, becomes what
        `snapshot` reads. Weights that do not fit, or an old version, are received and dropped
        (the sender waits for every receiver), then refused. A stream that breaks off midway
        leaves the model torn: `check_health` fails from then on and Serve replaces the replica.
        """
        try:
            check_weights(self._expected, {spec.name: spec.shape for spec in plan.tensors}, optional=self._tied)
            check_not_stale(version, self.gate.version)
        except ValueError:
            await asyncio.to_thread(drain, plan, address=address)
            raise
        start = time.perf_counter()
        async with self.gate.swapping(version) as fresh:
            if not fresh:
                await asyncio.to_thread(drain, plan, address=address)
                return SwapResult(version, False, 0.0, 0)
            try:
                await self.llm.collective_rpc(RECEIVE_STREAM, args=(plan.to_dict(), address))
            except BaseException as error:
                self._torn = f"the weight stream of version {version} broke off: {error!r}"
                raise
            await self.llm.reset_prefix_cache()
        self._serve_file(Path(path), owned=False)
        return SwapResult(version, True, time.perf_counter() - start, plan.total_bytes)

    def _serve_file(self, path: Path, *, owned: bool) -> None:
        """Record `path` as the served version's file; delete the previous one if this engine wrote it."""
        previous, self._served = self._served, (path, owned)
        if previous is not None and previous[1]:
            previous[0].unlink(missing_ok=True)

    async def snapshot(self) -> tuple[int, dict[str, torch.Tensor]]:
        """(version, CPU state dict) of the served weights, read from their file (swaps wait)."""
        async with self.gate.generating() as version:
            files = [self._served[0]] if self._served is not None else sorted(self.directory.glob("*.safetensors"))
            state = {}
            for path in files:
                state.update(await asyncio.to_thread(load_file, str(path)))
            return version, state

    def shutdown(self) -> None:
        """Stop vLLM's processes and delete the weight files."""
        self.llm.shutdown()
        shutil.rmtree(self._swap_dir, ignore_errors=True)
