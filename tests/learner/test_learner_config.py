"""LearnerConfig validation, the paper_ppo preset, and the LR schedule / DeepSpeed config derived from it."""

import pytest
import torch
from pydantic import ValidationError

from learner.config import LearnerConfig
from learner.optim import deepspeed_config, lr_multiplier, zero_stage
from learner.recipes import PAPER_PPO


def test_defaults_follow_the_paper_and_reject_unknown_keys():
    config = LearnerConfig()
    assert (config.kl_mode, config.algo, config.dtype) == ("none", "grpo", "auto")
    with pytest.raises(ValidationError, match="extra"):
        LearnerConfig(learning_rate=1e-5)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"lr_schedule": "cosine"}, "set total_steps"),
        ({"warmup_steps": 10, "total_steps": 5}, "lower warmup_steps"),
        ({"kl_mode": "k3_loss"}, "kl_coef"),
        ({"clip_low": 1.5}, "clip_low"),
        ({"algo": "dpo"}, "algo"),
        ({"lr": 1e-6, "lr_min": 1e-5}, "lower it"),
        ({"preset": "paper_grpo"}, "preset"),
    ],
)
def test_invalid_settings_name_the_field_and_the_fix(fields, message):
    with pytest.raises(ValidationError, match=message):
        LearnerConfig(**fields)


def test_lr_schedules():
    warm = lr_multiplier(LearnerConfig(warmup_steps=4))
    assert [warm(s) for s in (0, 3, 100)] == [0.25, 1.0, 1.0]
    linear = lr_multiplier(LearnerConfig(lr_schedule="linear", warmup_steps=2, total_steps=12))
    assert [linear(s) for s in (1, 2, 7, 12)] == pytest.approx([1.0, 1.0, 0.5, 0.0])
    cosine = lr_multiplier(LearnerConfig(lr_schedule="cosine", total_steps=10))
    assert [cosine(s) for s in (0, 5, 10)] == pytest.approx([1.0, 0.5, 0.0])


def test_schedules_decay_to_lr_min():
    """The paper's cosine: 1e-6 -> 1e-9 over T_max = 100 updates (factor 1e-3 at the end)."""
    cosine = lr_multiplier(LearnerConfig(lr=1e-6, lr_min=1e-9, lr_schedule="cosine", total_steps=100))
    assert [cosine(s) for s in (0, 50, 100, 150)] == pytest.approx([1.0, 0.5 + 0.5e-3, 1e-3, 1e-3])
    linear = lr_multiplier(LearnerConfig(lr=1e-3, lr_min=1e-4, lr_schedule="linear", total_steps=10))
    assert [linear(s) for s in (0, 5, 10)] == pytest.approx([1.0, 0.55, 0.1])


def test_paper_ppo_preset_fills_the_unset_fields_and_never_overrides_a_set_one():
    paper = LearnerConfig(preset="paper_ppo")
    assert {name: getattr(paper, name) for name in PAPER_PPO} == PAPER_PPO
    assert (paper.algo, paper.ppo_epochs * paper.mini_batches, paper.schedule_unit) == ("ppo", 8, "update")
    assert (paper.clip_low, paper.clip_high, paper.value_clip, paper.grad_clip) == (0.1, 0.1, 0.1, 0.01)
    assert paper.whiten_advantages and paper.pre_action_weight == 0.5 and paper.entropy_coef == 0
    assert (paper.lr, paper.lr_min, paper.total_steps, paper.adam_eps) == (1e-6, 1e-9, 100, 1e-7)
    mine = LearnerConfig(preset="paper_ppo", lr=3e-6, ppo_epochs=1, whiten_advantages=False, model="smollm2-135m")
    assert (mine.lr, mine.ppo_epochs, mine.whiten_advantages, mine.model) == (3e-6, 1, False, "smollm2-135m")
    assert (mine.mini_batches, mine.clip_low, mine.lr_min) == (2, 0.1, 1e-9)  # the rest still from the preset
    with pytest.raises(ValidationError, match="set total_steps"):  # an explicit None is kept, and rejected
        LearnerConfig(preset="paper_ppo", total_steps=None)
    assert LearnerConfig().model_dump() == LearnerConfig(preset="none").model_dump()
    assert LearnerConfig(**paper.model_dump()) == paper  # a dumped config reloads unchanged


def test_deepspeed_config_is_zero3_with_our_clip_and_dtype():
    ds = deepspeed_config(LearnerConfig(grad_clip=0.5, optimizer="deepspeed_adamw", lr=3e-4), dtype=torch.bfloat16)
    assert ds["zero_optimization"]["stage"] == 3 and ds["gradient_clipping"] == 0.5
    assert ds["bf16"]["enabled"] and ds["optimizer"]["params"]["lr"] == 3e-4
    assert not deepspeed_config(LearnerConfig(), dtype=torch.float32)["bf16"]["enabled"]


def test_one_rank_runs_stage_0_unless_told_and_several_run_zero3():
    assert (zero_stage(LearnerConfig(), 1), zero_stage(LearnerConfig(), 2)) == (0, 3)
    assert zero_stage(LearnerConfig(zero_stage=3), 1) == 3 and zero_stage(LearnerConfig(zero_stage=0), 4) == 0
    assert deepspeed_config(LearnerConfig(), dtype=torch.float32, stage=0)["zero_optimization"]["stage"] == 0
    with pytest.raises(ValidationError):
        LearnerConfig(zero_stage=2)
