"""Shared prompts: run each distinct prompt of a micro-batch once, then every output on its KV cache.

A GRPO group is G outputs of one prompt, so a batch of groups repeats every prompt G times; the
paper's GP-L prompt (~180 tokens) is three times its output (64). `share_prompts` lays such rows
out in two parts (`SharedPrompts`): the distinct prompts but their last token (the prefix pass,
left-padded, run once each and kept as a KV cache), and per row the prompt's last token followed
by the output but its last (the suffix pass, right-aligned like `Batch.action_ids`), which attends
to its prompt's cached keys and values. Column j of the suffix predicts output token j, so the
suffix pass's logits are the plain layout's action logits; the gradient reaches each prompt's
tokens once per row that continues it (the backward of the cache's row gather sums them). For 2
prompts x 4 outputs of 180 + 64 tokens the passes hold 2 x 179 + 8 x 64 = 870 tokens instead of
8 x 244 = 1952.

`shared_padded_tokens` and `plain_padded_tokens` are what each layout costs (`learner.batch.micro_batches`
budgets with the cheaper); `share_prompts` returns None where the plain layout is no dearer.

    .venv/bin/python -m pytest tests/learner/test_shared_prompts.py
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Protocol

import torch


class PromptAndOutput(Protocol):
    """What the layout reads of a `learner.batch.Sample`."""

    prompt_ids: list[int]
    output_ids: list[int]


@dataclass
class SharedPrompts:
    """A micro-batch's rows as distinct prompt prefixes (U) and one suffix per row (B); see the module docstring."""

    prefix_ids: torch.Tensor  # (U, P) each distinct prompt but its last token, left-padded
    prefix_mask: torch.Tensor  # (U, P) 1 on real tokens
    prefix_positions: torch.Tensor  # (U, P) positions counted from each prefix's first real token
    row_prefix: torch.Tensor  # (B,) the prefix each row continues
    suffix_ids: torch.Tensor  # (B, L) the prompt's last token, then the output but its last; right-aligned
    suffix_mask: torch.Tensor  # (B, L) 1 on real tokens
    suffix_positions: torch.Tensor  # (B, L) positions in the whole sequence (0 on padding)

    def to(self, device: torch.device) -> SharedPrompts:
        """The same layout with every tensor on `device`."""
        return SharedPrompts(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @property
    def attention_mask(self) -> torch.Tensor:
        """(B, P + L) what each row's suffix attends to: its prefix's real tokens, then its own."""
        return torch.cat([self.prefix_mask[self.row_prefix], self.suffix_mask], dim=1)

    @property
    def last_prompt_index(self) -> torch.Tensor:
        """(B,) suffix column of each row's last prompt token (where the value head reads)."""
        return self.suffix_ids.shape[1] - self.suffix_mask.sum(dim=1)


def plain_padded_tokens(samples: Sequence[PromptAndOutput]) -> int:
    """Tokens the plain layout of `samples` holds, padding included: B x the longest prompt + output."""
    return len(samples) * max(len(s.prompt_ids) + len(s.output_ids) for s in samples)


def shared_padded_tokens(samples: Sequence[PromptAndOutput]) -> int | None:
    """Tokens the two passes of `samples` hold, padding included (U x P + B x L).

    None where no prompt repeats (two passes for nothing) or one has a single token (nothing to cache).
    """
    n_prompts = len({tuple(s.prompt_ids) for s in samples})
    if n_prompts == len(samples) or min(len(s.prompt_ids) for s in samples) < 2:
        return None
    longest_prefix = max(len(s.prompt_ids) for s in samples) - 1
    return n_prompts * longest_prefix + len(samples) * max(len(s.output_ids) for s in samples)


def share_prompts(samples: Sequence[PromptAndOutput], *, pad_id: int) -> SharedPrompts | None:
    """The shared layout of `samples`, or None where it cannot run (`shared_padded_tokens`) or costs no less."""
    shared = shared_padded_tokens(samples)
    if shared is None or shared >= plain_padded_tokens(samples):
        return None
    distinct: dict[tuple[int, ...], int] = {}
    row_prefix = torch.tensor([distinct.setdefault(tuple(s.prompt_ids), len(distinct)) for s in samples])  # (B,)
    prefixes = [list(prompt[:-1]) for prompt in distinct]
    width = max(len(p) for p in prefixes)
    prefix_ids = torch.full((len(prefixes), width), pad_id, dtype=torch.long)  # (U, P)
    prefix_mask = torch.zeros((len(prefixes), width), dtype=torch.long)  # (U, P)
    for row, prefix in enumerate(prefixes):
        prefix_ids[row, width - len(prefix) :] = torch.tensor(prefix)
        prefix_mask[row, width - len(prefix) :] = 1
    out_len = max(len(s.output_ids) for s in samples)
    suffix_ids = torch.full((len(samples), out_len), pad_id, dtype=torch.long)  # (B, L)
    suffix_mask = torch.zeros((len(samples), out_len), dtype=torch.long)  # (B, L)
    suffix_positions = torch.zeros((len(samples), out_len), dtype=torch.long)  # (B, L)
    for row, sample in enumerate(samples):
        n_out, start = len(sample.output_ids), len(sample.prompt_ids) - 1
        suffix_ids[row, out_len - n_out :] = torch.tensor(sample.prompt_ids[-1:] + sample.output_ids[:-1])
        suffix_mask[row, out_len - n_out :] = 1
        suffix_positions[row, out_len - n_out :] = torch.arange(start, start + n_out)
    return SharedPrompts(
        prefix_ids=prefix_ids,
        prefix_mask=prefix_mask,
        prefix_positions=(prefix_mask.cumsum(dim=1) - 1).clamp(min=0),
        row_prefix=row_prefix,
        suffix_ids=suffix_ids,
        suffix_mask=suffix_mask,
        suffix_positions=suffix_positions,
    )
