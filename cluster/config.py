"""The run's one typed config tree: YAML file + dotted command-line overrides -> `TrainConfig`.

`TrainConfig` composes the owners' configs (`learner.config.LearnerConfig`,
`serving.config.ServingConfig`) with the driver's own: `EnvConfig` (which task), `RolloutConfig`
(the actor fleet and sampling), `EvalConfig` (held-out evaluation) and `RunConfig` (phases,
checkpoints, seed). Load one with

    cfg = load_config("cluster/configs/tiny.yaml", ["learner.lr=1e-6", "run.iterations=3"])

An override is `dotted.key=value`; the value is read as YAML (`3` is an int, `true` a bool,
`[a, b]` a list). Unknown keys and invalid values raise `ConfigError`, naming the key and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from learner.config import LearnerConfig
from serving.config import ServingConfig
from serving.schemas import Temperature

if TYPE_CHECKING:
    from envs.splits import Split

CONFIG_DIR = Path(__file__).parent / "configs"

Task = Literal["gp-l", "gp-vl", "virl-l", "virl-vl"]
Role = Literal["train", "eval"]


@dataclass(frozen=True)
class TaskSpec:
    """How a task name maps to a registered environment."""

    env_id: str
    modality: Literal["text", "image"]
    variants: tuple[str, ...]


TASKS: dict[str, TaskSpec] = {
    "gp-l": TaskSpec("sftrl/GeneralPoints-v0", "text", ("id", "rule_ood")),
    "gp-vl": TaskSpec("sftrl/GeneralPoints-v0", "image", ("id", "rule_ood", "visual_ood")),
    "virl-l": TaskSpec("sftrl/VIRL-v0", "text", ("id", "rule_ood")),
    "virl-vl": TaskSpec("sftrl/VIRL-v0", "image", ("id", "rule_ood", "visual_ood")),
}


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EnvConfig(_Strict):
    """Which environment the run trains and evaluates on, and which of its tasks each side sees."""

    task: Task = Field(
        "gp-l", description="gp-l / gp-vl: GeneralPoints as text / image; virl-l / virl-vl: V-IRL as text / image."
    )
    split: Literal["held_out", "none"] = Field(
        "held_out",
        description="held_out: RL rollouts and SFT data on split='train' hands/routes, evaluation on split='eval' "
        "ones (envs.splits); none: split='all' everywhere, the paper's no-split protocol.",
    )
    kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra keyword arguments for `gymnasium.make` (e.g. `target: 24`, `max_attempts: 5`).",
    )

    @field_validator("kwargs")
    @classmethod
    def _no_driver_owned_kwargs(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        owned = sorted({"variant", "modality", "split"} & kwargs.keys())
        if owned:
            raise ValueError(
                f"env.kwargs sets {owned}, which the driver chooses per task, role and evaluation "
                "variant; remove them (pick the modality with env.task, e.g. env.task=gp-vl, and the "
                "held-out protocol with env.split=held_out|none)"
            )
        return kwargs

    @property
    def spec(self) -> TaskSpec:
        """The task's environment id, modality and evaluation variants."""
        return TASKS[self.task]

    def split_for(self, role: Role) -> Split:
        """The envs' `split` for a role: "train" (RL rollouts, SFT data) or "eval"; "all" when env.split=none."""
        return role if self.split == "held_out" else "all"

    def make(self, variant: str, split: Split) -> Any:
        """A new environment of the task's `variant` dealing `split`'s tasks: env id, modality, plus `kwargs`."""
        import gymnasium

        import envs  # noqa: F401  (registers the sftrl/* ids)

        return gymnasium.make(
            self.spec.env_id, variant=variant, modality=self.spec.modality, split=split, **self.kwargs
        )


class SamplingConfig(_Strict):
    """How the policy samples a reply (sent with every generate request)."""

    temperature: Temperature = Field(
        1.0,
        description="Softmax temperature: 0 = greedy, else 1e-6 to 100 (the server's bounds); for rollouts, also "
        "what the learner divides by.",
    )
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass (evaluation only; rollouts need 1).")
    max_new_tokens: int = Field(256, gt=0, description="Upper bound on generated tokens per turn.")


