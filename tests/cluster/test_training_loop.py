"""The Trainer's control flow with fakes: SFT, RL iterations, versions, eval, checkpoints, resume."""

import json

import pytest
from cluster_fakes import FakeEnv, FakeLearner, FakePolicy, FakeServer, InProcessFleet

from cluster.config import CONFIG_DIR, load_config
from cluster.metrics import read_metrics
from cluster.rollout import RolloutWorker
from cluster.trainer import STATE_FILE, Trainer, check_fresh_run_dir, episode_sampling_seed, newest_checkpoint
from learner.batch import Sample


def _trainer(run_dir, overrides=(), learner=None, made_envs=None):
    """A Trainer on tiny.yaml with fakes; `made_envs` collects the (variant, split) of every env built."""
    config = load_config(CONFIG_DIR / "tiny.yaml", list(overrides))
    policy = FakePolicy()

    def make_env(variant, split):
        if made_envs is not None:
            made_envs.append((variant, split))
        return FakeEnv(variant, split)

    worker = RolloutWorker(config.env, policy, envs_per_actor=2, make_env=make_env)
    sft = [Sample(prompt_ids=[1, 2], output_ids=[3, i + 4]) for i in range(3)]
    return Trainer(
        config,
        run_dir,
        learner=learner or FakeLearner(),
        policy=FakeServer(policy),
        fleet=InProcessFleet(worker),
        sft_samples=lambda n: sft,
        say=lambda line: None,
    )


def test_full_run_sft_then_rl_then_eval(tmp_path):
    trainer = _trainer(tmp_path)
    state = trainer.run()
    assert (state.sft_step, state.iteration, state.policy_version) == (2, 2, 3)
    calls = [name for name, _ in trainer.learner.calls]
    assert calls == ["sft_step", "sft_step", "save", "begin_rl", "rl_step", "save", "rl_step", "save", "export_hf"]
    assert {root for name, root in trainer.learner.calls if name == "save"} == {str(tmp_path / "checkpoints")}
    assert [v for _, v in trainer.policy.pushed] == [1, 2, 3]
    records = read_metrics(tmp_path)
    assert [r["phase"] for r in records] == ["sft", "sft", "rl", "rl", "eval"]
    rl = records[2]
    for key in (
        "rollout/reward_mean",
        "rollout/staleness_mean",
        "time/rollout_s",
        "time/learn_s",
        "time/weight_sync_s",
        "loss/policy",
        "rollout/generation_share",
    ):
        assert key in rl, key
    assert rl["rollout/staleness_mean"] == 0.0 and rl["policy_version"] == 2
    assert records[-1]["eval/rule_ood/success"] == 1.0 and "time/eval_s" in records[-1]
    assert (tmp_path / "eval" / "v00003" / "summary.csv").is_file()
    assert (tmp_path / "config.yaml").is_file()


def test_rl_batches_are_grpo_groups_from_the_collected_turns(tmp_path):
    trainer = _trainer(tmp_path)
    trainer.run()
    samples = [payload for name, payload in trainer.learner.calls if name == "rl_step"][0]
    requests = trainer.fleet.collected[0]
    assert len(requests) == 4 and requests[0].seed == requests[1].seed and requests[0].group == requests[1].group
    n_turns = sum(1 if r.seed % 2 == 0 else 2 for r in requests)
    assert len(samples) == n_turns


def test_training_seeds_are_deterministic_and_fresh_per_iteration(tmp_path):
    a, b = _trainer(tmp_path / "a"), _trainer(tmp_path / "b")
    assert a.training_requests(0) == b.training_requests(0)
    assert {r.seed for r in a.training_requests(0)} != {r.seed for r in a.training_requests(1)}
    other = _trainer(tmp_path / "c", ["run.seed=1"])
    assert a.training_requests(0) != other.training_requests(0)


