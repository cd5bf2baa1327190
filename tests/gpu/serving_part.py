"""The serving side of the GPU check: one engine's session on one model, through the engine contract.

`serve_session` starts a replica's runtime as a Serve replica does (`serving.runtime.start_runtime`:
the transformers engine or vLLM, bf16 on CUDA, batches up to the largest of `BATCH_SIZES`), then:

1. samples `PARITY_PROMPTS` GP-like prompts at each of `PARITY_TEMPERATURES`, `NEW_TOKENS` tokens
   with their log-probs, and returns them for the learner to score (`learner_part`);
2. for a text model, generation tokens/s at each of `BATCH_SIZES`: a warm-up batch, then
   `TIMED_RUNS` batches of that many concurrent requests (the eos may end a request early: the rate
   counts the tokens generated, and the status gives the mean per request);
3. a weight swap: the served weights plus noise as a state dict at version + 1, then as a weights
   file (`learner.export.write_weights_file`, what a training run's sync hands replicas) at
   version + 2; each must be what the engine then serves (its version, and a changed greedy output).

vLLM runs its engine in a process of its own, so its session also reports the device-wide GPU
memory in use (the per-part peak of `check.py` sees this process only).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import torch

from learner.batch import Sample
from learner.export import write_weights_file
from serving.config import ServingConfig
from serving.engine import Engine, Generated
from serving.generation import GenerationRequest
from serving.runtime import start_runtime
from tests.gpu.report import Report
from tests.gpu.workloads import Prompt, Subject, gp_prompts

PARITY_TEMPERATURES = (1.0, 0.2)  # 1.0, and the paper's sampling temperature (its logits / 0.2 magnify bf16 error)
PARITY_PROMPTS = 16
NEW_TOKENS = 64
BATCH_SIZES = (1, 32, 64)
TIMED_RUNS = 2
SWAP_NOISE = 0.05  # added to every weight: enough to change any greedy output
PROBE_TOKENS = 16


async def serve_session(
    subject: Subject, engine_name: str, *, device: str, dtype: str, report: Report, throughput: bool
) -> dict[float, list[Sample]]:
    """Run steps 1-3 of the module docstring (2 only with `throughput`); returns {temperature: samples}."""
    config = ServingConfig(model=subject.model, engine=engine_name, dtype=dtype, max_batch_size=max(BATCH_SIZES))
    started = time.perf_counter()
    runtime = await start_runtime(config, device=device)
    engine = runtime.engine
    prefix = f"serve/{engine.name}/{subject.label}"
    report.add(f"{prefix}/start_s", time.perf_counter() - started, "s", "info")
    try:
        prompts = gp_prompts(runtime.codec, max(BATCH_SIZES), image=subject.is_vlm)
        parity_prompts = prompts[:PARITY_PROMPTS]
        report.add(f"{prefix}/prompt_tokens_mean", statistics.mean(len(p.ids) for p in prompts), "tokens", "info")
        samples = {t: await _samples(engine, parity_prompts, t) for t in PARITY_TEMPERATURES}
        if engine.name == "vllm" and device == "cuda":
            free, total = torch.cuda.mem_get_info()
            share = config.vllm.gpu_memory_utilization
            note = f"info: device-wide, vLLM's engine process included (gpu_memory_utilization={share})"
            report.add(f"mem/{prefix}/device_used_gb", (total - free) / 1e9, "GB", note)
        if throughput:
            with report.guard(f"{prefix}/tokens_per_s"):
                await _throughput(engine, prompts, prefix=prefix, report=report)
        with report.guard(f"{prefix}/swap"):
            await _swap(engine, parity_prompts[:2], prefix=prefix, report=report)
    finally:
        engine.shutdown()
    return samples


async def _generate(engine: Engine, requests: list[GenerationRequest]) -> list[Generated]:
    """Every request at once, as concurrent clients send them; raises the first request's error."""
    outcomes = await asyncio.gather(*(engine.generate(request) for request in requests))
    for outcome in outcomes:
        if outcome.error is not None:
            raise outcome.error
    return outcomes


