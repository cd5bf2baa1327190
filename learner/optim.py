"""The optimizer side of a learner rank: DeepSpeed's config, the LR schedule, a fresh-optimizer reset.

DeepSpeed runs ZeRO (stage 3, or 0 on one rank), clipping and AdamW; the LR schedule is ours (`new_schedule`), not
DeepSpeed's, because the paper steps its cosine once per PPO update (`schedule_unit="update"`)
while DeepSpeed steps a scheduler after every optimizer step. The engine advances it and saves its
state in the checkpoint's client state (`learner.checkpoint`).

    .venv/bin/python -m pytest tests/learner/test_learner_config.py
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from learner.config import LearnerConfig

BUCKET_ELEMENTS = 50_000_000


def zero_stage(config: LearnerConfig, world_size: int) -> int:
    """The ZeRO stage a group of `world_size` ranks runs: `config.zero_stage`, else 3 with several ranks, 0 with one."""
    if config.zero_stage is not None:
        return config.zero_stage
    return 3 if world_size > 1 else 0


def deepspeed_config(config: LearnerConfig, *, dtype: torch.dtype, stage: int = 3) -> dict:
    """The DeepSpeed JSON config: ZeRO `stage` (3 or 0), our clipping, bf16 when asked; no DS batching.

    gradient_accumulation_steps is 1 because the engine accumulates itself (a variable number of
    micro-batches per step, boundary set by hand); train_micro_batch_size_per_gpu is unused.
    """
    ds = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": config.grad_clip,
        # 5e7-element buckets (DeepSpeed's default reduce bucket is 5e8: 2 GB in fp32 on a CPU rank)
        "zero_optimization": {
            "stage": stage,
            "overlap_comm": torch.cuda.is_available(),
            "reduce_bucket_size": BUCKET_ELEMENTS,
            "stage3_prefetch_bucket_size": BUCKET_ELEMENTS,
        },
        "bf16": {"enabled": dtype == torch.bfloat16},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
    }
    if config.optimizer == "deepspeed_adamw":
        ds["optimizer"] = {
            "type": "AdamW",
            "params": {
                "lr": config.lr,
                "betas": list(config.adam_betas),
                "eps": config.adam_eps,
                "weight_decay": config.weight_decay,
            },
        }
    return ds


def lr_multiplier(config: LearnerConfig) -> Callable[[int], float]:
    """Schedule step -> factor on `lr`: linear warm-up, then constant, or linear / cosine decay to lr_min.

    A schedule step is an optimizer step or an update (`config.schedule_unit`); the decay ends at
    `total_steps` and stays at lr_min after it.
    """
    floor = config.lr_min / config.lr

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.lr_schedule == "constant":
            return 1.0
        span = max(1, config.total_steps - config.warmup_steps)
        progress = min(1.0, (step - config.warmup_steps) / span)
        if config.lr_schedule == "linear":
            return floor + (1.0 - floor) * (1.0 - progress)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def new_schedule(optimizer: torch.optim.Optimizer, config: LearnerConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """The LR schedule at its step 0 (sets the optimizer's lr to lr * factor(0)).

    The base lr is the optimizer's `initial_lr` once a first schedule recorded it, so a schedule
    built again later (a new phase) starts from the configured lr, not from a decayed one.
    """
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(config))


def reset_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Forget every moment and step count, as in a newly built optimizer (Adam creates them lazily)."""
    optimizer.state.clear()
    for group in optimizer.param_groups:
        group.pop("step", None)  # FusedAdam counts steps per param group
