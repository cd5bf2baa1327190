"""Training samples and their collation into padded tensors, from token ids only.

Token in, token out (design.md): a `Sample` carries the prompt ids the policy was given and the
output ids it generated; nothing here re-tokenizes text. `collate` left-pads prompt + output so
that every row's output ends at the last position: the policy then needs logits only for the last
`max_output_len + 1` positions (`logits_to_keep`), not for the (long, multi-turn) prompts.
With `share`, `collate` also lays rows whose prompts start alike out to run the common prefix
once (`learner.shared_prompts`). `micro_batches` sorts by length (sharing: by prompt, so prompts that
start alike stay together) and cuts micro-batches under a padded-token budget so padding stays small (never mixing
image counts); `shard_for_ranks` splits one batch across data-parallel ranks with balanced token
counts.

    .venv/bin/python -m pytest tests/learner/test_learner_batch.py
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Protocol

import numpy as np
import torch

from learner.shared_prompts import SharedPrompts, plain_padded_tokens, share_prompts, shared_padded_tokens


@dataclass
class Sample:
    """One policy turn to train on (the token-in, token-out contract of the module docstring).

    `output_ids` are the only tokens with a loss. `logprobs` are the behaviour policy's log-probs of
    `output_ids` (one per id, RL only). `temperature` is the one `output_ids` were sampled at: the
    server's log-probs are of `log_softmax(logits / temperature)`, so the learner divides its logits
    by it too; 0 (greedy) is scored at 1, as the server scores it. SFT samples keep 1. `advantage`
    is per sample (GRPO, GAE over turns); `return_` and `value` are the PPO value target and the old
    value. `images` go through the VLM processor.
    """

    prompt_ids: list[int]
    output_ids: list[int]
    logprobs: list[float] | None = None
    temperature: float = 1.0
    advantage: float = 0.0
    return_: float | None = None
    value: float | None = None
    images: list[np.ndarray] | None = None

    def __post_init__(self) -> None:
        if not self.prompt_ids or not self.output_ids:
            raise ValueError(
                f"a Sample needs non-empty prompt_ids and output_ids, got "
                f"{len(self.prompt_ids)} and {len(self.output_ids)} ids"
            )
        if not self.temperature >= 0:
            raise ValueError(
                f"temperature={self.temperature} is not a sampling temperature: give the one the "
                f"output was sampled at (>= 0; 0 = greedy)"
            )
        if self.logprobs is not None and len(self.logprobs) != len(self.output_ids):
            raise ValueError(
                f"logprobs has {len(self.logprobs)} entries for "
                f"{len(self.output_ids)} output ids: give one per output id"
            )

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)


@dataclass
class Batch:
    """Left-padded tensors of samples; L = longest output, outputs right-aligned in (B, L)."""

    input_ids: torch.Tensor  # (B, T) prompt + output, left-padded
    attention_mask: torch.Tensor  # (B, T) 1 on real tokens
    position_ids: torch.Tensor  # (B, T) positions counted from each row's first real token
    action_ids: torch.Tensor  # (B, L) output ids, right-aligned, padded on the left
    action_mask: torch.Tensor  # (B, L) True on output tokens
    behaviour_logprobs: torch.Tensor  # (B, L) server log-probs (0 where absent)
    token_weights: torch.Tensor  # (B, L) policy-gradient weight: 1, or pre_action_weight before the action key
    temperatures: torch.Tensor  # (B,) the logits' divisor: the behaviour temperature, 1 for greedy (0)
    advantages: torch.Tensor  # (B,)
    returns: torch.Tensor  # (B,) PPO value targets (0 where absent)
    old_values: torch.Tensor  # (B,) PPO old values (0 where absent)
    shared: SharedPrompts | None = None  # the same rows, each common prompt prefix run once (collate's share)

    def to(self, device: torch.device) -> Batch:
        """The same batch with every tensor on `device`."""
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return Batch(**{name: None if value is None else value.to(device) for name, value in moved.items()})

    @property
    def n_logits(self) -> int:
        """Positions whose logits are needed: the L action positions plus the one before them."""
        return self.action_ids.shape[1] + 1

    @property
    def last_prompt_index(self) -> torch.Tensor:
        """(B,) index in T of each row's last prompt token (where the value head reads)."""
        return self.input_ids.shape[1] - 1 - self.action_mask.sum(dim=1)


