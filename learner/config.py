"""`LearnerConfig`: every knob of the ZeRO-3 learner, typed and validated on construction.

One doc line per field, grouped by concern (preset, model, algorithm, optimisation, batching,
losses, checkpoints). The cluster's config tree composes this model as `learner`, so a YAML file or
a dotted override (`learner.lr=1e-6`) sets any field. `preset="paper_ppo"` fills every field the
user did not set from `learner.recipes` (the paper's PPO); a field set explicitly always wins.
Nothing here imports torch or DeepSpeed.

    .venv/bin/python -m learner.config        # prints the defaults as JSON
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from learner.recipes import with_preset


class LearnerConfig(BaseModel):
    """Typed learner settings; see each field's description. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    # --- preset ------------------------------------------------------------------------------
    preset: Literal["none", "paper_ppo"] = Field(
        "none", description="Named settings (learner.recipes) for every field not set explicitly; none = defaults."
    )

    # --- model -------------------------------------------------------------------------------
    model: str = Field(
        "tiny", description="Policy to train: a learner.models built-in name, a local HF directory, or a hub id."
    )
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Training dtype; auto = bfloat16 on CUDA, float32 on CPU."
    )
    value_head_hidden: int = Field(
        256, ge=1, description="Hidden width of the PPO value head (an MLP on the last prompt token)."
    )
    seed: int = Field(0, description="Seed of the value head's initialisation.")
    freeze_vision: bool = Field(
        False,
        description="Train only the language model of a VLM: its vision tower, projector and cross-attention "
        "layers get no gradients and no optimizer state (a text task never uses them). The driver sets it for "
        "text tasks unless given.",
    )

    # --- algorithm ---------------------------------------------------------------------------
    algo: Literal["sft", "ppo", "grpo"] = Field(
        "grpo", description="Update rule: supervised fine-tuning, PPO (with value head) or GRPO."
    )
    loss_aggregation: Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"] = Field(
        "token_mean",
        description="How per-token losses are averaged over the GLOBAL batch; "
        "seq_mean_token_sum_norm is Dr. GRPO's constant norm.",
    )
    norm_tokens: int = Field(
        256, ge=1, description="Dr. GRPO's constant per-sequence token normaliser (use the generation budget)."
    )
    ppo_epochs: int = Field(1, ge=1, description="Passes over each rl_step batch.")
    mini_batches: int = Field(1, ge=1, description="Optimizer steps per pass of an rl_step batch.")
    whiten_advantages: bool = Field(
        False,
        description="Whiten each rl_step batch's advantages over all ranks: (A - mean) / (std + 1e-5) (paper's PPO).",
    )

    # --- optimisation ------------------------------------------------------------------------
    lr: float = Field(1e-6, gt=0, description="Peak learning rate of AdamW.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay.")
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    adam_eps: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    optimizer: Literal["torch_adamw", "deepspeed_adamw"] = Field(
        "torch_adamw",
        description="torch's AdamW (no build step) or DeepSpeed's (Fused/CPU Adam, compiled on first use).",
    )
    lr_schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="Learning-rate decay after warm-up (to lr_min at total_steps)."
    )
    lr_min: float = Field(0.0, ge=0, description="Learning rate the linear and cosine schedules end at.")
    schedule_unit: Literal["optimizer_step", "update"] = Field(
        "optimizer_step",
        description="What advances the LR schedule: each optimizer step, or each update (one sft_step / "
        "rl_step call, however many optimizer steps it takes; the paper's cosine is stepped per update).",
    )
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up length, in schedule_unit steps.")
    total_steps: int | None = Field(
        None,
        ge=1,
        description="Schedule length in schedule_unit steps (the cosine's T_max); needed by linear and cosine.",
    )
    grad_clip: float = Field(1.0, gt=0, description="Global gradient-norm clip.")
    zero_stage: Literal[0, 3] | None = Field(
        None,
        description="DeepSpeed ZeRO stage: 3 partitions parameters, gradients and optimizer states over the "
        "ranks; 0 keeps them whole on every rank (data parallel). None = 3 with several ranks and 0 with one, "
        "where ZeRO-3 partitions nothing and only adds flat copies and per-module gathers.",
    )

    # --- batching ----------------------------------------------------------------------------
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in backward (less memory per micro-batch, ~30% more compute)."
    )
    torch_threads: int | None = Field(
        None,
        gt=0,
        description="torch intra-op threads per rank; None = the node's cores shared by the learner ranks on it "
        "(phases alternate: the learner owns the node while it learns).",
    )
    share_prompts: bool | None = Field(
        None,
        description="Run each distinct prompt of a micro-batch once and its outputs on its KV cache "
        "(learner/shared_prompts.py): a GRPO group's prompt once, not once per output. None = on for text "
        "models without gradient_checkpointing (whose layers drop a KV cache).",
    )
    micro_batch_tokens: int = Field(
        4096,
        ge=1,
        description="Padded tokens per micro-batch on a rank; a step accumulates gradients over micro-batches.",
    )

    # --- losses ------------------------------------------------------------------------------
    clip_low: float = Field(0.2, ge=0, description="PPO ratio clip below 1 (1 - clip_low).")
    clip_high: float = Field(0.2, ge=0, description="PPO ratio clip above 1 (1 + clip_high).")
    value_clip: float = Field(0.2, gt=0, description="PPO value-loss clip around the old value.")
    value_coef: float = Field(0.5, ge=0, description="Weight of the value loss (PPO).")
    entropy_coef: float = Field(0.0, ge=0, description="Weight of the entropy bonus; 0 = off.")
    kl_mode: Literal["none", "k1_reward", "k3_loss"] = Field(
        "none",
        description="KL to the frozen initial policy: off (paper), k1 as a per-token "
        "reward penalty, or k3 as a loss term.",
    )
    kl_coef: float = Field(0.0, ge=0, description="KL weight (beta) when kl_mode is not none.")
    is_cap: float | None = Field(
        2.0,
        gt=0,
        description="Truncation of the importance weight learner/behaviour log-probs (TIS); None disables it.",
    )
    pre_action_weight: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Weight of the policy-gradient term of reply tokens before the last action key; paper: 0.5.",
    )
    action_keys: list[str] = Field(
        ['"formula"', '"action"'],
        description="Strings that start the answer in a reply; the last occurrence of any ends the pre-action span.",
    )

    # --- checkpoints -------------------------------------------------------------------------
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept on disk (oldest pruned).")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """Fill the fields the user did not set from the named preset (explicit values win)."""
        return with_preset(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _check(self) -> LearnerConfig:
        if self.lr_schedule != "constant" and self.total_steps is None:
            raise ValueError(
                f"lr_schedule={self.lr_schedule!r} decays to lr_min at total_steps: set "
                f"total_steps, or use lr_schedule='constant'"
            )
        if self.lr_min > self.lr:
            raise ValueError(f"lr_min={self.lr_min} exceeds lr={self.lr}: the schedule decays to lr_min, lower it")
        if self.total_steps is not None and self.warmup_steps > self.total_steps:
            raise ValueError(
                f"warmup_steps={self.warmup_steps} exceeds total_steps={self.total_steps}: lower warmup_steps"
            )
        if self.kl_mode != "none" and self.kl_coef == 0:
            raise ValueError(f"kl_mode={self.kl_mode!r} with kl_coef=0 does nothing: set kl_coef > 0 or kl_mode='none'")
        if self.pre_action_weight != 1.0 and not self.action_keys:
            raise ValueError("pre_action_weight != 1 needs at least one entry in action_keys")
        if not 0 <= self.clip_low < 1:
            raise ValueError(f"clip_low={self.clip_low} must lie in [0, 1)")
        if self.share_prompts and self.gradient_checkpointing:
            raise ValueError(
                "share_prompts=True needs a KV cache, which gradient_checkpointing's layers drop: "
                "set one of them to false (or leave share_prompts unset)"
            )
        return self

    def shares_prompts(self, *, is_vlm: bool) -> bool:
        """Whether micro-batches run each distinct prompt once (`share_prompts` resolved for this model)."""
        if self.share_prompts and is_vlm:
            raise ValueError(
                f"share_prompts=True runs text models only; {self.model!r} is a vision-language model: "
                f"leave share_prompts unset"
            )
        return self.share_prompts is not False and not self.gradient_checkpointing and not is_vlm

    @property
    def needs_reference(self) -> bool:
        """True when the loss needs the frozen reference policy's log-probs."""
        return self.kl_mode != "none"

    @property
    def needs_value_head(self) -> bool:
        """True for PPO, whose critic is the value head."""
        return self.algo == "ppo"


if __name__ == "__main__":
    print(LearnerConfig().model_dump_json(indent=2))
