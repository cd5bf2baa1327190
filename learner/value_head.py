"""The module DeepSpeed trains: the HF policy, plus (PPO) a value head on the last prompt token.

The value head is an MLP on the final hidden state of the last prompt token (the paper's critic,
after RL4VLM): it scores the state the policy answers in. `PolicyWithValue.forward` returns only
the logits the losses need (the output positions, via `logits_to_keep`), the values and, with
them, the last hidden state as each head read it (`HeadInputs`, for the PPO metrics' gradient
norms on the backbone the two heads share). Weight export drops the value head: the policy's
parameters keep their HF names under the `policy.` prefix (`POLICY_PREFIX`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from transformers import PreTrainedModel

POLICY_PREFIX = "policy."


class ValueHead(nn.Module):
    """hidden (B, H) -> value (B,): Linear, GELU, Linear, seeded for reproducibility."""

    def __init__(self, hidden_size: int, width: int, *, seed: int) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = nn.Sequential(nn.Linear(hidden_size, width), nn.GELU(), nn.Linear(width, 1))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, H) hidden states -> (B,) values."""
        return self.net(hidden).squeeze(-1)  # (B,)


@dataclass(frozen=True)
class HeadInputs:
    """The last hidden state as the LM head and the value head read it.

    The backward sends into `lm_head` only the gradient of the terms computed from the logits and
    into `value_head` only the value term's, so hooks on them split the backbone's gradient. A
    plain object, because ZeRO-3 re-wraps every tensor it finds in a module's outputs (tuples,
    lists, dicts) in a copy of its own, which the losses' gradient would never reach.
    """

    lm_head: torch.Tensor  # (B, n_logits, H)
    value_head: torch.Tensor  # (B, H) at each row's last prompt token


class ForwardOutput(NamedTuple):
    """Logits of the last `n_logits` positions and, with a value head, one value per row."""

    logits: torch.Tensor  # (B, n_logits, V)
    values: torch.Tensor | None  # (B,)
    heads: HeadInputs | None  # with the values


class PolicyWithValue(nn.Module):
    """A HF causal LM (or VLM) and an optional `ValueHead`, trained as one DeepSpeed module."""

    def __init__(self, policy: PreTrainedModel, value_head: ValueHead | None) -> None:
        super().__init__()
        self.policy = policy
        self.value_head = value_head

    @staticmethod
    def hidden_size(policy: PreTrainedModel) -> int:
        """Width of the text model's hidden state (VLMs keep it in their text config)."""
        return policy.config.get_text_config().hidden_size

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        *,
        n_logits: int,
        last_prompt_index: torch.Tensor | None = None,
        image_inputs: dict[str, torch.Tensor] | None = None,
    ) -> ForwardOutput:
        """Run the policy; values (and `heads`) are computed when `last_prompt_index` (B,) is given.

        `image_inputs`: the VLM's image keyword inputs for the batch (`prompt_encoding.batch_image_inputs`:
        `pixel_values`, and for Mllama its aspect ratios and `cross_attention_mask`); None for text.
        """
        want_values = self.value_head is not None and last_prompt_index is not None
        extra = dict(image_inputs or {})
        lm_inputs: list[torch.Tensor] = []
        recorder = None
        if want_values:
            lm_head = self.policy.get_output_embeddings()
            recorder = lm_head.register_forward_pre_hook(lambda _module, args: lm_inputs.append(args[0]))
        try:
            ids = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
            out = self.policy(
                **ids, logits_to_keep=n_logits, output_hidden_states=want_values, use_cache=False, **extra
            )
        finally:
            if recorder is not None:
                recorder.remove()
        if not want_values:
            return ForwardOutput(out.logits, None, None)
        hidden = out.hidden_states[-1]  # (B, T, H)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        value_input = hidden[rows, last_prompt_index]  # (B, H)
        values = self.value_head(value_input).float()  # (B,)
        return ForwardOutput(out.logits, values, HeadInputs(lm_inputs[-1], value_input))