def collate(
    samples: Sequence[Sample],
    *,
    pad_id: int,
    pre_action_counts: Sequence[int] | None = None,
    pre_action_weight: float = 1.0,
    share: bool = False,
) -> Batch:
    """Pad `samples` into a `Batch` (outputs right-aligned, prompts left-padded).

    The first `pre_action_counts[i]` outputs of row i get the policy-gradient weight
    `pre_action_weight` (`Batch.token_weights`). `share`: also the shared-prompt layout
    (`Batch.shared`), where it is cheaper and no sample carries images.
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    n_rows = len(samples)
    seq_len = max(len(s) for s in samples)
    out_len = max(len(s.output_ids) for s in samples)
    input_ids = torch.full((n_rows, seq_len), pad_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((n_rows, seq_len), dtype=torch.long)  # (B, T)
    action_ids = torch.full((n_rows, out_len), pad_id, dtype=torch.long)  # (B, L)
    action_mask = torch.zeros((n_rows, out_len), dtype=torch.bool)  # (B, L)
    behaviour = torch.zeros((n_rows, out_len))  # (B, L)
    weights = torch.ones((n_rows, out_len))  # (B, L)
    for row, sample in enumerate(samples):
        ids = sample.prompt_ids + sample.output_ids
        n_out = len(sample.output_ids)
        input_ids[row, seq_len - len(ids) :] = torch.tensor(ids)
        attention_mask[row, seq_len - len(ids) :] = 1
        action_ids[row, out_len - n_out :] = torch.tensor(sample.output_ids)
        action_mask[row, out_len - n_out :] = True
        if sample.logprobs is not None:
            behaviour[row, out_len - n_out :] = torch.tensor(sample.logprobs)
        if pre_action_counts is not None:
            weights[row, out_len - n_out : out_len - n_out + pre_action_counts[row]] = pre_action_weight
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, T)
    return Batch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        action_ids=action_ids,
        action_mask=action_mask,
        behaviour_logprobs=behaviour,
        token_weights=weights,
        temperatures=torch.tensor([s.temperature if s.temperature > 0 else 1.0 for s in samples]),  # greedy: 1
        advantages=torch.tensor([s.advantage for s in samples], dtype=torch.float32),
        returns=torch.tensor([s.return_ or 0.0 for s in samples], dtype=torch.float32),
        old_values=torch.tensor([s.value or 0.0 for s in samples], dtype=torch.float32),
        shared=share_prompts(samples, pad_id=pad_id) if _text_only(samples, share) else None,
    )


def _text_only(samples: Sequence[Sample], share: bool) -> bool:
    """True when `share` asks for shared prompts and no sample carries images (they run the plain layout)."""
    return share and not any(s.images for s in samples)


def padded_tokens(samples: Sequence[Sample], *, share: bool) -> int:
    """Tokens a micro-batch of `samples` holds, padding included, in the layout `collate(share=share)` runs."""
    plain = plain_padded_tokens(samples)
    shared = shared_padded_tokens(samples) if _text_only(samples, share) else None
    return plain if shared is None else min(plain, shared)


def micro_batches(samples: Sequence[Sample], *, max_tokens: int, share: bool = False) -> list[list[int]]:
    """Indices of `samples` cut into micro-batches of at most `max_tokens` padded tokens, one image count each.

    Samples are sorted by length first, so rows of a micro-batch have similar lengths and padding
    stays small; with `share` (shared prompts), text samples by prompt, then output length, so rows
    whose prompts start alike land together, and the budget counts a common prefix once (`padded_tokens`).
    A sample longer than `max_tokens` gets a micro-batch of its own. Rows of a
    micro-batch carry the same number of images: in transformers' Mllama, text positions that see no
    image attend evenly to every image slot of the batch, padded ones too, so a row scores the same
    alone and in a batch only among rows with as many images (the server batches likewise).
    """
    n_images = [len(s.images or []) for s in samples]

    def order_key(i: int) -> tuple:
        sample = samples[i]
        if share and not n_images[i]:  # prompts in order: common prefixes side by side
            return n_images[i], sample.prompt_ids, len(sample.output_ids)
        return n_images[i], len(sample)

    batches: list[list[int]] = []
    for index in sorted(range(len(samples)), key=order_key):
        same_images = batches and n_images[batches[-1][0]] == n_images[index]
        grown = [samples[i] for i in batches[-1]] + [samples[index]] if same_images else []
        if same_images and padded_tokens(grown, share=share) <= max_tokens:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


def shard_for_ranks(samples: Sequence[Sample], n_ranks: int) -> list[list[int]]:
    """Indices of `samples` for each of `n_ranks` ranks: counts within one, tokens balanced.

    Samples sorted longest first are dealt in snake order (0..n-1, n-1..0, ...), so every rank
    gets len(samples) // n_ranks or one more, and similar token totals. Which rank gets which
    sample does not change the loss: every loss is normalised by global counts (`learner.losses`).
    """
    if n_ranks < 1:
        raise ValueError(f"n_ranks must be >= 1, got {n_ranks}")
    shards: list[list[int]] = [[] for _ in range(n_ranks)]
    order = sorted(range(len(samples)), key=lambda i: len(samples[i]), reverse=True)
    for position, index in enumerate(order):
        lap, offset = divmod(position, n_ranks)
        shards[offset if lap % 2 == 0 else n_ranks - 1 - offset].append(index)
    return shards


class Decoder(Protocol):
    """The part of a HF tokenizer that `pre_action_token_count` uses."""

    def decode(self, token_ids: list[int]) -> str:
        """The text of `token_ids`."""
        ...


def pre_action_token_count(tokenizer: Decoder, output_ids: Sequence[int], action_keys: Sequence[str]) -> int:
    """Number of leading output tokens that lie wholly before the LAST action key in the reply.

    The paper's rule (thought_prob_coef): everything before the reply's last occurrence of any of
    `action_keys` is thought. The reply's text is `decode(output_ids)`; the key's character offset
    is found there, and a binary search over decoded prefixes (whose lengths grow with the prefix)
    finds the last token boundary at or before it, so no token is re-encoded. Returns 0 when no key
    occurs (then nothing is down-weighted).
    """
    text = tokenizer.decode(list(output_ids))
    key_start = max((text.rfind(key) for key in action_keys), default=-1)
    if key_start < 0:
        return 0
    low, high = 0, len(output_ids)  # invariant: prefix of `low` tokens ends at or before key_start
    while low < high:
        mid = (low + high + 1) // 2
        if len(tokenizer.decode(list(output_ids[:mid]))) <= key_start:
            low = mid
        else:
            high = mid - 1
    return low
