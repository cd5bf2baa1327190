"""The config tree: shipped YAMLs validate, dotted overrides apply, bad input names key and fix."""

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import BaseModel, Field

from cluster.config import CONFIG_DIR, ConfigError, EnvConfig, TrainConfig, dump_config, load_config, validate_config
from learner.config import LearnerConfig
from serving.config import ServingConfig

SHIPPED = ["tiny", "demo", "gp_l_sft", "gp_l_rl", "gp_vl_rl", "virl_l_rl", "virl_vl_rl"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_validate(name):
    config = load_config(CONFIG_DIR / f"{name}.yaml")
    assert config.learner.model == config.serving.model
    # The model is named once, in the learner section.
    assert "model" not in yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())["serving"]
    assert config.env.task in name.replace("_", "-") or name in ("tiny", "demo")


def test_overrides_are_typed_and_nested():
    config = load_config(
        CONFIG_DIR / "tiny.yaml",
        [
            "learner.lr=1e-6",
            "run.iterations=5",
            "eval.greedy=false",
            "env.kwargs.target=10",
            "rollout.sampling.max_new_tokens=7",
        ],
    )
    assert config.learner.lr == 1e-6
    assert config.run.iterations == 5
    assert config.eval.greedy is False
    assert config.env.kwargs["target"] == 10
    assert config.rollout.sampling.max_new_tokens == 7