def test_ppo_asks_the_learner_for_values(tmp_path):
    learner = FakeLearner()
    asked = []
    learner.values = lambda samples: asked.append(len(samples)) or [0.0] * len(samples)
    trainer = _trainer(tmp_path, ["learner.algo=ppo", "rollout.group_size=1"], learner=learner)
    trainer.run()
    samples = [p for name, p in learner.calls if name == "rl_step"][0]
    assert asked and all(s.return_ is not None for s in samples)


def test_resume_continues_from_the_newest_checkpoint(tmp_path):
    first = _trainer(tmp_path, ["run.iterations=1"])
    first.run()
    assert newest_checkpoint(tmp_path).name == "step_00000003"
    second = _trainer(tmp_path, ["run.iterations=3"])
    state = second.run(resume=True)
    calls = [name for name, _ in second.learner.calls]
    # No SFT again; the checkpoint's weights are pushed (version 2) before the first rollout.
    assert calls[0] == "load" and "sft_step" not in calls
    assert [v for _, v in second.policy.pushed] == [2, 3, 4]
    assert (state.iteration, state.policy_version) == (3, 4)
    assert [r["step"] for r in read_metrics(tmp_path) if r["phase"] == "rl"] == [1, 2, 3]


def test_resume_trims_metrics_logged_after_the_checkpoint(tmp_path):
    first = _trainer(tmp_path, ["run.iterations=2", "run.checkpoint_every=1"])
    first.run()
    checkpoint = newest_checkpoint(tmp_path)
    # Pretend the run died after iteration 2's record but before its checkpoint: point latest back.
    state = json.loads((checkpoint / STATE_FILE).read_text())
    state.update(iteration=1, policy_version=2)
    (checkpoint / STATE_FILE).write_text(json.dumps(state))
    second = _trainer(tmp_path, ["run.iterations=2"])
    second.run(resume=True)
    rl = [r for r in read_metrics(tmp_path) if r["phase"] == "rl"]
    assert [r["step"] for r in rl] == [1, 2] and rl[1]["policy_version"] == 3


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_too_few_samples_update_nothing(tmp_path, algo):
    trainer = _trainer(tmp_path, ["run.learner_ranks=64", f"learner.algo={algo}"])

    def values(samples):  # LearnerGroup.values refuses fewer samples than ranks, as rl_step does
        raise AssertionError(f"values() called with {len(samples)} samples for 64 ranks")

    trainer.learner.values = values
    trainer.run()
    assert "rl_step" not in [name for name, _ in trainer.learner.calls]
    assert trainer.state.iteration == 2 and trainer.state.policy_version == 1


def test_incomplete_checkpoints_are_not_resumed(tmp_path):
    root = tmp_path / "checkpoints"
    for tag in ("step_00000002", "step_00000003"):
        (root / tag).mkdir(parents=True)
        (root / tag / STATE_FILE).write_text(json.dumps({"iteration": 1}))
    (root / "latest").write_text("step_00000003")
    assert newest_checkpoint(tmp_path).name == "step_00000003"
    # Killed while saving step 7: its trainer state never got written; latest goes back to step 3.
    (root / "step_00000007").mkdir()
    (root / "latest").write_text("step_00000007")
    assert newest_checkpoint(tmp_path).name == "step_00000003"
    assert (root / "latest").read_text() == "step_00000003"
    assert newest_checkpoint(tmp_path / "nothing") is None


@pytest.mark.parametrize("every, after_sft, eval_steps", [(1, False, [1, 2]), (0, False, [2]), (0, True, [0, 2])])
def test_periodic_evaluation(tmp_path, every, after_sft, eval_steps):
    trainer = _trainer(tmp_path, [f"eval.every_n_iterations={every}", f"eval.after_sft={after_sft}"])
    trainer.run()
    assert [r["step"] for r in read_metrics(tmp_path) if r["phase"] == "eval"] == eval_steps