class RolloutConfig(_Strict):
    """The rollout actor fleet: who plays how many episodes per RL iteration, sampled how."""

    n_actors: int = Field(2, gt=0, description="Rollout actors (Ray actors, CPU).")
    envs_per_actor: int = Field(4, gt=0, description="Environment instances each actor plays concurrently (asyncio).")
    episodes_per_iteration: int = Field(16, gt=0, description="Episodes collected per RL iteration, over all actors.")
    group_size: int = Field(
        1, gt=0, description="Episodes per training seed (a GRPO group); episodes_per_iteration must be a multiple."
    )
    sampling: SamplingConfig = Field(
        default_factory=SamplingConfig,
        description="The behaviour policy: sampling of training rollouts; its temperature is the one source of truth.",
    )
    num_cpus_per_actor: float = Field(
        0.25, ge=0.0, description="Ray CPUs reserved per actor (actors mostly wait on the policy server)."
    )
    resources_per_actor: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources per actor, e.g. {rollout: 1} to land on KubeRay's rollout group.",
    )
    probe_timeout_s: float = Field(
        60.0, gt=0.0, description="How long to wait for a crashed actor that Ray restarts before replacing it."
    )
    collect_timeout_s: float = Field(
        1800.0,
        gt=0.0,
        description="Longest a collection waits for an actor's share; a later share is dropped and counted, "
        "and its actor probed or replaced (an actor whose node died waits for a node that may never come).",
    )

    @model_validator(mode="after")
    def _whole_groups(self) -> RolloutConfig:
        if self.episodes_per_iteration % self.group_size:
            raise ValueError(
                f"rollout.episodes_per_iteration={self.episodes_per_iteration} is not a multiple "
                f"of rollout.group_size={self.group_size}; make it one"
            )
        return self

    @model_validator(mode="after")
    def _full_softmax(self) -> RolloutConfig:
        # The server's log-probs are of the full softmax at the temperature, not renormalised over
        # the nucleus; the learner recomputes them from the logits alone, so with top_p < 1 it
        # would score tokens under a distribution they were not sampled from.
        if self.sampling.top_p < 1:
            raise ValueError(
                f"rollout.sampling.top_p={self.sampling.top_p} < 1: the server's log-probs are not truncated "
                "to the nucleus, so the learner cannot recompute the distribution the rollouts were "
                "sampled from; set rollout.sampling.top_p=1 (eval.sampling may keep a top_p)"
            )
        return self


class WeightSyncConfig(_Strict):
    """How new weights reach the policy replicas after each learner update (cluster/weight_sync.py)."""

    transport: Literal["auto", "broadcast", "file"] = Field(
        "auto",
        description="broadcast: learner rank 0 streams buckets to every replica over a gloo group of its own "
        "(and writes the file for replicas that start later); file: rank 0 writes the file, every replica reads it; "
        "auto: file when every replica runs on learner rank 0's node (the page cache is their shared memory), "
        "else broadcast.",
    )
    bucket_mb: float = Field(
        64.0, gt=0.0, description="Most MiB one broadcast bucket holds (memory per side: about two buckets)."
    )
    timeout_s: float = Field(
        120.0, gt=0.0, description="Longest a broadcast waits for a member; then the sync falls back to the file."
    )


class EvalConfig(_Strict):
    """Held-out evaluation on every variant of the task (EVAL_SEEDS; env.split='eval' tasks unless split=none)."""

    every_n_iterations: int = Field(
        0, ge=0, description="Evaluate after every N RL iterations; 0 = only after the last one."
    )
    before_training: bool = Field(
        False, description="Also evaluate the starting weights before the first step (policy version 0)."
    )
    after_sft: bool = Field(
        False, description="Also evaluate right after the SFT phase (logged at RL iteration 0): SFT vs RL in one run."
    )
    every_n_sft_steps: int = Field(
        0,
        ge=0,
        description="Also push the weights and evaluate every N SFT steps within the SFT phase, and at its end "
        "(a checkpoint at each if run.checkpoint_every); 0 = never within the phase.",
    )
    episodes_per_variant: int = Field(
        32, gt=0, description="Episodes per variant (id, rule_ood, visual_ood for VL tasks)."
    )
    greedy: bool = Field(True, description="Greedy decoding (temperature 0); false samples with eval.sampling.")
    sampling: SamplingConfig = Field(
        default_factory=SamplingConfig,
        description="Sampling when greedy is false; its max_new_tokens applies in both cases.",
    )


