"""The config tree: shipped YAMLs validate, dotted overrides apply, bad input names key and fix."""

from pathlib import Path

import pytest
import yaml

from cluster.config import CONFIG_DIR, ConfigError, TrainConfig, dump_config, load_config, validate_config
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
