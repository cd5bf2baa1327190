"""Learner benchmark: SFT throughput of `smollm2-135m` under ZeRO-3, peak memory, weight export.

CPU (always): world size 1 and 2 (gloo, one Ray actor per rank, fp32): SFT tokens/s, peak RSS of
the worst rank, weight-export time and GB/s (gather to rank 0 + Ray object store + fetch).
CPU fp32 vs bf16 (1 rank in-process, no Ray, steps alternating A B A B): SFT tokens/s and MFU against
the theoretical fp32 peak (cores x GHz x FLOP/cycle), with 512^2 matmul GFLOP/s in each dtype.
GPU (marker `gpu`, skipped without CUDA): the same in bf16 with one GPU per rank, plus achieved
TFLOP/s (6 x params x tokens/s, attention ignored) against the card's dense bf16 peak.

    make bench                                            # all benchmarks
    .venv/bin/python -m pytest tests/bench/bench_learner.py -s -p no:cacheprovider
"""

import os
import re
import statistics
import tempfile
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ray = pytest.importorskip("ray")

from learner.batch import Sample  # noqa: E402  (imported after the skip-without-Ray check)
from learner.config import LearnerConfig  # noqa: E402
from learner.group import LearnerGroup  # noqa: E402

MODEL = "smollm2-135m"
STEPS_PER_DTYPE = 2  # timed SFT steps per dtype in the side-by-side comparison
# (samples, prompt, output tokens): small because a bf16 step runs at ~1 GFLOP/s on a CPU without AVX512-BF16
SIDE_BY_SIDE_BATCH = (2, 60, 40)
# dense bf16 peak TFLOP/s by device-name fragment (vendor datasheets, no sparsity)
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0}


def sft_batch(n_samples: int, prompt_len: int, output_len: int) -> list[Sample]:
    generator = torch.Generator().manual_seed(0)
    return [
        Sample(
            torch.randint(3, 49000, (prompt_len,), generator=generator).tolist(),
            torch.randint(3, 49000, (output_len,), generator=generator).tolist(),
        )
        for _ in range(n_samples)
    ]


def state_bytes(state: dict[str, torch.Tensor]) -> int:
    """Bytes of a state dict, counting tied (shared) tensors once."""
    return sum(t.numel() * t.element_size() for t in {id(t): t for t in state.values()}.values())


def measure(
    world_size: int, config: LearnerConfig, samples: list[Sample], *, steps: int, resources: dict[str, float]
) -> dict[str, float]:
    """Warm-up step, then `steps` timed SFT steps and one timed weight export."""
    group = LearnerGroup(world_size, config, resources_per_rank=resources)
    try:
        group.sft_step(samples)  # warm-up: first-touch allocations, op caches
        metrics = [group.sft_step(samples) for _ in range(steps)]
        start = time.perf_counter()
        state = load_file(group.export_weights(Path(tempfile.mkdtemp()) / "weights.safetensors"))
        export_s = time.perf_counter() - start
    finally:
        group.shutdown()
    n_bytes = state_bytes(state)
    n_params = sum(t.numel() for t in {id(t): t for t in state.values()}.values())
    tokens_per_s = sum(m["perf/tokens_per_s"] for m in metrics) / len(metrics)
    return {
        "world_size": world_size,
        "tokens_per_s": tokens_per_s,
        "step_s": sum(m["perf/step_s"] for m in metrics) / len(metrics),
        "peak_rank_gb": max(m["mem/peak_rank_gb"] for m in metrics),
        "export_s": export_s,
        "export_gb": n_bytes / 1e9,
        "export_gb_per_s": n_bytes / 1e9 / export_s,
        "tflops": 6 * n_params * tokens_per_s / 1e12,
        "loss": metrics[-1]["loss/sft"],
    }


def report(title: str, rows: list[dict[str, float]], peak_tflops: float | None = None) -> None:
    print(f"\n{title}")
    print(
        f"{'ranks':>5} {'tokens/s':>10} {'step s':>8} {'peak GB/rank':>13} {'export s':>9} "
        f"{'export GB':>10} {'GB/s':>6} {'TFLOP/s':>8} {'MFU':>6}"
    )
    for r in rows:
        mfu = f"{r['tflops'] / peak_tflops:6.1%}" if peak_tflops else "   n/a"
        print(
            f"{r['world_size']:>5} {r['tokens_per_s']:>10.1f} {r['step_s']:>8.2f} "
            f"{r['peak_rank_gb']:>13.2f} {r['export_s']:>9.2f} {r['export_gb']:>10.3f} "
            f"{r['export_gb_per_s']:>6.2f} {r['tflops']:>8.4f} {mfu}"
        )


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, num_gpus=torch.cuda.device_count(), include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_cpu_sft_throughput_and_export(ray_cluster):
    config = LearnerConfig(model=MODEL, algo="sft", lr=1e-5, dtype="float32", micro_batch_tokens=1024)
    samples = sft_batch(4, prompt_len=160, output_len=96)  # 1024 tokens per step
    rows = [measure(n, config, samples, steps=2, resources={"CPU": 1}) for n in (1, 2)]
    report(f"SFT {MODEL} on CPU, ZeRO-3 fp32, {len(samples)} x 256 tokens per step", rows)
    assert all(r["tokens_per_s"] > 0 for r in rows)


