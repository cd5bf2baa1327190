"""A study file: the plan, and the config trees of its runs -> one validated `TrainConfig` per run.

    study:  {seeds: [0, 1, 2], eval_points: 4, init_per_seed: false}
    base:   {env: ..., rollout: ..., eval: ..., learner: ..., serving: ..., run: ...}   # shared by all runs
    init:   {run: {sft_steps: 25}, learner: {algo: sft}}        # the SFT warm-up, merged over base
    sft:    {run: {sft_steps: 100}, learner: {algo: sft}}       # the SFT arm
    rl:     {run: {iterations: 20}, learner: {algo: ppo}}       # the RL arm

`init`, `sft` and `rl` are partial trees merged over `base` (a mapping merges key by key, any other
value replaces), each validated as a `TrainConfig`. Overrides address the file's tree:
`study.seeds=[0,1]`, `base.learner.lr=1e-5`, `rl.run.iterations=8`. The study itself sets what
ties the runs together (`Study.init_config`, `Study.arm_config`): each run's seed, the arms'
starting weights (the init's exported policy), their prior tokens (D_init) and their K evaluation
points (every `steps / K` SFT steps or RL iterations).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cluster.config import ConfigError, TrainConfig, apply_override, validate_config

Arm = Literal["sft", "rl"]
ARMS: tuple[Arm, ...] = ("sft", "rl")
INIT_SEED_OFFSET = 1_000_000
"""The init's run.seed is this plus the study seed (shared init: plus the first seed), so its
demonstrations and sampling differ from the SFT arm's, whose run.seed is the study seed itself."""


class StudyPlan(BaseModel):
    """What the study repeats and measures (the `study:` section)."""

    model_config = ConfigDict(extra="forbid")

    seeds: list[int] = Field([0], min_length=1, description="Seeds: each repeats both arms (data order, sampling).")
    eval_points: int = Field(4, gt=0, description="K: evaluations along each arm (every steps/K), besides the init.")
    init_per_seed: bool = Field(False, description="Also repeat the SFT init per seed (default: one shared init).")
    init: str | None = Field(
        None, description="Reuse this HF policy directory as the init instead of training one (--init)."
    )
    init_tokens: int = Field(
        0, ge=0, description="D_init of a reused --init: the tokens it was trained on (0 if unknown)."
    )
    parallel_runs: int = Field(
        1, gt=0, description="Arms run at once (Ray places them as resources allow); 1: one after another."
    )

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise ValueError(f"study.seeds={seeds} must be distinct and >= 0, e.g. [0, 1, 2]")
        return seeds


class _StudyKeys(BaseModel):
    """The study file's tree, for checking override keys (`apply_override(root=...)`)."""

    study: StudyPlan
    base: TrainConfig
    init: TrainConfig
    sft: TrainConfig
    rl: TrainConfig