def test_checkpoint_every_zero_never_checkpoints(tmp_path):
    trainer = _trainer(tmp_path, ["run.checkpoint_every=0"])
    trainer.run()
    assert "save" not in [name for name, _ in trainer.learner.calls]
    assert newest_checkpoint(tmp_path) is None


def _saved_state(run_dir):
    return json.loads((newest_checkpoint(run_dir) / STATE_FILE).read_text())


def test_rl_begins_once_at_the_boundary_and_the_state_records_it(tmp_path):
    first = _trainer(tmp_path, ["run.iterations=1"])
    assert first.run().phase == "rl"
    calls = [name for name, _ in first.learner.calls]
    # After the SFT checkpoint (the RL init), before the first rollout's update; exactly once.
    assert calls.index("begin_rl") == calls.index("save") + 1 < calls.index("rl_step")
    assert calls.count("begin_rl") == 1 and _saved_state(tmp_path)["phase"] == "rl"
    # Resumed past the boundary: no second reset of the optimizer.
    second = _trainer(tmp_path, ["run.iterations=3"])
    second.run(resume=True)
    assert "begin_rl" not in [name for name, _ in second.learner.calls]


def test_a_run_resumed_at_the_sft_checkpoint_begins_rl(tmp_path):
    sft_only = _trainer(tmp_path, ["run.iterations=0", "learner.algo=sft", "rollout.group_size=1"])
    assert sft_only.run().phase == "sft" and "begin_rl" not in [name for name, _ in sft_only.learner.calls]
    assert _saved_state(tmp_path)["phase"] == "sft"
    rl = _trainer(tmp_path, ["run.iterations=1"])
    rl.run(resume=True)
    calls = [name for name, _ in rl.learner.calls]
    assert calls.count("begin_rl") == 1 and calls.index("begin_rl") < calls.index("rl_step")


def test_the_trainer_alone_counts_policy_versions(tmp_path):
    trainer = _trainer(tmp_path)
    state = trainer.run()
    # One version after the SFT phase, one per learned iteration: what the server got, what every
    # metrics record and the checkpoint say. The learner is asked for no version and saved with its root only.
    assert state.policy_version == 3 == trainer.policy.pushed[-1][1] == _saved_state(tmp_path)["policy_version"]
    assert [r["policy_version"] for r in read_metrics(tmp_path) if r["phase"] == "rl"] == [2, 3]
    assert [payload for name, payload in trainer.learner.calls if name == "save"] == [str(tmp_path / "checkpoints")] * 3


def test_training_deals_training_tasks_and_evaluation_held_out_ones(tmp_path):
    made = []
    trainer = _trainer(tmp_path, ["eval.after_sft=true"], made_envs=made)
    trainer.run()
    # Collections: evaluation after SFT (id, rule_ood), 2 RL iterations, the final evaluation.
    batches = trainer.fleet.collected
    evaluation, training = batches[:2] + batches[4:], batches[2:4]
    assert [{r.variant for r in batch} for batch in evaluation] == [{"id"}, {"rule_ood"}] * 2
    assert {r.split for batch in evaluation for r in batch} == {"eval"}
    assert {r.split for batch in training for r in batch} == {"train"}
    assert set(made) == {("id", "eval"), ("rule_ood", "eval"), ("id", "train")}


def test_no_split_protocol_deals_every_task_everywhere(tmp_path):
    trainer = _trainer(tmp_path, ["env.split=none"])
    trainer.run()
    assert {r.split for batch in trainer.fleet.collected for r in batch} == {"all"}