def test_cpu_gather_without_ray():
    """Rank 0's layer-by-layer gather alone (world size 1, in this process), without Ray's copy."""
    from learner.distributed import free_port, init_distributed
    from learner.engine import LearnerEngine
    from learner.export import gather_policy_state_dict

    init_distributed(0, 1, master_port=free_port())
    engine = LearnerEngine(LearnerConfig(model=MODEL, algo="sft", dtype="float32"))
    times, n_bytes = [], 0
    for _ in range(3):
        start = time.perf_counter()
        state = gather_policy_state_dict(engine.module, rank=0)
        times.append(time.perf_counter() - start)
        n_bytes = state_bytes(state)
    best = min(times)
    print(
        f"\ngather {MODEL} (ZeRO-3, 1 rank, no Ray): {best:.2f} s for {n_bytes / 1e9:.3f} GB "
        f"= {n_bytes / 1e9 / best:.2f} GB/s"
    )
    assert n_bytes > 0


@pytest.mark.gpu
def test_gpu_bf16_sft_throughput_and_export(ray_cluster):
    name = torch.cuda.get_device_name(0)
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    config = LearnerConfig(model=MODEL, algo="sft", lr=1e-5, dtype="bfloat16", micro_batch_tokens=16384)
    samples = sft_batch(32, prompt_len=384, output_len=128)  # 16384 tokens per step
    sizes = [n for n in (1, 2) if n <= torch.cuda.device_count()]
    rows = [measure(n, config, samples, steps=5, resources={"CPU": 1, "GPU": 1}) for n in sizes]
    report(f"SFT {MODEL} on {name}, ZeRO-3 bf16, 32 x 512 tokens per step", rows, peak)
    assert all(r["tokens_per_s"] > 0 for r in rows)


def cpu_peak_gflops() -> float:
    """Theoretical fp32 GFLOP/s of this process's CPUs: cores x GHz x FLOP/cycle (2 FMA pipes x lanes x 2).

    8 fp32 lanes per pipe with AVX2, 16 with AVX-512. bf16 has no separate peak here: without
    AVX512-BF16 / AMX the CPU converts bf16 to fp32 and computes at (at best) this rate.
    """
    cpuinfo = Path("/proc/cpuinfo").read_text()
    mhz = float(re.search(r"cpu MHz\s*:\s*([\d.]+)", cpuinfo).group(1))
    lanes = 16 if " avx512f" in cpuinfo else 8
    return len(os.sched_getaffinity(0)) * mhz / 1e3 * 2 * lanes * 2


def matmul_gflops(dtype: torch.dtype, n: int = 512, reps: int = 5) -> float:
    """Median GFLOP/s of an (n, n) @ (n, n) matmul in `dtype` on this process's torch threads."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def test_cpu_sft_fp32_vs_bf16_side_by_side():
    """1 rank in this process, no Ray: fp32 and bf16 (DeepSpeed bf16, fp32 master weights) steps in turn.

    The machine is shared, so the two engines alternate A B A B and the medians are compared. MFU is
    6 x params x tokens/s over the theoretical fp32 peak (`cpu_peak_gflops`); the 512^2 matmul rates
    are printed beside it (they fall with the machine's load, so they are no stable denominator).
    """
    from learner.distributed import free_port, init_distributed
    from learner.engine import LearnerEngine

    init_distributed(0, 1, master_port=free_port())
    peaks = {"float32": matmul_gflops(torch.float32), "bfloat16": matmul_gflops(torch.bfloat16)}
    samples = sft_batch(*SIDE_BY_SIDE_BATCH)
    n_tokens = sum(len(s.prompt_ids) + len(s.output_ids) for s in samples)
    engines = {
        dtype: LearnerEngine(LearnerConfig(model=MODEL, algo="sft", lr=1e-5, dtype=dtype, micro_batch_tokens=n_tokens))
        for dtype in ("float32", "bfloat16")
    }
    n_params = sum(p.ds_numel for p in engines["float32"].module.parameters())
    rates: dict[str, list[float]] = {dtype: [] for dtype in engines}
    for engine in engines.values():
        engine.sft_step(sft_batch(1, prompt_len=4, output_len=4))  # warm-up: op caches, optimizer state
    for _ in range(STEPS_PER_DTYPE):
        for dtype, engine in engines.items():
            rates[dtype].append(engine.sft_step(samples)["perf/tokens_per_s"])
    peak = cpu_peak_gflops()
    print(
        f"\ntheoretical fp32 peak {peak:.1f} GFLOP/s; matmul 512^2, {torch.get_num_threads()} threads: "
        + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peaks.items())
    )
    print(f"SFT {MODEL}, 1 rank ZeRO-3 CPU, {n_tokens} tokens per step, {STEPS_PER_DTYPE} steps each, alternating")
    for dtype, values in rates.items():
        median = statistics.median(values)
        mfu = 6 * n_params * median / 1e9 / peak
        print(f"{dtype:>9}: median {median:7.1f} tokens/s  runs {[round(v, 1) for v in values]}  MFU {mfu:.1%}")
    print(f"bf16 / fp32 tokens/s: {statistics.median(rates['bfloat16']) / statistics.median(rates['float32']):.2f}")
    assert all(v > 0 for values in rates.values() for v in values)