class AdvantageConfig(_Strict):
    """How rewards become advantages (batch_builder.py)."""

    gamma: float = Field(0.9, ge=0.0, le=1.0, description="PPO: discount between the turns of an episode (GAE).")
    lam: float = Field(0.95, ge=0.0, le=1.0, description="PPO: GAE lambda.")
    scale_by_std: bool = Field(True, description="GRPO: divide by the group's reward std; false is Dr. GRPO.")


class RunConfig(_Strict):
    """Phases, checkpoints, seeds and learner placement of one run."""

    sft_steps: int = Field(0, ge=0, description="SFT optimizer steps on oracle demonstrations before any RL iteration.")
    sft_batch_size: int = Field(8, gt=0, description="Samples (policy turns) per SFT step.")
    iterations: int = Field(
        0, ge=0, description="RL iterations (collect -> batch -> learner step -> broadcast weights)."
    )
    checkpoint_every: int = Field(
        1, ge=0, description="Checkpoint after SFT, every N RL iterations and at the end; 0 = never (no --resume)."
    )
    seed: int = Field(
        0,
        ge=0,
        description="Seeds which hands/routes are played, the SFT data and the rollouts' sampling (sampling_seed).",
    )
    learner_ranks: int = Field(
        1, gt=0, description="DeepSpeed ZeRO-3 learner ranks (Ray actors in one placement group)."
    )
    learner_resources: dict[str, float] = Field(
        default_factory=lambda: {"CPU": 1.0},
        description="Ray resources per learner rank, e.g. {CPU: 4, GPU: 1} or a custom {learner: 1}.",
    )
    serve_http: bool = Field(
        False, description="Also serve the policy over HTTP (serving.host:serving.port) while training."
    )
    num_cpus: int | None = Field(
        None,
        gt=0,
        description="CPUs for a Ray cluster this run starts itself (None: the machine's); ignored under a job.",
    )
    prior_train_tokens: int = Field(
        0,
        ge=0,
        description="Tokens trained before this run's starting weights (a study's SFT init: D_init), counted in "
        "every row's compute/train_tokens and compute/gflops (cluster/compute.py).",
    )


class TrainConfig(_Strict):
    """Everything one `python -m cluster.train` run needs.

    The model is named once, as `learner.model`: `serving.model`, when not set, is the same (the
    server starts from the weights the learner trains); set both only to the same name.
    """

    run: RunConfig = Field(default_factory=RunConfig, description="Phases, checkpoints, seed, learner placement.")
    env: EnvConfig = Field(default_factory=EnvConfig, description="The task and its held-out protocol.")
    rollout: RolloutConfig = Field(default_factory=RolloutConfig, description="The rollout fleet and its sampling.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Held-out evaluation of every variant.")
    advantage: AdvantageConfig = Field(default_factory=AdvantageConfig, description="Rewards -> advantages.")
    learner: LearnerConfig = Field(default_factory=LearnerConfig, description="The ZeRO-3 learner (learner/config.py).")
    serving: ServingConfig = Field(default_factory=ServingConfig, description="The policy server (serving/config.py).")
    weight_sync: WeightSyncConfig = Field(
        default_factory=WeightSyncConfig, description="How new weights reach the replicas after each update."
    )

    @model_validator(mode="before")
    @classmethod
    def _serve_the_learners_model(cls, data: Any) -> Any:
        """Fill an unset serving.model with learner.model (a set one is checked by `_consistent`)."""
        if not isinstance(data, dict):
            return data
        learner, serving = data.get("learner", {}), data.get("serving", {})
        if isinstance(learner, LearnerConfig):
            model = learner.model
        elif isinstance(learner, dict):
            model = learner.get("model", LearnerConfig.model_fields["model"].default)
        else:
            return data  # not a section: field validation reports it
        if isinstance(serving, dict) and "model" not in serving:
            return {**data, "serving": {**serving, "model": model}}
        if isinstance(serving, ServingConfig) and "model" not in serving.model_fields_set:
            return {**data, "serving": serving.model_copy(update={"model": model})}
        return data

    @model_validator(mode="after")
    def _freeze_vision_on_text_tasks(self) -> TrainConfig:
        """Unless learner.freeze_vision is given, a text task trains only a VLM's language model."""
        if "freeze_vision" not in self.learner.model_fields_set:
            self.learner.freeze_vision = self.env.spec.modality == "text"
        return self

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.learner.model != self.serving.model:
            raise ValueError(
                f"learner.model={self.learner.model!r} but serving.model={self.serving.model!r}: "
                "the server must start from the learner's model; drop serving.model (it follows "
                "learner.model) or set both to the same name"
            )
        algo = self.learner.algo
        if algo == "sft" and self.run.iterations:
            raise ValueError(
                f"learner.algo='sft' runs no RL, but run.iterations={self.run.iterations}; "
                "set run.iterations=0 or learner.algo=ppo|grpo"
            )
        if algo == "grpo" and self.rollout.group_size < 2:
            raise ValueError(
                f"learner.algo='grpo' needs groups of episodes on one seed, but "
                f"rollout.group_size={self.rollout.group_size}; set rollout.group_size>=2"
            )
        return self


