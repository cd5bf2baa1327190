"""`sftrl study` end to end on real Ray, Serve and DeepSpeed: study_tiny.yaml, seeds 0 and 1.

One shared SFT init, then per seed an SFT arm and a PPO arm from the init's exported weights, two
arms at once (study.parallel_runs=4: concurrent Serve apps, learners and fleets on one Ray
cluster of 7 logical CPUs), each evaluated at 2 points; then summary.csv, report.md, the plot and
TensorBoard scalars. Running the study again skips every finished run; `sftrl study report`
rebuilds the same summary from the run directories alone.
"""

import csv

import pytest
from e2e_helpers import local_ray
from typer.testing import CliRunner

from cluster.cli.main import app
from cluster.config import CONFIG_DIR
from cluster.metrics import read_metrics
from cluster.study.runner import read_done, weights_digest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

runner = CliRunner()
STUDY = ["study", "--config", str(CONFIG_DIR / "study_tiny.yaml"), "--seeds", "0,1", "study.parallel_runs=4"]


@pytest.fixture(scope="module")
def ray_7_cpus():
    """A local Ray cluster with room for the four arms at once (1.7 logical CPUs each)."""
    with local_ray(7):
        yield


@pytest.fixture(scope="module")
def study_dir(ray_7_cpus, tmp_path_factory):
    """The tiny study, run once for the module through the real command line."""
    out = tmp_path_factory.mktemp("study")
    result = runner.invoke(app, [*STUDY, "--run-dir", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_the_study_writes_its_files(study_dir):
    for name in ("study.yaml", "summary.csv", "report.md", "plots/study.png"):
        assert (study_dir / name).is_file(), name
    assert list((study_dir / "tensorboard").glob("events.out.tfevents.*"))
    rows = list(csv.DictReader((study_dir / "summary.csv").open()))
    # (init: 1 point; each arm of each seed: the init's point + 2 of its own) x 2 variants x 2 metrics
    assert len(rows) == (1 + 2 * 2 * 3) * 2 * 2
    assert {r["metric"] for r in rows} == {"success", "legal_formula"}
    assert {(r["arm"], r["seed"]) for r in rows} >= {("rl", "0"), ("rl", "1"), ("sft", "0"), ("sft", "1")}
    assert all(float(r["gflops"]) > 0 and r["n"] == "2" for r in rows)
    report = (study_dir / "report.md").read_text()
    assert "| rule_ood | success |" in report and "(2 seeds)" in report and "--seeds 0,1" in report


def test_both_arms_start_from_the_inits_byte_identical_weights(study_dir):
    init_digest = weights_digest(study_dir / "init" / "policy")
    for seed in (0, 1):
        for arm in ("sft", "rl"):
            record = read_done(study_dir / f"seed{seed}" / arm)
            assert record["start_weights_sha256"] == init_digest, (arm, seed)


def test_the_arms_continue_the_inits_compute_axis(study_dir):
    init_tokens = read_done(study_dir / "init")["state"]["train_tokens"]
    init_rows = read_metrics(study_dir / "init")
    assert init_rows[-1]["compute/train_tokens"] == init_tokens > 0
    for arm in ("sft", "rl"):
        rows = read_metrics(study_dir / "seed0" / arm)
        gflops = [r["compute/gflops"] for r in rows]
        assert gflops == sorted(gflops) and gflops[0] > init_rows[-1]["compute/gflops"]
        assert all(r["compute/train_tokens"] > init_tokens for r in rows)
    rl_last = read_metrics(study_dir / "seed0" / "rl")[-1]
    assert rl_last["compute/buffer_tokens"] > 0 and rl_last["compute/generated_tokens"] > 0


def test_running_it_again_skips_finished_runs_and_the_report_rebuilds(study_dir):
    before = (study_dir / "summary.csv").read_text()
    result = runner.invoke(app, [*STUDY, "--run-dir", str(study_dir)])
    assert result.exit_code == 0, result.output
    assert result.output.count("finished earlier") == 5
    (study_dir / "summary.csv").unlink()
    result = runner.invoke(app, ["study", "report", str(study_dir)])
    assert result.exit_code == 0, result.output
    assert (study_dir / "summary.csv").read_text() == before