async def _samples(engine: Engine, prompts: list[Prompt], temperature: float) -> list[Sample]:
    """The server's samples of `prompts` at `temperature` (seeded), as the learner's `Sample`s."""
    requests = [
        GenerationRequest(p.ids, NEW_TOKENS, temperature=temperature, seed=i, image_inputs=p.image_inputs)
        for i, p in enumerate(prompts)
    ]
    outcomes = await _generate(engine, requests)
    return [
        Sample(p.ids, o.result.output_ids, logprobs=o.result.logprobs, temperature=temperature, images=p.images or None)
        for p, o in zip(prompts, outcomes, strict=True)
    ]


async def _throughput(engine: Engine, prompts: list[Prompt], *, prefix: str, report: Report) -> None:
    """Generated tokens/s at each batch size (step 2 of the module docstring)."""
    for batch in BATCH_SIZES:
        requests = [GenerationRequest(prompts[i].ids, NEW_TOKENS, temperature=1.0, seed=1000 + i) for i in range(batch)]
        await _generate(engine, requests)  # warm-up: kernels, allocator, the batcher's first batch of this size
        rates, seconds, tokens = [], [], []
        for _ in range(TIMED_RUNS):
            start = time.perf_counter()
            outcomes = await _generate(engine, requests)
            seconds.append(time.perf_counter() - start)
            tokens.append(sum(len(o.result.output_ids) for o in outcomes))
            rates.append(tokens[-1] / seconds[-1])
        per_request = statistics.mean(tokens) / batch
        detail = f"ok: {per_request:.1f} new tokens per request, {statistics.mean(seconds):.2f} s per batch"
        report.add(f"{prefix}/batch{batch}/tokens_per_s", statistics.mean(rates), "tokens/s", detail)


def _with_noise(state: dict[str, torch.Tensor], *, seed: int) -> dict[str, torch.Tensor]:
    """`state` plus SWAP_NOISE * N(0, 1) on every floating tensor, in each tensor's dtype (on the CPU)."""
    generator = torch.Generator().manual_seed(seed)
    return {
        name: (t.float() + SWAP_NOISE * torch.randn(t.shape, generator=generator)).to(t.dtype)
        if t.is_floating_point()
        else t
        for name, t in state.items()
    }


async def _swap(engine: Engine, prompts: list[Prompt], *, prefix: str, report: Report) -> None:
    """Swap to noisy weights twice, as a state dict then as a weights file (step 3 of the module docstring)."""
    probe = [GenerationRequest(p.ids, PROBE_TOKENS, temperature=0.0, image_inputs=p.image_inputs) for p in prompts]
    before = [o.result.output_ids for o in await _generate(engine, probe)]
    version, state = await engine.snapshot()
    report.add(f"{prefix}/swap_mb", sum(t.numel() * t.element_size() for t in state.values()) / 1e6, "MB", "info")
    with tempfile.TemporaryDirectory() as scratch:
        sources = {
            "state_dict": _with_noise(state, seed=1),
            "file": write_weights_file(_with_noise(state, seed=2), Path(scratch) / f"v{version + 2}.safetensors"),
        }
        for step, (kind, weights) in enumerate(sources.items(), start=1):
            start = time.perf_counter()
            result = await engine.load_weights(weights, version + step)
            wall = time.perf_counter() - start
            after = await _generate(engine, probe)
            served = engine.version == version + step and all(o.version == version + step for o in after)
            changed = [o.result.output_ids for o in after] != before
            before = [o.result.output_ids for o in after]
            report.check(
                f"{prefix}/swap_{kind}_s",
                wall,
                "s",
                ok=result.swapped and served and changed,
                bound=f"served as version {version + step} with a changed greedy output",
                detail=f"{result.seconds:.3f} s under the swap lock" if result.seconds else "",
            )
