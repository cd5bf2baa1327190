"""The learner side of the GPU check: log-prob parity with the servers' samples, then timed SFT steps.

`learner_session` builds a 1-rank learner on the model (bf16 on CUDA): `LearnerEngine` (DeepSpeed ZeRO-3) when
deepspeed imports, else `TorchLearner` (the same step in plain torch, `tests/gpu/torch_learner.py`).
Then:

1. parity: one GRPO `rl_step` on each engine's samples at each temperature (advantage 0, so a zero
   gradient: the weights stay the server's), whose `rl/logprob_diff_max` is the largest
   |learner - server| log-prob over every generated token; bound `PARITY_MAX`, the project's bf16
   tolerance (tests/learner/test_logprob_parity.py, tests/serving/test_vllm_engine.py);
2. SFT steps: one warm-up step, then `TIMED_STEPS` steps of `SFT_SAMPLES` GP-like prompts (with
   their images, for a VLM) and `OUTPUT_TOKENS` random output ids each; every loss must be finite.
"""

from __future__ import annotations

import math
import statistics

from learner.batch import Sample
from learner.config import LearnerConfig
from learner.engine import LearnerEngine
from learner.models import load_prompt_codec
from tests.gpu.report import Report
from tests.gpu.torch_learner import TorchLearner
from tests.gpu.workloads import Subject, gp_prompts, sft_batch

PARITY_MAX = 0.05
SFT_SAMPLES = 16
OUTPUT_TOKENS = 64
TIMED_STEPS = 3
LR = 1e-9  # the steps are timed, not trained: keep the weights where they are


def learner_session(
    subject: Subject, served: dict[str, dict[float, list[Sample]]], *, dtype: str, deepspeed: bool, report: Report
) -> None:
    """Steps 1-2 of the module docstring; `served` is {engine name: {temperature: samples}}."""
    config = LearnerConfig(model=subject.model, algo="grpo", dtype=dtype, lr=LR)
    learner = LearnerEngine(config) if deepspeed else TorchLearner(config)
    prefix = f"learner/{subject.label}"
    report.add(
        f"{prefix}/backend",
        "deepspeed zero-3" if deepspeed else "plain torch",
        "",
        "info" if deepspeed else "info: deepspeed does not import here: TorchLearner, the same step without ZeRO",
    )
    for engine_name, by_temperature in served.items():
        for temperature, samples in by_temperature.items():
            name = f"parity/{engine_name}/{subject.label}/T{temperature:g}/logprob_diff_max"
            with report.guard(name):
                metrics = learner.rl_step(samples)
                worst = metrics["rl/logprob_diff_max"]
                tokens = sum(len(s.output_ids) for s in samples)
                detail = f"mean diff {metrics['rl/logprob_diff_mean']:+.4f} over {tokens} tokens"
                report.check(name, worst, "nats", ok=worst <= PARITY_MAX, bound=f"<= {PARITY_MAX}", detail=detail)
    with report.guard(f"{prefix}/sft_step_s"):
        _sft_steps(learner, subject, prefix=prefix, report=report)


def _sft_steps(learner: LearnerEngine, subject: Subject, *, prefix: str, report: Report) -> None:
    """Time SFT steps on GP-like prompts with random outputs (step 2 of the module docstring)."""
    prompts = gp_prompts(load_prompt_codec(subject.model), SFT_SAMPLES, image=subject.is_vlm)
    batch = sft_batch(prompts, output_tokens=OUTPUT_TOKENS, seed=0)
    steps = [learner.sft_step(batch) for _ in range(1 + TIMED_STEPS)][1:]  # the first warms up
    losses = [step["loss/sft"] for step in steps]
    finite = all(math.isfinite(loss) for loss in losses)
    report.check(
        f"{prefix}/sft_step_s",
        statistics.median(step["perf/step_s"] for step in steps),
        "s",
        ok=finite,
        bound="finite loss in every step",
        detail=f"loss {losses[-1]:.3f}, {len(batch)} samples, {sum(len(s) for s in batch)} tokens",
    )
    report.add(
        f"{prefix}/sft_tokens_per_s", statistics.median(step["perf/tokens_per_s"] for step in steps), "tokens/s", "info"
    )
