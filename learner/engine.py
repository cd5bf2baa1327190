"""The DeepSpeed learner core: `LearnerEngine` turns lists of `Sample`s into optimizer steps.

Runs without Ray: any process that joined a torch.distributed group (`learner.distributed`) can
build one; every rank of the group builds one and calls the same methods with its own shard.

    from learner.distributed import init_distributed, free_port
    init_distributed(0, 1, master_port=free_port())
    engine = LearnerEngine(LearnerConfig(model="tiny", algo="sft", lr=1e-3))
    engine.sft_step([Sample(prompt_ids=[1, 2], output_ids=[3, 4])])   # -> {"loss/sft": ...}

One step (`sft_step` / `rl_step` mini-batch): sort and cut micro-batches (`learner.batch`), agree
with the other ranks on global counts and on the number of micro-batches (ZeRO-3 gathers are
collective, so every rank runs as many forward/backward passes; a rank with fewer re-runs one of
its samples at weight 0), forward -> loss (`learner.losses`, normalised by global counts) ->
backward per micro-batch, one `engine.step()` (clip, AdamW), then the LR schedule (`learner.optim`)
per optimizer step or per update. Several ranks run ZeRO-3; one rank runs stage 0 unless
`zero_stage` says otherwise (`learner.optim.zero_stage`): whole parameters, gradients and AdamW
states, no flat partition copies and no per-module gathers in every forward and weight sync.
bf16 on CUDA, fp32 on CPU. Dropout stays off (eval mode) and the logits are divided by each
sample's behaviour temperature, so the learner's log-probs are the
server's (`rl/logprob_diff_*` in rl_step's metrics measure it).

Phases: an engine starts in "sft"; `begin_rl()` starts "rl" with a fresh optimizer, the LR schedule
from its step 0 and (KL on) the current policy as the frozen reference, as the paper starts RL from
the SFT checkpoint. The phase and the reference are saved in checkpoints (`learner.checkpoint`).
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
from transformers import PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer

from learner.batch import Batch, Sample, collate, micro_batches, pre_action_token_count
from learner.config import LearnerConfig
from learner.distributed import device_for_rank
from learner.freezing import freeze_vision, parameter_count
from learner.losses import GlobalCounts, PolicyOutputs, rl_objective, sft_loss, token_entropy, token_logprobs
from learner.models import LoadedPolicy, load_policy
from learner.optim import deepspeed_config, new_schedule, reset_optimizer_state, zero_stage
from learner.partitions import load_partitions, local_partitions
from learner.prompt_encoding import ImageInputs, batch_image_inputs, image_inputs_for_ids
from learner.rl_stats import (
    batch_explained_variance,
    gradient_probes,
    logprob_agreement,
    right_align,
    summarise_updates,
    whiten_advantages,
)
from learner.value_head import HeadInputs, PolicyWithValue, ValueHead

Metrics = dict[str, torch.Tensor]
Phase = Literal["sft", "rl"]


def training_dtype(config: LearnerConfig) -> torch.dtype:
    """bfloat16 on CUDA and float32 on CPU for dtype='auto', else the configured one."""
    if config.dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[config.dtype]


@dataclass
class StepPlan:
    """How this rank runs one step: its micro-batches and the counts agreed by all ranks."""

    micro: list[list[int]]
    n_micro: int
    counts: GlobalCounts
    n_tokens: int  # prompt + output tokens on all ranks

    def passes(self) -> Iterator[tuple[list[int], float]]:
        """(sample indices, loss weight) for each of the n_micro passes; extras have weight 0."""
        for i in range(self.n_micro):
            yield (self.micro[i], 1.0) if i < len(self.micro) else (self.micro[0][:1], 0.0)


@dataclass
class Forward:
    """What one forward pass produced for a micro-batch."""

    logprobs: torch.Tensor  # (B, L)
    entropy: torch.Tensor | None  # (B, L)
    values: torch.Tensor | None  # (B,)
    heads: HeadInputs | None  # the last hidden state as each head read it, when values were computed


class LearnerEngine:
    """One DeepSpeed rank: policy (+ value head for PPO), AdamW, and optionally a frozen reference.

    `policy` (default: `load_policy(config.model)`) is consumed: its model's parameters become
    this engine's (ZeRO-3 shards with several ranks). `step` (optimizer steps, all phases), `phase`, `schedule` (the LR
    schedule's state) and the reference's weights are restored by `learner.checkpoint.load_checkpoint`.
    The policy version belongs to the trainer (cluster/trainer.py), not to the engine.
    """

    def __init__(self, config: LearnerConfig, *, policy: LoadedPolicy | None = None) -> None:
        if not dist.is_initialized():
            raise RuntimeError(
                "LearnerEngine needs torch.distributed: call learner.distributed."
                "init_distributed(rank, world_size, master_port=...) first"
            )
        self.config = config
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.device = device_for_rank()
        self.dtype = training_dtype(config)
        self.zero_stage = zero_stage(config, self.world_size)
        self.clips_gradients = self.zero_stage == 0 and self.dtype == torch.float32
        """True when `_train` clips: DeepSpeed's fp32 stage-0 step clips without recording the norm."""
        loaded = policy or self._load_partitioned()
        self.tokenizer, self.processor, self.is_vlm = loaded.tokenizer, loaded.processor, loaded.is_vlm
        self.pad_id = loaded.pad_token_id
        self.shares_prompts = config.shares_prompts(is_vlm=self.is_vlm)
        """True when a micro-batch runs each distinct prompt once (`learner.shared_prompts`)."""
        head = (
            ValueHead(PolicyWithValue.hidden_size(loaded.model), config.value_head_hidden, seed=config.seed)
            if config.needs_value_head
            else None
        )
        self.n_parameters = sum(parameter_count(param) for param in loaded.model.parameters())
        """The policy's parameter count, whole (value head excluded): N of cluster/compute.py."""
        self.n_frozen = freeze_vision(loaded.model) if config.freeze_vision else 0
        """Parameters `config.freeze_vision` froze (no gradients, no optimizer state)."""
        self.module = PolicyWithValue(loaded.model, head)
        self.engine = self._initialize(self.module, train=True)
        self.reference = None
        if config.needs_reference:
            reference = self._load_partitioned().model.requires_grad_(False)
            self.reference = self._initialize(PolicyWithValue(reference, None), train=False)
        self.step = 0
        self.phase: Phase = "sft"
        self.schedule = new_schedule(self.engine.basic_optimizer, config)

    def _load_partitioned(self) -> LoadedPolicy:
        """`config.model` in the training dtype, each rank holding only its ZeRO-3 partition.

        With several ranks, a model read from a directory (hub ids, saved runs, `smollm2-135m`) is
        built under `deepspeed.zero.Init` and filled one module at a time
        (`load_policy(zero3_config=...)`): 8 ranks of an 11B model hold 1/8 of it each instead of a
        whole fp32 copy per rank. One rank holds the whole model anyway and loads it directly (a
        weights file in the training dtype is then mapped, not copied). The small in-memory
        built-ins are built whole and partitioned by `deepspeed.initialize`.
        """
        zero3 = self._ds_config() if self.zero_stage == 3 and self.world_size > 1 else None
        return load_policy(self.config.model, dtype=self.dtype, device=str(self.device), zero3_config=zero3)

    def _ds_config(self) -> dict:
        ds = deepspeed_config(self.config, dtype=self.dtype, stage=self.zero_stage)
        if self.clips_gradients:
            ds["gradient_clipping"] = 0.0
        return ds

    def _initialize(self, module: PolicyWithValue, *, train: bool):
        import deepspeed  # heavy, and DS_ACCELERATOR must be set first (init_distributed)

        module.eval()  # no dropout: log-probs must match the behaviour policy's
        if train and self.config.gradient_checkpointing:
            enable_gradient_checkpointing(module.policy)
        ds_config = self._ds_config()
        if not train:
            ds_config.pop("optimizer", None)
            return deepspeed.initialize(model=module, config=ds_config)[0]
        optimizer = None
        if self.config.optimizer == "torch_adamw":
            optimizer = torch.optim.AdamW(
                module.parameters(),
                lr=self.config.lr,
                betas=self.config.adam_betas,
                eps=self.config.adam_eps,
                weight_decay=self.config.weight_decay,
            )
        engine, *_ = deepspeed.initialize(
            model=module,
            optimizer=optimizer,
            config=ds_config,
            model_parameters=[p for p in module.parameters() if p.requires_grad],
        )
        if self.zero_stage == 0 and self.world_size == 1:
            engine.enable_backward_allreduce = False  # DeepSpeed would flatten every gradient to average over 1 rank
        return engine

    def _advance_schedule(self, unit: Literal["optimizer_step", "update"], *, sft: bool) -> None:
        """One LR-schedule step if `unit` is what the schedule counts (config.schedule_unit).

        The schedule is the run's own update rule's: SFT steps of an RL learner (algo ppo/grpo: the
        warm-up before RL) run at the constant peak lr and leave the RL schedule to `begin_rl`.
        """
        if sft and self.config.algo != "sft":
            return
        if self.config.schedule_unit == unit:
            self.schedule.step()

    # --- phases ----------------------------------------------------------------------------
    def begin_rl(self) -> bool:
        """Start the RL phase: fresh optimizer, LR schedule from step 0, (KL on) reference = policy.

        The paper starts RL from the SFT checkpoint with a fresh optimizer; with KL on, the frozen
        reference becomes the current (post-SFT) policy. Returns True when it did so, False
        (changing nothing) when already in the RL phase, e.g. after loading a checkpoint saved past
        the boundary, which restored the phase and the reference. Every rank calls it; it needs no
        communication (each rank copies its own parameters or ZeRO-3 partitions).
        """
        if self.phase == "rl":
            return False
        reset_optimizer_state(self.engine.basic_optimizer)
        self.schedule = new_schedule(self.engine.basic_optimizer, self.config)
        if self.reference is not None:
            load_partitions(self.reference.module.policy, local_partitions(self.engine.module.policy))
        self.phase = "rl"
        return True

    # --- batches ---------------------------------------------------------------------------
    def _plan(self, samples: list[Sample]) -> StepPlan:
        if not samples:
            raise ValueError(
                f"rank {self.rank} got no samples: give every rank at least one "
                f"(LearnerGroup needs len(samples) >= n_ranks * mini_batches)"
            )
        micro = micro_batches(samples, max_tokens=self.config.micro_batch_tokens, share=self.shares_prompts)
        sums = torch.tensor(
            [sum(len(s.output_ids) for s in samples), len(samples), sum(len(s) for s in samples)], device=self.device
        )
        dist.all_reduce(sums)  # SUM: global denominators of the losses (losses.GlobalCounts)
        most = torch.tensor([len(micro)], device=self.device)
        dist.all_reduce(most, op=dist.ReduceOp.MAX)  # every rank runs as many passes (ZeRO-3)
        out_tokens, n_seqs, n_tokens = sums.tolist()
        return StepPlan(micro, int(most.item()), GlobalCounts(out_tokens, n_seqs), n_tokens)

    def _batch(self, samples: list[Sample]) -> tuple[Batch, ImageInputs | None]:
        counts = None
        if self.config.pre_action_weight != 1.0:
            counts = [pre_action_token_count(self.tokenizer, s.output_ids, self.config.action_keys) for s in samples]
        batch = collate(
            samples,
            pad_id=self.pad_id,
            pre_action_counts=counts,
            pre_action_weight=self.config.pre_action_weight,
            share=self.shares_prompts,
        ).to(self.device)
        n_images = sum(len(s.images or []) for s in samples)
        if not n_images:
            return batch, None
        if not self.is_vlm:
            raise ValueError(
                f"samples carry {n_images} images but {self.config.model!r} is "
                f"text-only: drop the images or train a VLM"
            )
        # each sample's images as one prompt's (Mllama tiles, pads and masks per sample), as the server had them
        rows = [
            image_inputs_for_ids(self.processor, s.prompt_ids, s.images, dtype=self.dtype) if s.images else None
            for s in samples
        ]
        images = batch_image_inputs(rows, lengths=[len(s) for s in samples], width=batch.input_ids.shape[1])
        return batch, {name: value.to(self.device) for name, value in images.items()}

    def _forward(
        self, engine, batch: Batch, images: ImageInputs | None, *, values: bool = False, entropy: bool = False
    ) -> Forward:
        out = engine(batch, values=values, image_inputs=images)
        # column j predicts action token j, scored at the temperature it was sampled at (as the server does)
        logits = out.logits.float() / batch.temperatures[:, None, None]  # (B, L, V)
        return Forward(
            token_logprobs(logits, batch.action_ids),
            token_entropy(logits) if entropy else None,
            out.values,
            out.heads,
        )

    # --- steps -----------------------------------------------------------------------------
    def _train(
        self, samples: list[Sample], loss_fn: Callable[..., tuple[torch.Tensor, Metrics]], *, sft: bool = False
    ) -> dict[str, float]:
        """One optimizer step over `samples`: accumulate every micro-batch, then step (`sft`: an SFT step)."""
        start = time.perf_counter()
        plan = self._plan(samples)
        totals: Metrics = {}
        for index, (rows, weight) in enumerate(plan.passes()):
            self.engine.set_gradient_accumulation_boundary(index == plan.n_micro - 1)
            loss, metrics = loss_fn(rows, [samples[i] for i in rows], plan.counts)
            # DeepSpeed averages gradients over ranks; losses are already / global counts, so
            # scale by world size to get the gradient of the whole batch's loss.
            self.engine.backward(loss * weight * self.world_size, scale_wrt_gas=False)
            for name, value in metrics.items():
                totals[name] = totals.get(name, 0.0) + value.detach().float() * weight
        grad_norm = self._clip_gradients()
        self.engine.step()
        if grad_norm is None:
            grad_norm = float(self.engine.get_global_grad_norm() or 0.0)
        self.step += 1
        self._advance_schedule("optimizer_step", sft=sft)
        names = sorted(totals)
        stacked = torch.stack([totals[n] for n in names]).to(self.device)
        dist.all_reduce(stacked)  # SUM of per-rank shares = the whole batch's values
        result = dict(zip(names, stacked.tolist(), strict=True))
        elapsed = time.perf_counter() - start
        result.update(
            {
                "perf/tokens_per_s": plan.n_tokens / elapsed,
                "perf/step_s": elapsed,
                "mem/peak_rank_gb": self._peak_memory_gb(),
                "optim/lr": self.engine.get_lr()[0],
                "learner/step": float(self.step),
                "optim/grad_norm": grad_norm,
            }
        )
        return result

    def _clip_gradients(self) -> float | None:
        """Clip the whole gradients to `grad_clip` and return their norm when this engine clips, else None.

        Stage 0 gradients are whole and, after DeepSpeed's all-reduce, the same on every rank.
        """
        if not self.clips_gradients:
            return None
        return float(torch.nn.utils.clip_grad_norm_(self.engine.module.parameters(), self.config.grad_clip))

    def _peak_memory_gb(self) -> float:
        """Largest peak memory of any rank: GPU allocations on CUDA, process RSS on CPU."""
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        peak_t = torch.tensor([float(peak)], device=self.device)
        dist.all_reduce(peak_t, op=dist.ReduceOp.MAX)  # the worst rank bounds the placement
        return peak_t.item() / 1e9

    def sft_step(self, samples: list[Sample]) -> dict[str, float]:
        """One optimizer step of token cross-entropy on the output ids; returns metrics."""

        def loss_fn(_rows, chunk, counts):
            batch, images = self._batch(chunk)
            loss = sft_loss(self._forward(self.engine, batch, images).logprobs, batch.action_mask, counts)
            return loss, {"loss/sft": loss}

        metrics = self._train(samples, loss_fn, sft=True)
        self._advance_schedule("update", sft=True)
        return metrics

    def rl_step(self, samples: list[Sample]) -> dict[str, float]:
        """PPO / GRPO update on `samples`: ppo_epochs x mini_batches optimizer steps.

        pi_old is the learner before this call: with one update it is the current forward
        (detached); with several, a no-grad pass first records it (and the reference's log-probs
        when KL is on). Advantages are whitened over the whole batch first when
        `whiten_advantages`. Returns the metrics of the updates (`summarise_updates`), plus the
        batch's `rl/logprob_diff_*` (pi_old against the behaviour log-probs) and, for PPO,
        `rl/explained_variance`.
        """
        cfg = self.config
        self._check_rl_samples(samples)
        if cfg.whiten_advantages:
            samples = whiten_advantages(samples, device=self.device)
        single_update = cfg.ppo_epochs * cfg.mini_batches == 1
        old = None if single_update else self._logprob_pass(self.engine, samples)
        pre_update = old if old is not None else [None] * len(samples)  # filled by the only update's forward
        ref = self._logprob_pass(self.reference, samples) if self.reference is not None else None
        history: list[dict[str, float]] = []
        for _ in range(cfg.ppo_epochs):
            for part in range(cfg.mini_batches):
                indices = list(range(part, len(samples), cfg.mini_batches))
                loss_fn = self._rl_loss_fn(indices, old, ref, record=pre_update if single_update else None)
                history.append(self._rl_update([samples[i] for i in indices], loss_fn))
        metrics = summarise_updates(history)
        metrics.update(logprob_agreement(samples, pre_update, device=self.device))
        if cfg.needs_value_head:
            metrics["rl/explained_variance"] = batch_explained_variance(samples, device=self.device)
        self._advance_schedule("update", sft=False)
        return metrics

    def _check_rl_samples(self, samples: list[Sample]) -> None:
        cfg = self.config
        if cfg.is_cap is not None and any(s.logprobs is None for s in samples):
            raise ValueError(
                "rl_step with is_cap set needs every Sample's behaviour logprobs: "
                "pass the server's logprobs, or set is_cap=None"
            )
        if cfg.needs_value_head and any(s.return_ is None or s.value is None for s in samples):
            raise ValueError(
                "algo='ppo' needs Sample.return_ and Sample.value (GAE targets and "
                "old values): compute them with values() and gae_over_turns"
            )
        if len(samples) < cfg.mini_batches:
            raise ValueError(
                f"rank {self.rank} got {len(samples)} samples for mini_batches="
                f"{cfg.mini_batches}: send more samples or lower mini_batches"
            )

    def _rl_update(self, samples: list[Sample], loss_fn) -> dict[str, float]:
        """One optimizer step; the summed squared gradient norms become norms once summed over ranks."""
        metrics = self._train(samples, loss_fn)
        for term in ("policy", "value"):
            if f"rl/grad_sq_{term}" in metrics:
                metrics[f"rl/grad_norm_{term}"] = math.sqrt(metrics.pop(f"rl/grad_sq_{term}"))
        return metrics

    def _rl_loss_fn(
        self,
        indices: list[int],
        old: list[torch.Tensor] | None,
        ref: list[torch.Tensor] | None,
        *,
        record: list[torch.Tensor | None] | None,
    ):
        """The loss of a micro-batch of `indices`; `record` (one update only) receives its pi_old."""
        cfg = self.config

        def loss_fn(rows, chunk, counts):
            batch, images = self._batch(chunk)
            fwd = self._forward(self.engine, batch, images, values=cfg.needs_value_head, entropy=cfg.entropy_coef > 0)
            width = batch.action_ids.shape[1]
            picked = [indices[r] for r in rows]
            if record is not None:
                for r, (i, sample) in enumerate(zip(picked, chunk, strict=True)):
                    record[i] = fwd.logprobs[r, width - len(sample.output_ids) :].detach().float().cpu()  # device sync
            out = PolicyOutputs(
                logprobs=fwd.logprobs,
                entropy=fwd.entropy,
                values=fwd.values,
                old_logprobs=(
                    fwd.logprobs.detach()
                    if old is None
                    else right_align([old[i] for i in picked], width).to(self.device)
                ),
                ref_logprobs=(None if ref is None else right_align([ref[i] for i in picked], width).to(self.device)),
            )
            terms = rl_objective(out, batch, counts, config=cfg)
            metrics = {
                "loss/policy": terms.policy,
                "loss/value": terms.value,
                "loss/entropy": terms.entropy,
                "loss/kl": terms.kl,
                "loss/total": terms.total,
                "rl/clip_fraction": terms.clip_fraction,
                "rl/is_weight_mean": terms.is_weight,
                "rl/approx_kl": terms.approx_kl,
            }
            if fwd.heads is not None:  # PPO: filled by the backward (_train scales the loss by world_size)
                probes = gradient_probes(fwd.heads, loss_scale=self.world_size)
                metrics["rl/grad_sq_policy"], metrics["rl/grad_sq_value"] = probes
            return terms.total, metrics

        return loss_fn

    @torch.no_grad()
    def _logprob_pass(self, engine, samples: list[Sample]) -> list[torch.Tensor]:
        """Per-sample (L_i,) log-probs of the output ids under `engine`, on the CPU."""
        plan = self._plan(samples)
        result: list[torch.Tensor | None] = [None] * len(samples)
        for rows, weight in plan.passes():
            batch, images = self._batch([samples[i] for i in rows])
            logprobs = self._forward(engine, batch, images).logprobs.float().cpu()  # (B, L)
            for r, i in enumerate(rows):
                if weight:
                    result[i] = logprobs[r, logprobs.shape[1] - len(samples[i].output_ids) :]
        return result

    @torch.no_grad()
    def values(self, samples: list[Sample]) -> list[float]:
        """The value head's estimate for each sample's prompt, in input order (PPO only)."""
        if self.module.value_head is None:
            raise ValueError(
                f"values() needs the value head of algo='ppo', got algo={self.config.algo!r}: set algo='ppo'"
            )
        plan = self._plan(samples)
        result = [0.0] * len(samples)
        for rows, weight in plan.passes():
            batch, images = self._batch([samples[i] for i in rows])
            out = self.engine(batch, values=True, logits=False, image_inputs=images)
            for r, i in enumerate(rows):
                if weight:
                    result[i] = float(out.values[r])
        return result


def enable_gradient_checkpointing(model: PreTrainedModel) -> None:
    """Recompute each decoder layer in backward, without leaving eval mode (dropout stays off).

    HF checkpoints a layer only while `layer.training`; setting that flag on the layer object
    alone (not recursively) leaves its attention and MLP children in eval mode.
    """
    model.gradient_checkpointing_enable({"use_reentrant": False})
    for layer in model.modules():
        if isinstance(layer, GradientCheckpointingLayer):
            layer.training = True
