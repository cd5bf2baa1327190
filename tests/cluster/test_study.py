"""The study's logic without Ray: its file format, its runs' configs, resume decisions and the report's math.

The real study (Ray, Serve, DeepSpeed) runs in tests/e2e/test_study_tiny.py; here `cluster.train.train`
is replaced by a fake that writes what a run leaves behind (metrics, an exported policy, a checkpoint),
so the runner's skip / resume / restart decisions and the report's numbers are checked on hand-made runs.
"""

import csv
import json
import math
import threading
import time
from dataclasses import asdict

import pytest

from cluster.config import CONFIG_DIR, ConfigError
from cluster.metrics import MetricsLogger
from cluster.study import runner
from cluster.study.config import INIT_SEED_OFFSET, load_study
from cluster.study.report import StudyLayout, collect_points, render_report, write_report
from cluster.study.stats import binomial_se, t_interval, wilson_interval
from cluster.trainer import TrainState

TINY = CONFIG_DIR / "study_tiny.yaml"


# --- stats -------------------------------------------------------------------------------------
def test_binomial_standard_error_by_hand():
    assert binomial_se(0.25, 12) == pytest.approx(0.125)  # sqrt(0.25 * 0.75 / 12)
    assert binomial_se(0.0, 10) == 0.0
    assert math.isnan(binomial_se(0.5, 0))


def test_t_interval_by_hand():
    # mean 0.4, s = 0.2, t(0.975, 2) = 4.302653: half-width 4.302653 * 0.2 / sqrt(3) = 0.496827
    interval = t_interval([0.2, 0.4, 0.6])
    assert (interval.mean, interval.n) == (pytest.approx(0.4), 3)
    assert interval.low == pytest.approx(0.4 - 0.496827, abs=1e-6)
    assert interval.high == pytest.approx(0.4 + 0.496827, abs=1e-6)
    one = t_interval([0.3, math.nan])  # NaN skipped; one value has no spread to measure
    assert one.mean == 0.3 and one.n == 1 and math.isnan(one.low)


def test_wilson_interval_by_hand_and_at_the_edges():
    # p = 0.5, n = 10: centre 0.5, half = 1.96 sqrt(0.025 + 0.0096) / 1.384 = 0.2634
    low, high = wilson_interval(0.5, 10)
    assert (low, high) == (pytest.approx(0.5 - 0.26340, abs=1e-4), pytest.approx(0.5 + 0.26340, abs=1e-4))
    low, high = wilson_interval(0.0, 2)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.6576, abs=1e-4)


# --- the study file ----------------------------------------------------------------------------
def test_the_tiny_study_loads_with_its_runs_resolved():
    study = load_study(TINY)
    assert study.plan.seeds == [0, 1] and study.task == "gp-l"
    assert (study.init.learner.algo, study.sft.learner.algo, study.rl.learner.algo) == ("sft", "sft", "ppo")
    assert study.rl.learner.model == study.sft.learner.model == "tiny"


def test_overrides_address_the_study_tree_and_unknown_keys_are_named():
    study = load_study(TINY, ["study.seeds=[3, 4, 5]", "base.learner.lr=3e-5", "rl.run.iterations=4"])
    assert study.plan.seeds == [3, 4, 5] and study.rl.run.iterations == 4
    assert study.init.learner.lr == study.sft.learner.lr == 3e-5
    with pytest.raises(ConfigError, match="unknown config key 'base.learner.lrr'"):
        load_study(TINY, ["base.learner.lrr=1"])
    with pytest.raises(ConfigError, match="unknown config key 'study.seed'"):
        load_study(TINY, ["study.seed=1"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("rl.run.iterations=3", "run.iterations a positive multiple of study.eval_points=2"),
        ("sft.learner.algo=ppo", "sft needs learner.algo=sft"),
        ("rl.env.task=virl-l", "share env.task"),
        ("init.run.sft_steps=0", "init needs learner.algo=sft and run.sft_steps > 0"),
        ("study.seeds=[1, 1]", "must be distinct"),
    ],
)
def test_an_inconsistent_study_is_refused_with_the_fix(override, message):
    with pytest.raises(ConfigError, match=message):
        load_study(TINY, [override])


def test_arm_configs_start_from_the_init_with_their_own_seed_and_k_points(tmp_path):
    study = load_study(TINY, ["sft.run.sft_steps=6", "rl.run.iterations=4"])
    policy = tmp_path / "init" / "policy"
    sft = study.arm_config("sft", 1, init_policy=policy, prior_train_tokens=123)
    rl = study.arm_config("rl", 1, init_policy=policy, prior_train_tokens=123)
    for arm in (sft, rl):
        assert arm.learner.model == arm.serving.model == str(policy)
        assert arm.run.seed == 1 and arm.run.prior_train_tokens == 123 and not arm.eval.after_sft
    assert (sft.eval.every_n_sft_steps, rl.eval.every_n_iterations) == (3, 2)  # steps / K, K = 2
    init = study.init_config(1)
    assert init.run.seed == INIT_SEED_OFFSET + 0 and init.eval.after_sft  # one shared init: the first seed's
    per_seed = load_study(TINY, ["study.init_per_seed=true"])
    assert per_seed.init_config(1).run.seed == INIT_SEED_OFFSET + 1


