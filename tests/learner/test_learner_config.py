"""LearnerConfig validation and the LR schedule / DeepSpeed config derived from it."""

import pytest
import torch
from pydantic import ValidationError

from learner.config import LearnerConfig
from learner.engine import deepspeed_config, lr_multiplier


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


def test_deepspeed_config_is_zero3_with_our_clip_and_dtype():
    ds = deepspeed_config(LearnerConfig(grad_clip=0.5, optimizer="deepspeed_adamw", lr=3e-4), dtype=torch.bfloat16)
    assert ds["zero_optimization"]["stage"] == 3 and ds["gradient_clipping"] == 0.5
    assert ds["bf16"]["enabled"] and ds["optimizer"]["params"]["lr"] == 3e-4
    assert not deepspeed_config(LearnerConfig(), dtype=torch.float32)["bf16"]["enabled"]
