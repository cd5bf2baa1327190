"""`sftrl train | eval | plot` argument handling (CliRunner; nothing heavy starts)."""

import re

from typer.testing import CliRunner

import cluster.train
from cluster.cli.main import app
from cluster.metrics import MetricsLogger
from learner.run_dir import RankSighting, RunDirMarker, check_run_dir_shared

runner = CliRunner()


def _listed_options(help_text: str) -> set[str]:
    """The options a --help page lists in its option table (one per row, first on its line)."""
    return set(re.findall(r"^\W*(--[a-z][a-z-]*)\s", help_text, flags=re.MULTILINE))


def test_train_help_lists_its_options():
    result = runner.invoke(app, ["train", "--help"])
    assert result.exit_code == 0, result.output
    assert {"--config", "--run-dir", "--resume"} <= _listed_options(result.output)


def test_train_names_a_missing_config_file(tmp_path):
    missing = tmp_path / "missing.yaml"
    result = runner.invoke(app, ["train", "--config", str(missing), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert f"config file '{missing}' does not exist" in result.output
    assert not (tmp_path / "run").exists()


def test_plot_writes_pngs_and_prints_their_paths(tmp_path):
    logger = MetricsLogger(tmp_path)
    logger.log({"rollout/reward_mean": 1.0}, step=1, phase="rl", policy_version=1, sft_step=0, iteration=1)
    logger.close()
    result = runner.invoke(app, ["plot", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "plots" / "rollout.png") in result.output


def test_plot_of_a_non_run_directory_says_why(tmp_path):
    result = runner.invoke(app, ["plot", str(tmp_path)])
    assert result.exit_code == 1
    assert "metrics.jsonl does not exist" in result.output


def test_train_rejects_a_bad_override_before_starting_anything(tmp_path):
    result = runner.invoke(
        app, ["train", "--config", "cluster/configs/tiny.yaml", "--run-dir", str(tmp_path), "learner.lrr=1"]
    )
    assert result.exit_code == 2
    assert "unknown config key 'learner.lrr'" in result.output
    assert "learner has no field 'lrr'" in result.output
    assert not (tmp_path / "config.yaml").exists()


def test_train_exits_2_with_the_fix_when_a_rank_does_not_see_the_run_directory(tmp_path, monkeypatch):
    def train(config, run_dir, *, resume):  # what LearnerGroup raises for a rank on another node's disk
        marker = RunDirMarker(str(run_dir), "token")
        check_run_dir_shared(marker, [RankSighting("10.0.0.2", f"{marker.path} does not exist on this node")])

    monkeypatch.setattr(cluster.train, "train", train)
    result = runner.invoke(app, ["train", "--config", "cluster/configs/tiny.yaml", "--run-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert f"error: the run directory {tmp_path} is not shared" in result.output
    assert "rank 0 on node 10.0.0.2" in result.output and "/mnt/sftrl" in result.output


def test_eval_rejects_an_unknown_task():
    result = runner.invoke(app, ["eval", "--checkpoint", "tiny", "--task", "chess"])
    assert result.exit_code != 0
    assert "unknown task 'chess'" in result.output