def test_paper_arms_differ_only_in_the_update_rule():
    sft = load_config(CONFIG_DIR / "gp_l_sft.yaml")
    rl = load_config(CONFIG_DIR / "gp_l_rl.yaml")
    same_eval = {"episodes_per_variant", "greedy", "sampling"}
    assert (sft.env.task, sft.learner.model) == (rl.env.task, rl.learner.model)
    assert sft.eval.model_dump(include=same_eval) == rl.eval.model_dump(include=same_eval)
    assert (sft.learner.algo, rl.learner.algo) == ("sft", "ppo")
    assert (sft.env.split, sft.env.kwargs) == (rl.env.split, rl.env.kwargs)
    # The paper's SFT recipe: the step-400 checkpoint is its RL init.
    assert (sft.run.sft_steps, sft.learner.adam_betas, sft.learner.adam_eps) == (400, (0.9, 0.98), 1e-7)
    assert (sft.learner.lr_schedule, sft.learner.warmup_steps, sft.learner.total_steps) == ("cosine", 12, 400)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("learner.lrr=1", "learner has no field 'lrr'"),
        ("rnu.seed=1", "the top level has no field 'rnu'"),
        ("learner=3", "names a whole section"),
        ("run.seed.x=1", "'seed' is not a section"),
        ("no_equals_sign", "is not key=value"),
        ("rollout.sampling.temperature=-1", "rollout.sampling.temperature"),
        ("learner.algo=dpo", "learner.algo"),
        ("serving.model=smollm2-135m", "drop serving.model (it follows learner.model)"),
        ("env.kwargs.variant=rule_ood", "driver chooses per task"),
        ("rollout.episodes_per_iteration=5", "not a multiple of rollout.group_size=2"),
        ("rollout.group_size=1", "learner.algo='grpo' needs groups"),
    ],
)
def test_bad_overrides_name_the_key(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(CONFIG_DIR / "tiny.yaml", [override])
    assert fragment in str(err.value)


def test_sft_algo_with_rl_iterations_is_rejected():
    with pytest.raises(ConfigError, match="set run.iterations=0"):
        load_config(CONFIG_DIR / "gp_l_sft.yaml", ["run.iterations=3"])


def test_missing_file_lists_the_shipped_ones(tmp_path):
    with pytest.raises(ConfigError, match="tiny.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_unknown_yaml_key_is_rejected(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("learner: {model: tiny}\nserving: {model: tiny}\nrolout: {n_actors: 2}\n")
    with pytest.raises(ConfigError, match="rolout"):
        load_config(path)


def test_dumped_config_reloads_identically_and_holds_no_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("SFTRL_API_KEY", "sk-secret")
    config = load_config(CONFIG_DIR / "tiny.yaml")
    dump_config(config, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert "sk-secret" not in text and "api_key" not in text
    assert validate_config(yaml.safe_load(text)).model_dump(exclude={"serving": {"api_key"}}) == config.model_dump(
        exclude={"serving": {"api_key"}}
    )


def test_serving_model_follows_the_learners_unless_set():
    assert TrainConfig(learner={"model": "tiny", "algo": "ppo"}).serving.model == "tiny"
    assert TrainConfig(learner={"algo": "ppo"}).serving.model == LearnerConfig().model
    given = TrainConfig(learner=LearnerConfig(model="tiny", algo="ppo"), serving=ServingConfig(port=9000))
    assert (given.serving.model, given.serving.port) == ("tiny", 9000)
    # The README's recipe: one override moves both the learner and the server to a checkpoint.
    assert load_config(CONFIG_DIR / "tiny.yaml", ["learner.model=runs/init/policy"]).serving.model == "runs/init/policy"
    assert TrainConfig(learner={"model": "tiny", "algo": "ppo"}, serving={"model": "tiny"}).serving.model == "tiny"
    with pytest.raises(ValueError, match="learner.model='tiny' but serving.model='smollm2-135m'"):
        TrainConfig(learner={"model": "tiny", "algo": "ppo"}, serving={"model": "smollm2-135m"})
    with pytest.raises(ValueError, match="serving.model='smollm2-135m'"):
        TrainConfig(learner=LearnerConfig(model="tiny", algo="ppo"), serving=ServingConfig(model="smollm2-135m"))


def test_task_spec_variants():
    config = load_config(CONFIG_DIR / "gp_vl_rl.yaml")
    assert config.env.spec.variants == ("id", "rule_ood", "visual_ood")
    assert config.env.spec.modality == "image"
    assert Path(CONFIG_DIR).is_dir()


def test_rollout_top_p_below_one_is_rejected_and_eval_may_keep_it():
    with pytest.raises(ConfigError) as err:
        load_config(CONFIG_DIR / "tiny.yaml", ["rollout.sampling.top_p=0.9"])
    assert "not truncated to the nucleus" in str(err.value) and "rollout.sampling.top_p=1" in str(err.value)
    assert load_config(CONFIG_DIR / "tiny.yaml", ["eval.sampling.top_p=0.9"]).eval.sampling.top_p == 0.9


def _fields_without_description(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every field of `model`'s tree (nested config models included) that pydantic sees no description for."""
    missing = []
    for name, info in model.model_fields.items():
        if not (info.description or "").strip():
            missing.append(prefix + name)
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            missing += _fields_without_description(info.annotation, f"{prefix}{name}.")
    return missing


def test_every_config_field_has_a_description_in_the_schema():
    # The whole tree, the learner's and the server's sections (and serving.limits) included.
    assert _fields_without_description(TrainConfig) == []
    schema = TrainConfig.model_json_schema()["$defs"]
    assert "one source of truth" in schema["RolloutConfig"]["properties"]["sampling"]["description"]
    assert "no-split protocol" in schema["EnvConfig"]["properties"]["split"]["description"]


def test_the_walk_finds_a_field_without_description():
    class Inner(BaseModel):
        documented: int = Field(0, description="yes")
        bare: int = 0

    class Outer(BaseModel):
        inner: Inner = Field(default_factory=Inner, description="a section")

    assert _fields_without_description(Outer) == ["inner.bare"]


def test_env_split_selects_the_envs_split_per_role():
    held_out, no_split = EnvConfig(task="gp-l"), EnvConfig(task="gp-l", split="none")
    assert (held_out.split_for("train"), held_out.split_for("eval")) == ("train", "eval")
    assert (no_split.split_for("train"), no_split.split_for("eval")) == ("all", "all")
    assert held_out.make("id", "train").unwrapped.split == "train"
    with pytest.raises(ConfigError, match=re.escape("env.split=held_out|none")):
        load_config(CONFIG_DIR / "tiny.yaml", ["env.kwargs.split=all"])
    with pytest.raises(ConfigError, match="env.split"):
        load_config(CONFIG_DIR / "tiny.yaml", ["env.split=all"])


PAPER_TURNS_PER_UPDATE = 2048


def _mean_rail_points(task: str, n_routes: int = 200) -> float:
    """Mean rail points (policy calls of a flawless episode) of the training routes of a V-IRL task."""
    env = EnvConfig(task=task).make("id", "train")
    return float(np.mean([env.reset(seed=seed)[1]["n_points"] for seed in range(n_routes)]))


@pytest.mark.parametrize("name", ["gp_l_rl", "gp_vl_rl", "virl_l_rl", "virl_vl_rl"])
def test_gpu_rl_configs_run_the_papers_recipe(name):
    config = load_config(CONFIG_DIR / f"{name}.yaml")
    learner, rollout, gp = config.learner, config.rollout, name.startswith("gp")
    assert learner.preset == "paper_ppo" and learner.algo == "ppo" and learner.kl_mode == "none"
    assert (learner.ppo_epochs, learner.mini_batches, learner.clip_low, learner.clip_high) == (4, 2, 0.1, 0.1)
    assert (learner.value_clip, learner.value_coef, learner.entropy_coef) == (0.1, 0.5, 0.0)
    assert learner.whiten_advantages and (learner.grad_clip, learner.adam_eps, learner.weight_decay) == (0.01, 1e-7, 0)
    assert (learner.lr_schedule, learner.lr_min, learner.schedule_unit) == ("cosine", 1e-9, "update")
    assert learner.total_steps == (100 if gp else 20) and learner.pre_action_weight == 0.5
    assert learner.lr == (1e-7 if name == "virl_vl_rl" else 1e-6)
    assert (config.advantage.gamma, config.advantage.lam) == (0.9, 0.95)
    assert config.run.iterations == (20 if gp else 15)
    assert (rollout.sampling.temperature, rollout.sampling.top_p, rollout.sampling.max_new_tokens) == (0.2, 1.0, 512)
    assert config.eval.sampling.max_new_tokens == 256 and config.eval.greedy
    assert config.eval.episodes_per_variant == (234 if gp else 48)
    assert config.env.kwargs["max_attempts"] == (5 if gp else 2) and config.env.split == "held_out"
    # ~2,048 turns per update: a GP episode takes at most max_attempts turns (the initial policy
    # rarely solves a hand early); a V-IRL episode about one turn per rail point.
    turns_per_episode = 5 if gp else _mean_rail_points(config.env.task)
    turns = rollout.episodes_per_iteration * turns_per_episode
    if gp:  # at most 5% over, and at least the paper's count while most hands take every attempt
        assert PAPER_TURNS_PER_UPDATE <= turns <= 1.05 * PAPER_TURNS_PER_UPDATE
    else:
        assert abs(turns / PAPER_TURNS_PER_UPDATE - 1) < 0.05


def test_text_tasks_freeze_a_vlms_vision_unless_told():
    sft = {"algo": "sft"}
    assert TrainConfig(env={"task": "gp-l"}, learner=sft).learner.freeze_vision is True
    assert TrainConfig(env={"task": "virl-vl"}, learner=sft).learner.freeze_vision is False
    assert TrainConfig(env={"task": "gp-l"}, learner={**sft, "freeze_vision": False}).learner.freeze_vision is False
    assert load_config(CONFIG_DIR / "tiny.yaml", ["learner.freeze_vision=false"]).learner.freeze_vision is False
