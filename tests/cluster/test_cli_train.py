"""`sftrl train | eval | plot` argument handling (CliRunner; nothing heavy starts)."""

from typer.testing import CliRunner

from cluster.cli.main import app
from cluster.metrics import MetricsLogger

runner = CliRunner()


def test_commands_are_registered():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("train", "eval", "plot"):
        assert command in result.output


def test_plot_writes_pngs_and_prints_their_paths(tmp_path):
    logger = MetricsLogger(tmp_path)
    logger.log({"rollout/reward_mean": 1.0}, step=1, phase="rl", policy_version=1)
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
    assert "learner has no field 'lrr'" in result.output
    assert not (tmp_path / "config.yaml").exists()


def test_eval_rejects_an_unknown_task():
    result = runner.invoke(app, ["eval", "--checkpoint", "tiny", "--task", "chess"])
    assert result.exit_code != 0
    assert "unknown task 'chess'" in result.output
