"""The shipped study files (cluster/configs/study_*.yaml) load; the GPU ones fit KubeRay with the paper's numbers.

Each run of a GPU study (the init, both arms of every seed, as the runner builds them) passes the
driver's resource preflight on the KubeRay groups of k8s/raycluster.yaml; the budgets, evaluation
sizes and learning rates are the paper's (design.md, "The paper's recipe").

    .venv/bin/python -m pytest tests/cluster/test_study_configs.py
"""

import pytest
from kuberay_nodes import KUBERAY
from study_runs import study_runs

from cluster.config import CONFIG_DIR
from cluster.preflight import check_resources
from cluster.study.config import load_study

# setting -> (init SFT steps, RL iterations, episodes per variant, SFT lr, RL lr): design.md's table
PAPER = {
    "study_gp_l.yaml": (400, 20, 234, 1e-6, 1e-6),
    "study_gp_vl.yaml": (400, 20, 234, 5e-7, 1e-6),
    "study_virl_l.yaml": (25, 15, 48, 1e-6, 1e-6),
    "study_virl_vl.yaml": (25, 15, 48, 5e-7, 1e-7),
}


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("study_*.yaml")), ids=lambda path: path.name)
def test_every_shipped_study_file_loads(path):
    study = load_study(path)
    runs = study_runs(study)  # the config of every run the runner would start validates
    assert [label for label in runs if label.startswith("rl ")] == [f"rl (seed {s})" for s in study.plan.seeds]


@pytest.mark.parametrize("name", sorted(PAPER))
def test_every_run_of_a_gpu_study_fits_the_kuberay_groups(name):
    for label, config in study_runs(load_study(CONFIG_DIR / name)).items():
        try:
            check_resources(config, KUBERAY)
        except ValueError as err:
            raise AssertionError(f"{name}, {label}: {err}") from None


@pytest.mark.parametrize("name", sorted(PAPER))
def test_a_gpu_study_runs_the_papers_budgets_on_three_seeds(name):
    init_steps, iterations, episodes, sft_lr, rl_lr = PAPER[name]
    study = load_study(CONFIG_DIR / name)
    assert study.plan.seeds == [0, 1, 2] and not study.plan.init_per_seed
    assert (study.init.run.sft_steps, study.rl.run.iterations) == (init_steps, iterations)
    assert {c.eval.episodes_per_variant for c in (study.init, study.sft, study.rl)} == {episodes}
    assert study.init.learner.lr == study.sft.learner.lr == sft_lr and study.rl.learner.lr == rl_lr
    assert study.rl.learner.preset == "paper_ppo" and study.rl.learner.algo == "ppo"
    for sft in (study.init, study.sft):  # the paper's SFT recipe, each run with its own cosine
        learner = sft.learner
        assert (learner.adam_betas, learner.adam_eps, learner.weight_decay) == ((0.9, 0.98), 1e-7, 0.0)
        assert learner.lr_schedule == "cosine" and learner.total_steps == sft.run.sft_steps
        assert learner.warmup_steps == -(-3 * sft.run.sft_steps // 100), "3% warm-up, rounded up"
    assert study.rl.learner.total_steps == (100 if study.task.startswith("gp") else 20), "the paper's cosine T_max"
