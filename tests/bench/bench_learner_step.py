"""Benchmark: one learner rank on DeepSpeed stage 0 (the default on one rank) against ZeRO-3, on CPU.

SmolLM2-135M fp32, GRPO steps on 8 sequences of 180 prompt + 64 output tokens (GP-L sized, the issue's
batch), `micro_batch_tokens` 4096 (one micro-batch) or SFTRL_BENCH_MICRO. Each stage runs in a fresh
process (this file as a script), alternating 0, 3, 0, 3 over ROUNDS rounds. Per stage: the median of
steps 2-4, private RSS (RssAnon) after init and after the steps, the peak (VmHWM), and the time to read
the policy's weights out (`iter_policy_tensors`: what a weight sync reads). Nothing is asserted about
the timings (a shared machine).

    .venv/bin/python -m pytest tests/bench/bench_one_rank_stage.py -s -p no:cacheprovider
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


def _memory_gb() -> dict[str, float]:
    """This process's private RSS and peak RSS, GB (Linux /proc/self/status)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {key: int(fields[name].split()[0]) * 1024 / 1e9 for key, name in (("anon", "RssAnon"), ("peak", "VmHWM"))}


def _stage_main(stage: int, out: str) -> None:
    """One rank at `stage`: init, STEPS GRPO steps, three weight read-outs; its figures to `out` as JSON."""
    import torch

    from learner.batch import Sample
    from learner.config import LearnerConfig
    from learner.distributed import free_port, init_distributed
    from learner.engine import LearnerEngine
    from learner.export import iter_policy_tensors

    torch.set_num_threads(2)
    init_distributed(0, 1, master_port=free_port())
    config = LearnerConfig(model=MODEL, algo="grpo", lr=1e-5, zero_stage=stage, micro_batch_tokens=MICRO)
    engine = LearnerEngine(config)
    figures = {"init_anon": _memory_gb()["anon"]}
    gen = torch.Generator().manual_seed(0)
    samples = [
        Sample(
            prompt_ids=torch.randint(0, 49000, (180,), generator=gen).tolist(),
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
def test_one_rank_stage_0_vs_zero3(tmp_path):
    runs: dict[int, list[dict]] = {0: [], 3: []}
    for round_ in range(ROUNDS):
        for stage in runs:
            out = tmp_path / f"stage{stage}-{round_}.json"
            env = {**os.environ, "OMP_NUM_THREADS": "2"}
            subprocess.run([sys.executable, __file__, str(stage), str(out)], env=env, check=True, timeout=3000)
            runs[stage].append(json.loads(out.read_text()))
    print(f"\none learner rank, {MODEL} fp32 on CPU, GRPO on 8 x 244 tokens, micro_batch_tokens {MICRO}, {ROUNDS} runs")
    keys = ["step_s", "read_s", "init_anon", "step_anon", "step_peak"]
    print(f"{'stage':>5s}" + "".join(f"{key:>11s}" for key in keys) + "   (seconds: median over runs; GB: range)")
    for stage, rows in runs.items():
        cells = [f"{statistics.median(r[key] for r in rows):11.3f}" for key in keys[:2]]
        cells += [f"{min(r[key] for r in rows):5.2f}-{max(r[key] for r in rows):<5.2f}" for key in keys[2:]]
        print(f"{stage:5d}" + "".join(cells))


if __name__ == "__main__":
    _stage_main(int(sys.argv[1]), sys.argv[2])
