"""Statistics of an rl_step batch over ALL ranks, and the PPO health metrics built from them.

Each rank holds a shard of the batch; every function here that takes a `device` all-reduces, so
every rank must call it (with its own shard) and every rank gets the whole batch's value:

- `whiten_advantages`: the paper's whitening with the whole batch's mean and std;
- `batch_explained_variance`: `rl/explained_variance` = 1 - Var(R - V_old) / Var(R), the critic's
  fit (1 = perfect, 0 = no better than the mean return, nan when every return is the same);
- `logprob_agreement`: `rl/logprob_diff_max` / `_mean`, the learner's log-probs (before the update)
  minus the behaviour policy's for the same tokens: how far the learner scores what the server
  sampled from what the server reported (temperature, dtype, kernels);
- `right_align`, `summarise_updates`: per-sample log-probs back into a batch's layout, and one
  metrics record for the several optimizer updates of an rl_step;
- `gradient_probes`: `rl/grad_norm_policy` / `rl/grad_norm_value`, the norms of the gradients the
  policy side (every term computed from the logits: surrogate, entropy, KL) and the value term
  send into the last hidden state, the backbone's output both heads share. They are read by
  tensor hooks during the real backward, at each head's input (`value_head.HeadInputs`), not by
  `torch.autograd.grad`: a second, partial backward re-runs ZeRO-3's backward hooks, which then
  release the heads' gathered parameters before the real backward needs them.

    .venv/bin/python -m pytest tests/learner/test_learner_engine.py -k whiten
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.distributed as dist

from learner.advantages import Moments, whitened
from learner.batch import Sample
from learner.value_head import HeadInputs


def global_moments(columns: list[list[float]], *, device: torch.device) -> list[Moments]:
    """Count, sum and sum of squares of each column over every rank's values; collective."""
    local = torch.tensor([m for column in columns for m in Moments.of(column)], dtype=torch.float64)
    local = local.to(device)
    dist.all_reduce(local)  # SUM over ranks: the whole batch's moments
    return [Moments(*row) for row in local.view(len(columns), 3).tolist()]


def whiten_advantages(samples: list[Sample], *, device: torch.device) -> list[Sample]:
    """Copies of `samples` with advantages whitened over the whole batch (all ranks); collective."""
    advantages = [s.advantage for s in samples]
    (moments,) = global_moments([advantages], device=device)
    return [replace(s, advantage=a) for s, a in zip(samples, whitened(advantages, moments), strict=True)]


def explained_variance(returns: Moments, residuals: Moments) -> float:
    """1 - Var(residuals) / Var(returns); nan when the returns do not vary."""
    if returns.variance == 0:
        return math.nan
    return 1.0 - residuals.variance / returns.variance


def batch_explained_variance(samples: list[Sample], *, device: torch.device) -> float:
    """1 - Var(R - V_old) / Var(R) over the whole batch (PPO samples: return_ and value set); collective."""
    returns = [s.return_ for s in samples]
    residuals = [s.return_ - s.value for s in samples]
    return explained_variance(*global_moments([returns, residuals], device=device))


def logprob_agreement(
    samples: list[Sample], learner_logprobs: list[torch.Tensor], *, device: torch.device
) -> dict[str, float]:
    """The learner's log-probs minus the behaviour's, over every token of every rank; collective.

    `rl/logprob_diff_max` is the max of |learner - behaviour| (a MAX all-reduce), and
    `rl/logprob_diff_mean` the mean of learner - behaviour (a SUM of sums / global tokens).
    `learner_logprobs[i]` (L_i,) are the learner's log-probs of sample i's outputs before the update.
    Samples without behaviour log-probs are left out; when no rank has any, nothing is reported.
    """
    diffs = [
        lp.double() - torch.tensor(s.logprobs, dtype=torch.float64)
        for s, lp in zip(samples, learner_logprobs, strict=True)
        if s.logprobs is not None
    ]
    flat = torch.cat(diffs) if diffs else torch.zeros(0, dtype=torch.float64)
    sums = torch.tensor([flat.sum().item(), float(flat.numel())], dtype=torch.float64, device=device)
    worst = torch.tensor([flat.abs().max().item() if diffs else 0.0], dtype=torch.float64, device=device)
    dist.all_reduce(sums)  # SUM: the batch's summed differences and its token count
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)  # the largest difference on any rank
    total, count = sums.tolist()
    if count == 0:
        return {}
    return {"rl/logprob_diff_max": worst.item(), "rl/logprob_diff_mean": total / count}


def gradient_probes(heads: HeadInputs, *, loss_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero tensors that the coming backward fills with ||grad||^2 at the LM head's and the value head's input.

    The backward's loss is this rank's share times `loss_scale`, which is divided out, so summed
    over micro-batches and ranks they are the squared norms for the whole batch's loss.
    """

    def probe_of(head_input: torch.Tensor) -> torch.Tensor:
        probe = head_input.new_zeros((), dtype=torch.float32)

        def record(grad: torch.Tensor) -> None:  # returns None: the gradient flows on unchanged
            probe.add_(grad.float().pow(2).sum() / loss_scale**2)

        head_input.register_hook(record)
        return probe

    return probe_of(heads.lm_head), probe_of(heads.value_head)


def right_align(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    """(B, width) with each 1-D row placed at the right end, zeros on the left."""
    out = torch.zeros((len(rows), width))
    for r, row in enumerate(rows):
        out[r, width - row.shape[0] :] = row
    return out


def summarise_updates(history: list[dict[str, float]]) -> dict[str, float]:
    """One record for several optimizer updates.

    The step and learning rate after the last one, the peak memory over all of them, every other
    metric averaged.
    """
    summary = {name: sum(h[name] for h in history) / len(history) for name in history[0]}
    summary.update({name: history[-1][name] for name in ("learner/step", "optim/lr") if name in summary})
    summary.update({name: max(h[name] for h in history) for name in summary if name.startswith("mem/")})
    return summary
