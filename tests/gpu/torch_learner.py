"""`TorchLearner`: `LearnerEngine` in plain torch, the GPU check's learner where DeepSpeed does not import.

Everything of a step is the project's (`LearnerEngine`: planning, collation, the forward at the
behaviour temperature, `learner.losses`, the metrics, the LR schedule); only the engine DeepSpeed
would build is replaced, by `TorchEngine`: the module on the rank's device in the training dtype,
backward, global-norm clipping and torch's AdamW, in one process with no ZeRO partitioning. In bf16
it is pure bf16 (no fp32 master weights, unlike DeepSpeed's bf16 mode): right for step time, peak
memory, finiteness and log-prob parity, not for the numerics of many small updates.
"""

from __future__ import annotations

import torch

from learner.engine import LearnerEngine
from learner.value_head import PolicyWithValue


class TorchEngine:
    """The part of DeepSpeed's engine API that `LearnerEngine` calls, for one process in plain torch."""

    def __init__(self, module: PolicyWithValue, optimizer: torch.optim.Optimizer | None, *, grad_clip: float):
        self.module = module
        self.basic_optimizer = optimizer
        self.grad_clip = grad_clip
        self._grad_norm: float | None = None

    def __call__(self, *args, **kwargs):
        """The module's forward."""
        return self.module(*args, **kwargs)

    def set_gradient_accumulation_boundary(self, is_boundary: bool) -> None:
        """Nothing to do: gradients accumulate in `.grad` until `step`."""

    def backward(self, loss: torch.Tensor, *, scale_wrt_gas: bool) -> None:
        """Accumulate the gradient of `loss` (the engine scales it itself: `scale_wrt_gas` is always False)."""
        assert not scale_wrt_gas, "LearnerEngine scales its losses itself"
        loss.backward()

    def step(self) -> None:
        """Clip the global gradient norm, take the AdamW step, clear the gradients."""
        parameters = [p for p in self.module.parameters() if p.grad is not None]
        self._grad_norm = float(torch.nn.utils.clip_grad_norm_(parameters, self.grad_clip))  # device sync
        self.basic_optimizer.step()
        self.basic_optimizer.zero_grad(set_to_none=True)

    def get_lr(self) -> list[float]:
        """The learning rate of each parameter group."""
        return [group["lr"] for group in self.basic_optimizer.param_groups]

    def get_global_grad_norm(self) -> float | None:
        """The gradient norm before clipping at the last step."""
        return self._grad_norm


class TorchLearner(LearnerEngine):
    """A 1-process `LearnerEngine` whose engine is a `TorchEngine` (see the module docstring)."""

    def _initialize(self, module: PolicyWithValue, *, train: bool) -> TorchEngine:
        module.eval()  # no dropout: log-probs must match the behaviour policy's
        module.to(device=self.device, dtype=self.dtype)
        optimizer = None
        if train:
            optimizer = torch.optim.AdamW(
                [p for p in module.parameters() if p.requires_grad],
                lr=self.config.lr,
                betas=self.config.adam_betas,
                eps=self.config.adam_eps,
                weight_decay=self.config.weight_decay,
            )
        return TorchEngine(module, optimizer, grad_clip=self.config.grad_clip)
