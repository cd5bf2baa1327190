"""metrics.jsonl + TensorBoard logging, and `plot_run` PNGs."""

import math

import pytest

from cluster.metrics import MetricsLogger, read_metrics
from cluster.plot import plot_run


def test_metrics_append_jsonl_and_tensorboard(tmp_path):
    logger = MetricsLogger(tmp_path)
    logger.log({"loss/sft": 1.5}, step=1, phase="sft", policy_version=0, sft_step=1, iteration=0)
    logger.log(
        {"rollout/reward_mean": -1.0, "loss/policy": math.nan},
        step=1,
        phase="rl",
        policy_version=1,
        sft_step=1,
        iteration=1,
    )
    logger.close()
    records = read_metrics(tmp_path)
    assert [(r["step"], r["phase"]) for r in records] == [(1, "sft"), (1, "rl")]
    assert records[1]["loss/policy"] is None and records[1]["rollout/reward_mean"] == -1.0
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_plot_writes_one_png_per_namespace(tmp_path):
    logger = MetricsLogger(tmp_path)
    logger.log({"loss/sft": 2.0}, step=1, phase="sft", policy_version=0, sft_step=1, iteration=0)
    for step in (1, 2):
        logger.log(
            {"rollout/reward_mean": step, "time/rollout_s": 1.0},
            step=step,
            phase="rl",
            policy_version=step,
            sft_step=1,
            iteration=step,
        )
    logger.log(
        {"eval/id/success": 0.5, "eval/rule_ood/success": 0.25},
        step=2,
        phase="eval",
        policy_version=2,
        sft_step=1,
        iteration=2,
    )
    logger.close()
    paths = plot_run(tmp_path)
    assert sorted(p.name for p in paths) == ["eval.png", "rollout.png", "sft.png", "time.png"]
    assert all(p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_plot_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl does not exist"):
        plot_run(tmp_path)
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="no numeric metrics"):
        plot_run(tmp_path)
