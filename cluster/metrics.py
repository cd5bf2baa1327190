"""Run metrics: one JSON line per logged step in `RUN_DIR/metrics.jsonl`, and TensorBoard events.

Keys are namespaced (`rollout/reward_mean`, `eval/rule_ood/success`, `loss/policy`,
`time/weight_sync_s`, `perf/tokens_per_s`, `compute/gflops`). Each line also holds `step` (the RL
iteration, or the SFT step during the SFT phase), `phase` (`sft` | `rl` | `eval`), `policy_version`,
and the run's position when it was logged: `sft_step` (SFT steps done) and `iteration` (RL
iterations done).
Read them back with `read_metrics(run_dir)`; view the events with `tensorboard --logdir RUN_DIR`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"


class MetricsLogger:
    """Appends metrics to `metrics.jsonl` and TensorBoard (resumed runs keep appending)."""

    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self._path = Path(run_dir) / METRICS_FILE
        self._writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def log(
        self, metrics: dict[str, float], *, step: int, phase: str, policy_version: int, sft_step: int, iteration: int
    ) -> None:
        """Record `metrics` at `step`; non-finite values are written as null in the JSONL."""
        record: dict[str, Any] = {
            "step": step,
            "phase": phase,
            "policy_version": policy_version,
            "sft_step": sft_step,
            "iteration": iteration,
            "wall_time": time.time(),
        }
        for key, value in sorted(metrics.items()):
            value = float(value)
            record[key] = value if math.isfinite(value) else None
            # TensorBoard keeps the SFT phase's curves apart from the RL iterations' by prefix.
            self._writer.add_scalar(f"{phase}/{key}" if phase == "sft" else key, value, step)
        with self._path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the TensorBoard writer (the JSONL file is closed after every record)."""
        self._writer.close()


def trim_metrics(run_dir: Path, *, sft_step: int, iteration: int) -> int:
    """Drop records logged after a checkpoint (at more SFT steps or RL iterations done than it holds).

    A resumed run repeats the work done after its checkpoint; trimming keeps one record per step.
    Returns how many records were dropped. TensorBoard events are append-only and keep both.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return 0
    records = read_metrics(run_dir)
    kept = [r for r in records if r["sft_step"] <= sft_step and r["iteration"] <= iteration]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    return len(records) - len(kept)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of `RUN_DIR/metrics.jsonl`, in order; FileNotFoundError names the path."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; is {run_dir} a run directory of `sftrl train`?")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
