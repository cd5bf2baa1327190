"""The module DeepSpeed trains: the HF policy, plus (PPO) a value head on the last prompt token.

The value head is an MLP on the final hidden state of the last prompt token (the paper's critic,
after RL4VLM): it scores the state the policy answers in. `PolicyWithValue.forward` returns only
the logits the losses need (the output positions: `logits_to_keep`, or the suffix pass of shared
prompts, `learner.shared_prompts`), the values and, with
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

from learner.batch import Batch
from learner.shared_prompts import SharedPrompts

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

    lm_head: torch.Tensor  # (B, L or L + 1, H) what the LM head read
    value_head: torch.Tensor  # (B, H) at each row's last prompt token


class ForwardOutput(NamedTuple):
    """The logits that predict each action position and, with a value head, one value per row."""

    logits: torch.Tensor | None  # (B, L, V) column j predicts action j (None when not asked for)
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
        batch: Batch,
        *,
        values: bool = False,
        logits: bool = True,
        image_inputs: dict[str, torch.Tensor] | None = None,
    ) -> ForwardOutput:
        """Run the policy on `batch`: its action logits (`logits`) and, with `values`, values and `heads`.

        The plain layout runs once; `batch.shared` (text only) runs each group's common prompt prefix
        once and every row's rest on its KV cache (`learner.shared_prompts`): the same logits and values.
        `image_inputs`: the VLM's image keyword inputs for the batch (`prompt_encoding.batch_image_inputs`:
        `pixel_values`, and for Mllama its aspect ratios and `cross_attention_mask`); None for text.
        """
        want_values = values and self.value_head is not None
        lm_inputs: list[torch.Tensor] = []
        recorder = None
        if want_values:
            lm_head = self.policy.get_output_embeddings()
            recorder = lm_head.register_forward_pre_hook(lambda _module, args: lm_inputs.append(args[0]))
        try:
            if batch.shared is None:  # the last of the L + 1 positions predicts past the output
                out = self._plain(batch, want_values, batch.n_logits if logits else 1, image_inputs)
                action_logits = out.logits[:, :-1] if logits else None
                last_prompt_index = batch.last_prompt_index
            else:
                out = self._shared(batch.shared, want_values, batch.action_ids.shape[1] if logits else 1)
                action_logits = out.logits if logits else None
                last_prompt_index = batch.shared.last_prompt_index
        finally:
            if recorder is not None:
                recorder.remove()
        if not want_values:
            return ForwardOutput(action_logits, None, None)
        hidden = out.hidden_states[-1]  # (B, T, H)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        value_input = hidden[rows, last_prompt_index]  # (B, H)
        values_out = self.value_head(value_input).float()  # (B,)
        return ForwardOutput(action_logits, values_out, HeadInputs(lm_inputs[-1], value_input))

    def _plain(self, batch: Batch, hidden: bool, n_logits: int, image_inputs: dict[str, torch.Tensor] | None):
        """One pass over the left-padded rows: logits of the last `n_logits` positions."""
        return self.policy(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            logits_to_keep=n_logits,
            output_hidden_states=hidden,
            use_cache=False,
            **(image_inputs or {}),
        )

    def _shared(self, shared: SharedPrompts, hidden: bool, n_logits: int):
        """The prefix pass, its KV cache gathered per row, then the suffix pass (logits: last `n_logits` columns)."""
        prefix = self.policy.get_decoder()(
            input_ids=shared.prefix_ids,
            attention_mask=shared.prefix_mask,
            position_ids=shared.prefix_positions,
            use_cache=True,
        )
        cache = prefix.past_key_values  # (U, heads, P, d) per layer
        cache.reorder_cache(shared.row_prefix)  # (B, heads, P, d): the backward sums each prefix's rows
        return self.policy(
            input_ids=shared.suffix_ids,
            attention_mask=shared.attention_mask,
            position_ids=shared.suffix_positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=n_logits,
            output_hidden_states=hidden,
        )
