"""Benchmark: memory of each learner rank, 2 ZeRO-3 ranks of `smollm2-135m` on CPU (gloo, fp32).

Two ways to load, side by side in one run: `whole` (every rank loads the whole fp32 model, then
`deepspeed.initialize` partitions it: the loading before zero.Init) and `partitioned` (what
`LearnerEngine` does: `load_policy(zero3_config=...)`, each rank building its partition under
`deepspeed.zero.Init`). Each rank is its own process (this file run as a script, no Ray), so its
peaks are its own. Per rank: private (anonymous) RSS and peak RSS (VmHWM, which also counts the
page-cache pages of the mmap'd weights file) after the load, after DeepSpeed's initialize and
after one SFT step on 4 samples of 180 prompt + 64 output tokens (GP-L sized). SFTRL_BENCH_MODEL
names another model.

    .venv/bin/python -m pytest tests/bench/bench_learner_memory.py -s -p no:cacheprovider
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

MODEL = os.environ.get("SFTRL_BENCH_MODEL", "smollm2-135m")
WORLD = 2
MODES = ("whole", "partitioned")


def _memory_gb() -> dict[str, float]:
    """This process's private RSS and peak RSS, GB (Linux /proc/self/status)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {key: int(fields[name].split()[0]) * 1024 / 1e9 for key, name in (("anon", "RssAnon"), ("peak", "VmHWM"))}


def _rank_main(mode: str, rank: int, port: int, out: str) -> None:
    """One rank: load (`mode`), initialise, one SFT step; writes its memory figures to `out` as JSON."""
    import torch

    from learner.batch import Sample
    from learner.config import LearnerConfig
    from learner.distributed import init_distributed
    from learner.engine import LearnerEngine, training_dtype
    from learner.models import load_policy
    from learner.optim import deepspeed_config

    torch.set_num_threads(1)
    init_distributed(rank, WORLD, master_port=port)
    config = LearnerConfig(model=MODEL, algo="sft", lr=1e-5, micro_batch_tokens=2048)
    zero3 = deepspeed_config(config, dtype=training_dtype(config)) if mode == "partitioned" else None
    started = time.perf_counter()
    policy = load_policy(MODEL, zero3_config=zero3)
    figures = {f"load_{key}": value for key, value in _memory_gb().items()}
    engine = LearnerEngine(config, policy=policy)
    figures.update({f"init_{key}": value for key, value in _memory_gb().items()}, init_s=time.perf_counter() - started)
    gen = torch.Generator().manual_seed(rank)
    samples = [
        Sample(
            prompt_ids=torch.randint(0, 1000, (180,), generator=gen).tolist(),
            output_ids=torch.randint(0, 1000, (64,), generator=gen).tolist(),
        )
        for _ in range(4)
    ]
    engine.sft_step(samples)
    figures.update({f"step_{key}": value for key, value in _memory_gb().items()})
    Path(out).write_text(json.dumps(figures))


def _run(mode: str, out_dir: Path) -> list[dict]:
    from learner.distributed import free_port

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    outs = [out_dir / f"{mode}-rank{rank}.json" for rank in range(WORLD)]
    procs = [
        subprocess.Popen([sys.executable, __file__, mode, str(rank), str(port), str(out)], env=env)
        for rank, out in enumerate(outs)
    ]
    assert [proc.wait(timeout=3000) for proc in procs] == [0] * WORLD
    return [json.loads(out.read_text()) for out in outs]


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(3600)
def test_memory_per_learner_rank_whole_vs_partitioned_loading(tmp_path):
    results = {mode: _run(mode, tmp_path) for mode in MODES}
    print(f"\nlearner memory, {MODEL}, {WORLD} ZeRO-3 ranks on CPU (fp32), GB (anon = private RSS, peak = VmHWM)")
    keys = ["load_anon", "load_peak", "init_anon", "init_peak", "step_anon", "step_peak", "init_s"]
    print(f"{'loading':12s}{'rank':>5s}" + "".join(f"{key:>11s}" for key in keys))
    for mode, rows in results.items():
        for rank, row in enumerate(rows):
            print(f"{mode:12s}{rank:5d}" + "".join(f"{row[key]:11.2f}" for key in keys))


if __name__ == "__main__":
    _rank_main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