def load_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """Read a YAML config, apply `dotted.key=value` overrides, validate; ConfigError if invalid."""
    path = Path(path)
    if not path.is_file():
        known = ", ".join(sorted(p.name for p in CONFIG_DIR.glob("*.yaml")))
        raise ConfigError(f"config file {str(path)!r} does not exist; the shipped ones: {known}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a YAML mapping at the top level, got {type(raw).__name__}")
    for override in overrides:
        apply_override(raw, override)
    return validate_config(raw, source=str(path))


def validate_config(raw: dict[str, Any], *, source: str = "config") -> TrainConfig:
    """Validate a plain dict into a TrainConfig; ConfigError lists every bad field."""
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"]) or "(top level)"
            got = e.get("input")
            shown = f" (got {got!r})" if got is not None and not isinstance(got, dict) else ""
            lines.append(f"  {key}: {e['msg']}{shown}")
        raise ConfigError(f"invalid {source}:\n" + "\n".join(lines)) from None


def apply_override(raw: dict[str, Any], override: str, *, root: type[BaseModel] | None = None) -> None:
    """Set `dotted.key=value` in the raw config dict, checking the key against `root`'s tree (TrainConfig)."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r} is not key=value; write e.g. learner.lr=1e-6")
    parts = key.strip().split(".")
    _check_key(parts, root or TrainConfig)
    value = yaml.safe_load(text) if text.strip() else ""
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {part!r} holds a value, not a section")
        node = child
    node[parts[-1]] = value


def _check_key(parts: list[str], model: type[BaseModel]) -> None:
    """Raise ConfigError unless `parts` names a field of `model`'s tree (free below dict fields)."""
    for depth, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            where = ".".join(parts[:depth]) or "the top level"
            raise ConfigError(
                f"unknown config key {'.'.join(parts)!r}: {where} has no field {part!r}; "
                f"valid fields there: {', '.join(sorted(fields))}"
            )
        annotation = fields[part].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
            continue
        if depth + 1 < len(parts) and not _is_dict_field(annotation):
            raise ConfigError(f"unknown config key {'.'.join(parts)!r}: {part!r} is not a section")
        return
    raise ConfigError(f"config key {'.'.join(parts)!r} names a whole section; set one of its fields")


def _is_dict_field(annotation: Any) -> bool:
    return getattr(annotation, "__origin__", annotation) is dict


def dump_config(config: TrainConfig, path: Path) -> None:
    """Write the resolved config as YAML (what the run actually used)."""
    data = config.model_dump(mode="json", exclude={"serving": {"api_key"}})  # never write secrets
    path.write_text(yaml.safe_dump(data, sort_keys=False))