def test_each_training_episode_has_its_own_reproducible_sampling_seed(tmp_path):
    a, b = _trainer(tmp_path / "a"), _trainer(tmp_path / "b")
    first, again = a.training_requests(0), b.training_requests(0)
    assert [r.sampling_seed for r in first] == [r.sampling_seed for r in again]  # a resumed run replays them
    seeds = [r.sampling_seed for i in range(3) for r in a.training_requests(i)]
    assert len(set(seeds)) == len(seeds)  # the episodes of a group differ too
    assert first[0].seed == first[1].seed and first[0].sampling_seed != first[1].sampling_seed
    assert all(0 <= s < 2**63 for s in seeds)
    assert first[3].sampling_seed == episode_sampling_seed(0, 0, 3) != episode_sampling_seed(1, 0, 3)
    # The seeds reach the server: every sampled request of iteration 1 carries one.
    a.run()
    sampled = [r for r in a.policy.handle.requests if r.temperature > 0]
    assert sampled and all(r.seed is not None for r in sampled)


def test_the_rollout_temperature_is_the_one_the_learner_scores_at(tmp_path):
    trainer = _trainer(tmp_path, ["rollout.sampling.temperature=0.7"])
    trainer.run()
    # Training turns are sent at it, evaluation turns greedily (eval.greedy).
    assert {r.temperature for r in trainer.policy.handle.requests} == {0.7, 0.0}
    samples = [s for name, payload in trainer.learner.calls if name == "rl_step" for s in payload]
    assert samples and all(s.temperature == 0.7 for s in samples)


def test_a_new_run_refuses_a_run_directory_that_holds_one(tmp_path):
    check_fresh_run_dir(tmp_path / "new")  # nothing there yet
    _trainer(tmp_path, []).run()
    with pytest.raises(FileExistsError, match="pass --resume to continue it, or give a new --run-dir"):
        check_fresh_run_dir(tmp_path)


def test_every_row_carries_the_compute_axis_of_the_paper(tmp_path):
    # FakeLearner: N = 1000 parameters; SFT samples are 4 tokens each, 4 per step (tiny.yaml).
    trainer = _trainer(tmp_path, ["run.prior_train_tokens=50"])
    trainer.run()
    records = read_metrics(tmp_path)
    assert all("compute/gflops" in r and r["compute/parameters"] == 1000 for r in records)
    sft_rows = [r for r in records if r["phase"] == "sft"]
    assert [r["compute/train_tokens"] for r in sft_rows] == [50 + 16, 50 + 32]  # prior + 4 samples x 4 tokens
    assert sft_rows[-1]["compute/gflops"] == pytest.approx(6 * 1000 * 82 / 1e9)
    last = records[-1]
    buffer = sum(len(t.prompt_ids) + len(t.output_ids) for t in trainer.fleet.training_turns())
    rl_tokens = last["compute/train_tokens"] - 82
    assert last["compute/buffer_tokens"] == buffer > 0 and rl_tokens > 0
    # X_RL = 6 N (D_init + D_RL) + 2 N D_buffer
    assert last["compute/gflops"] == pytest.approx((6 * 1000 * (82 + rl_tokens) + 2 * 1000 * buffer) / 1e9)


def test_sft_evaluation_points_push_evaluate_and_checkpoint_within_the_phase(tmp_path):
    trainer = _trainer(
        tmp_path, ["run.sft_steps=4", "run.iterations=0", "learner.algo=sft", "eval.every_n_sft_steps=2"]
    )
    state = trainer.run()
    assert [v for _, v in trainer.policy.pushed] == [1, 2] and state.policy_version == 2
    evals = [r for r in read_metrics(tmp_path) if r["phase"] == "eval"]
    assert [(r["sft_step"], r["policy_version"]) for r in evals] == [(2, 1), (4, 2)]  # no third evaluation at the end
    assert [name for name, _ in trainer.learner.calls].count("save") == 2


def test_before_training_evaluates_the_starting_weights_once(tmp_path):
    trainer = _trainer(tmp_path, ["eval.before_training=true"])
    trainer.run()
    evals = [r for r in read_metrics(tmp_path) if r["phase"] == "eval"]
    assert [(r["sft_step"], r["policy_version"]) for r in evals] == [(0, 0), (2, 3)]
    assert [e.stage for e in trainer.evals] == ["before training", "after RL iteration 2"]
