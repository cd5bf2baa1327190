"""Benchmark: one learner rank's step on CPU: stage 0 (one rank's default), ZeRO-3, stage 0 with shared prompts.

SmolLM2-135M fp32, GRPO steps on 2 prompts x 4 outputs of 180 prompt + 64 output tokens (GP-L sized, the
issue's batch: 2 hands, groups of 4), `micro_batch_tokens` 4096 (one micro-batch) or SFTRL_BENCH_MICRO.
The first two run the plain layout (each row's prompt again); the third runs each prompt once
(`learner.shared_prompts`). Each variant runs in a fresh process (this file as a script), alternating
over ROUNDS rounds. Per variant: the median of
steps 2-4, private RSS (RssAnon) after init and after the steps, the peak (VmHWM), and the time to read
the policy's weights out (`iter_policy_tensors`: what a weight sync reads). Nothing is asserted about
the timings (a shared machine).

    .venv/bin/python -m pytest tests/bench/bench_learner_step.py -s -p no:cacheprovider
"""

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

MODEL = os.environ.get("SFTRL_BENCH_MODEL", "smollm2-135m")
MICRO = int(os.environ.get("SFTRL_BENCH_MICRO", "4096"))
ROUNDS = 2
STEPS = 4
VARIANTS = {"stage 0": (0, False), "ZeRO-3": (3, False), "stage 0, shared": (0, True)}  # (zero_stage, share_prompts)


def _memory_gb() -> dict[str, float]:
    """This process's private RSS and peak RSS, GB (Linux /proc/self/status)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {key: int(fields[name].split()[0]) * 1024 / 1e9 for key, name in (("anon", "RssAnon"), ("peak", "VmHWM"))}


def _variant_main(variant: str, out: str) -> None:
    """One rank as `variant`: init, STEPS GRPO steps, three weight read-outs; its figures to `out` as JSON."""
    import torch

    from learner.batch import Sample
    from learner.config import LearnerConfig
    from learner.distributed import free_port, init_distributed
    from learner.engine import LearnerEngine
    from learner.export import iter_policy_tensors

    torch.set_num_threads(2)
    init_distributed(0, 1, master_port=free_port())
    stage, share = VARIANTS[variant]
    config = LearnerConfig(
        model=MODEL, algo="grpo", lr=1e-5, zero_stage=stage, share_prompts=share, micro_batch_tokens=MICRO
    )
    engine = LearnerEngine(config)
    figures = {"init_anon": _memory_gb()["anon"]}
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 49000, (180,), generator=gen).tolist() for _ in range(2)]
    samples = [
        Sample(
            prompt_ids=prompts[i // 4],
            output_ids=torch.randint(0, 49000, (64,), generator=gen).tolist(),
            advantage=float(i % 2) - 0.5,
            logprobs=[-3.0] * 64,
        )
        for i in range(8)
    ]
    steps = []
    for _ in range(STEPS):
        start = time.perf_counter()
        engine.rl_step(samples)
        steps.append(time.perf_counter() - start)
    figures.update({f"step_{key}": value for key, value in _memory_gb().items()})
    reads = []
    for _ in range(3):
        start = time.perf_counter()
        for _name, _tensor in iter_policy_tensors(engine.module, rank=0):
            pass
        reads.append(time.perf_counter() - start)
    figures.update(step_s=statistics.median(steps[1:]), read_s=statistics.median(reads))
    Path(out).write_text(json.dumps(figures))


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(3600)
def test_one_rank_step_by_stage_and_layout(tmp_path):
    runs: dict[str, list[dict]] = {variant: [] for variant in VARIANTS}
    for round_ in range(ROUNDS):
        for index, variant in enumerate(runs):
            out = tmp_path / f"variant{index}-{round_}.json"
            env = {**os.environ, "OMP_NUM_THREADS": "2"}
            subprocess.run([sys.executable, __file__, variant, str(out)], env=env, check=True, timeout=3000)
            runs[variant].append(json.loads(out.read_text()))
    print(f"\none learner rank, {MODEL} fp32 on CPU, GRPO on 2 x 4 x 244 tokens, micro_batch_tokens {MICRO}")
    print(f"{ROUNDS} runs a variant, alternating")
    keys = ["step_s", "read_s", "init_anon", "step_anon", "step_peak"]
    print(f"{'variant':>16s}" + "".join(f"{key:>11s}" for key in keys) + "   (seconds: median over runs; GB: range)")
    for variant, rows in runs.items():
        cells = [f"{statistics.median(r[key] for r in rows):11.3f}" for key in keys[:2]]
        cells += [f"{min(r[key] for r in rows):5.2f}-{max(r[key] for r in rows):<5.2f}" for key in keys[2:]]
        print(f"{variant:>16s}" + "".join(cells))


if __name__ == "__main__":
    _variant_main(sys.argv[1], sys.argv[2])