def test_the_api_key_survives_the_runs_configs(tmp_path, monkeypatch):
    monkeypatch.setenv("SFTRL_API_KEY", "s3cret-key-for-tests")
    study = load_study(TINY)
    arm = study.arm_config("rl", 0, init_policy=tmp_path, prior_train_tokens=0)
    assert arm.serving.api_key is not None and arm.serving.api_key.get_secret_value() == "s3cret-key-for-tests"


# --- the runner's decisions, on a fake train() ----------------------------------------------------
class FakeTrain:
    """Stands in for cluster.train.train: logs an eval row per point, exports a policy, saves a checkpoint."""

    def __init__(self):
        self.calls = []

    def __call__(self, config, run_dir, *, resume=False):
        self.calls.append((f"{run_dir.parent.name}/{run_dir.name}", resume))  # e.g. seed1/rl
        run_dir.mkdir(parents=True, exist_ok=True)
        logger = MetricsLogger(run_dir)
        logger.log(
            {"eval/id/success": 0.5, "eval/id/episodes": 2},
            step=0,
            phase="eval",
            policy_version=1,
            sft_step=1,
            iteration=0,
        )
        logger.close()
        (run_dir / "policy").mkdir(exist_ok=True)
        (run_dir / "policy" / "model.safetensors").write_bytes(b"weights of " + str(config.learner.model).encode())
        return TrainState(sft_step=config.run.sft_steps, iteration=config.run.iterations, train_tokens=100)


@pytest.fixture
def fake_train(monkeypatch):
    fake = FakeTrain()
    monkeypatch.setattr("cluster.train.train", fake)
    monkeypatch.setattr("cluster.session.ClusterSession.__enter__", lambda self: self)
    monkeypatch.setattr("cluster.session.ClusterSession.__exit__", lambda self, *exc: None)
    return fake


def test_the_study_runs_the_init_then_both_arms_from_its_identical_weights(tmp_path, fake_train):
    study = load_study(TINY)
    runner.run_study(study, tmp_path, command="test", say=lambda _: None)
    assert fake_train.calls[0][0].endswith("/init")
    assert len(fake_train.calls) == 5 and not any(resume for _, resume in fake_train.calls)
    init_digest = runner.weights_digest(tmp_path / "init" / "policy")
    for seed in (0, 1):
        for arm in ("sft", "rl"):
            record = runner.read_done(tmp_path / f"seed{seed}" / arm)
            assert record["start_weights_sha256"] == init_digest  # both arms: the init's bytes
    # Run again: every run finished, so nothing is trained twice.
    runner.run_study(study, tmp_path, command="test", say=lambda _: None)
    assert len(fake_train.calls) == 5


def test_a_killed_run_resumes_from_its_checkpoint_and_one_without_restarts(tmp_path, fake_train):
    study = load_study(TINY)
    runner.run_study(study, tmp_path, command="test", say=lambda _: None)
    killed = tmp_path / "seed1" / "rl"
    (killed / runner.DONE_FILE).unlink()  # as if killed after its checkpoint
    tag = killed / "checkpoints" / "step_00000001"
    tag.mkdir(parents=True)
    (tag / "trainer_state.json").write_text(json.dumps(asdict(TrainState())))
    (killed / "checkpoints" / "latest").write_text(tag.name)
    unsaved = tmp_path / "seed0" / "sft"
    (unsaved / runner.DONE_FILE).unlink()  # as if killed before any checkpoint
    (unsaved / "stale.txt").write_text("left by the killed run")
    fake_train.calls.clear()
    runner.run_study(study, tmp_path, command="test", say=lambda _: None)
    assert sorted(fake_train.calls) == [("seed0/sft", False), ("seed1/rl", True)]
    assert not (unsaved / "stale.txt").exists()  # restarted from a clean directory


def test_parallel_runs_run_the_arms_that_many_at_a_time_each_with_its_own_serve_app(tmp_path, fake_train, monkeypatch):
    active, most, apps = [0], [0], []
    lock = threading.Lock()
    train_once = FakeTrain.__call__

    def slow_train(config, run_dir, *, resume=False):
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
            apps.append((config.serving.app_name, config.serving.route_prefix))
        time.sleep(0.2)
        with lock:
            active[0] -= 1
        return train_once(fake_train, config, run_dir, resume=resume)

    monkeypatch.setattr("cluster.train.train", slow_train)
    checked = []
    monkeypatch.setattr("cluster.preflight.preflight", lambda config, copies=1: checked.append(copies))
    runner.run_study(load_study(TINY, ["study.parallel_runs=2"]), tmp_path, command="test", say=lambda _: None)
    assert checked == [2, 2]  # room for two arms at once, of each kind, before anything starts
    assert most[0] == 2 and len(fake_train.calls) == 5
    assert len({name for name, _ in apps}) == len({prefix for _, prefix in apps}) == 5  # one app per run
    assert all(runner.read_done(tmp_path / f"seed{s}" / arm) for s in (0, 1) for arm in ("sft", "rl"))