@dataclass(frozen=True)
class Study:
    """A loaded study: the plan and the resolved config of the init and of each arm (seeds not yet set)."""

    plan: StudyPlan
    init: TrainConfig
    sft: TrainConfig
    rl: TrainConfig
    raw: dict[str, Any]
    """The study file's tree after overrides (written to the study directory as study.yaml)."""

    @property
    def task(self) -> str:
        """The task every run of the study trains and evaluates on."""
        return self.init.env.task

    def init_seed(self, seed: int) -> int:
        """run.seed of the init that `seed`'s arms start from."""
        return INIT_SEED_OFFSET + (seed if self.plan.init_per_seed else self.plan.seeds[0])

    def init_config(self, seed: int) -> TrainConfig:
        """The init run for `seed`: the SFT warm-up, evaluated at its end (or a reused --init, evaluated)."""
        updates: dict[str, Any] = {
            "run.seed": self.init_seed(seed),
            "eval.after_sft": True,
            **_app(self.init, "init", seed),
        }
        if self.plan.init is not None:  # no training: the run evaluates and exports the given weights
            updates |= {"learner.model": self.plan.init, "serving.model": self.plan.init, "run.sft_steps": 0}
        return _with(self.init, updates)

    def arm_config(self, arm: Arm, seed: int, *, init_policy: Path, prior_train_tokens: int) -> TrainConfig:
        """An arm's run: from the init's weights (fresh optimizer), seed `seed`, K evaluation points."""
        config = self.sft if arm == "sft" else self.rl
        k = self.plan.eval_points
        updates: dict[str, Any] = {
            "learner.model": str(init_policy),
            "serving.model": str(init_policy),
            "run.seed": seed,
            "run.prior_train_tokens": prior_train_tokens,
            "eval.after_sft": False,
            **_app(config, arm, seed),
        }
        if arm == "sft":
            updates |= {"eval.every_n_sft_steps": config.run.sft_steps // k, "eval.every_n_iterations": 0}
        else:
            updates |= {"eval.every_n_iterations": config.run.iterations // k, "eval.every_n_sft_steps": 0}
        return _with(config, updates)


def load_study(path: str | Path, overrides: list[str] = ()) -> Study:
    """Read a study file, apply overrides, validate every run's config; ConfigError names what is wrong."""
    path = Path(path)
    if not path.is_file():
        known = ", ".join(sorted(p.name for p in Path(__file__).parent.parent.glob("configs/study_*.yaml")))
        raise ConfigError(f"study file {str(path)!r} does not exist; the shipped ones: {known}")
    raw = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(raw) - set(_StudyKeys.model_fields)) if isinstance(raw, dict) else None
    if unknown is None or unknown:
        raise ConfigError(
            f"{path}: a study file is a mapping of the sections {', '.join(_StudyKeys.model_fields)}"
            + (f"; unknown sections {unknown}" if unknown else "")
        )
    for override in overrides:
        apply_override(raw, override, root=_StudyKeys)
    try:
        plan = StudyPlan.model_validate(raw.get("study") or {})
    except ValidationError as err:
        raise ConfigError(f"invalid {path} [study]: {err}") from None
    base = raw.get("base") or {}
    runs = {
        name: validate_config(_merged(base, raw.get(name) or {}), source=f"{path} [{name}]")
        for name in ("init",) + ARMS
    }
    _check_runs(plan, **runs, source=str(path))
    return Study(plan=plan, raw=raw, **runs)


def _check_runs(plan: StudyPlan, *, init: TrainConfig, sft: TrainConfig, rl: TrainConfig, source: str) -> None:
    """The runs form one study: one task and model, SFT init and arm, an RL arm, steps divisible by K."""
    k = plan.eval_points
    problems = []
    if len({c.env.task for c in (init, sft, rl)}) != 1 or len({c.env.split for c in (init, sft, rl)}) != 1:
        problems.append("init, sft and rl must share env.task and env.split: set them in base only")
    if len({c.learner.model for c in (init, sft, rl)}) != 1:
        problems.append("init, sft and rl must start from one learner.model: set it in base only")
    if init.learner.algo != "sft" or (init.run.sft_steps == 0 and plan.init is None):
        problems.append("init needs learner.algo=sft and run.sft_steps > 0 (or study.init / --init DIR)")
    if sft.learner.algo != "sft" or sft.run.sft_steps < k or sft.run.sft_steps % k:
        problems.append(f"sft needs learner.algo=sft and run.sft_steps a positive multiple of study.eval_points={k}")
    if rl.learner.algo == "sft" or rl.run.sft_steps or rl.run.iterations < k or rl.run.iterations % k:
        problems.append(
            f"rl needs learner.algo=ppo|grpo, run.sft_steps=0 and run.iterations a positive multiple of "
            f"study.eval_points={k}"
        )
    if problems:
        raise ConfigError(f"invalid study {source}:\n" + "\n".join(f"  {p}" for p in problems))


def _merged(base: dict[str, Any], section: dict[str, Any]) -> dict[str, Any]:
    """`section` merged over `base`: mappings key by key, any other value replaces."""
    out = copy.deepcopy(base)
    for key, value in section.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _app(config: TrainConfig, kind: str, seed: int) -> dict[str, str]:
    """A Serve app name and route of the run's own (runs at once must not share one)."""
    name = f"{config.serving.app_name}-{kind}-seed{seed}"
    return {"serving.app_name": name, "serving.route_prefix": f"/{name}"}


def _with(config: TrainConfig, updates: dict[str, Any]) -> TrainConfig:
    """A copy of `config` with dotted `updates` applied, validated again."""
    raw = config.model_dump()  # python mode: a SecretStr api key stays a secret, not its mask
    for dotted, value in updates.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return validate_config(raw, source="the study's run config")