def test_a_study_directory_of_another_study_is_refused(tmp_path, fake_train):
    runner.run_study(load_study(TINY), tmp_path, command="test", say=lambda _: None)
    with pytest.raises(FileExistsError, match="holds another study"):
        runner.run_study(load_study(TINY, ["base.learner.lr=0.5"]), tmp_path, command="test", say=lambda _: None)


# --- the report, on hand-made numbers ------------------------------------------------------------------
def write_run(run_dir, rows):
    """A run directory whose metrics.jsonl holds one eval row per (success by variant, gflops)."""
    logger = MetricsLogger(run_dir)
    for index, (id_success, ood_success, gflops) in enumerate(rows):
        metrics = {
            "eval/id/success": id_success,
            "eval/id/episodes": 20,
            "eval/rule_ood/success": ood_success,
            "eval/rule_ood/episodes": 20,
            "compute/gflops": gflops,
        }
        logger.log(metrics, step=index, phase="eval", policy_version=index + 1, sft_step=index, iteration=index)
    logger.close()


@pytest.fixture
def hand_made_study(tmp_path):
    """Seeds 0-2 from one init (id 0.10, ood 0.05); RL ends ood at 0.20/0.30/0.25, SFT at 0.05/0.00/0.10."""
    runner.prepare_study_dir(load_study(TINY, ["study.seeds=[0, 1, 2]"]), tmp_path, command="sftrl study --test")
    write_run(tmp_path / "init", [(0.10, 0.05, 1.0)])
    for seed, (rl_ood, sft_ood) in enumerate([(0.20, 0.05), (0.30, 0.00), (0.25, 0.10)]):
        write_run(tmp_path / f"seed{seed}" / "rl", [(0.3, 0.1, 2.0), (0.5, rl_ood, 3.0)])
        write_run(tmp_path / f"seed{seed}" / "sft", [(0.4, 0.05, 1.5), (0.6, sft_ood, 2.0)])
    return tmp_path


def test_points_number_the_init_as_point_zero_of_both_arms(hand_made_study):
    points = collect_points(StudyLayout.read(hand_made_study))
    rl0 = [p for p in points if (p.arm, p.seed, p.variant) == ("rl", 2, "rule_ood")]
    assert [(p.point, p.value, p.gflops) for p in rl0] == [(0, 0.05, 1.0), (1, 0.1, 2.0), (2, 0.25, 3.0)]
    assert rl0[0].se == pytest.approx(math.sqrt(0.05 * 0.95 / 20)) and rl0[0].n == 20


def test_the_report_table_holds_the_interval_math(hand_made_study):
    text = render_report(StudyLayout.read(hand_made_study), collect_points(StudyLayout.read(hand_made_study)))
    ood = next(line for line in text.splitlines() if line.startswith("| rule_ood | success"))
    # RL: mean 0.25, s = 0.05, t(0.975, 2) = 4.302653 -> half 12.42 points; SFT: mean 0.05, s = 0.05;
    # RL - SFT paired: 0.15, 0.30, 0.15 -> mean 0.20, s = 0.0866 -> half 21.52 points.
    assert "25.0 [12.6, 37.4] (3 seeds)" in ood
    assert "5.0 [-7.4, 17.4] (3 seeds)" in ood
    assert "20.0 [-1.5, 41.5] (3 seeds)" in ood
    assert "11.5 / 15.0 / 3.4" in ood  # the paper's GP-L rule_ood numbers beside ours
    assert "the interval includes 0" in text and "sftrl study --test" in text


def test_the_report_files_are_rebuilt_from_the_run_directories(hand_made_study):
    paths = write_report(hand_made_study)
    assert [p.name for p in paths] == ["summary.csv", "report.md", "study.png"]
    rows = list(csv.DictReader((hand_made_study / "summary.csv").open()))
    assert len(rows) == 2 + 3 * 2 * 3 * 2  # init: 2 variants; 3 seeds x 2 arms x 3 points x 2 variants
    assert {"arm", "seed", "point", "variant", "metric", "value", "se", "n", "gflops"} <= set(rows[0])
    assert paths[2].read_bytes()[:4] == b"\x89PNG"
    assert list((hand_made_study / "tensorboard").glob("events.out.tfevents.*"))


def test_report_of_a_directory_that_is_no_study_says_why(tmp_path):
    with pytest.raises(FileNotFoundError, match="study.yaml does not exist"):
        write_report(tmp_path)
