"""Shared prompts: run each common prompt prefix of a micro-batch once, then every row's rest on its KV cache.

A GRPO group is G outputs of one prompt, so a batch of groups repeats every prompt G times; the
paper's GP-L prompt (~180 tokens) is three times its output (64), and a later turn's prompt starts
with the earlier turns'. `share_prompts` lays rows out in two parts (`SharedPrompts`): one prefix
per group of rows whose prompts start alike (the prefix pass, left-padded, run once per group and
kept as a KV cache), and per row the rest of its prompt followed by its output but the last token
(the suffix pass, right-aligned like `Batch.action_ids`), which attends to its group's cached keys
and values. The suffix's last L columns predict the L output positions, so the suffix pass's
logits there are the plain layout's action logits; the gradient reaches each prefix token once
per row that continues it (the backward of the cache's row gather sums them). For 2 prompts x 4
outputs of 180 + 64 tokens the passes hold 2 x 179 + 8 x 64 = 870 tokens instead of 8 x 244 = 1952.

Groups (`prefix_groups`): rows sorted by prompt, so prompts with a long common prefix are
neighbours; a row joins the group before it when what it shares with it outweighs what the group's
rows lose from their prefix (the rows' token counts, not padding). Every prefix stops before its
rows' last prompt token, so each row's suffix starts with at least that token.

`shared_padded_tokens` and `plain_padded_tokens` are what each layout costs, padding included
(`learner.batch.micro_batches` budgets with the cheaper); `share_prompts` returns None where the
plain layout is no dearer.

    .venv/bin/python -m pytest tests/learner/test_shared_prompts.py
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import NamedTuple, Protocol

import numpy as np
import torch


class PromptAndOutput(Protocol):
    """What the layout reads of a `learner.batch.Sample`."""

    prompt_ids: list[int]
    output_ids: list[int]


@dataclass
class SharedPrompts:
    """A micro-batch's rows as group prefixes (U) and one suffix per row (B); see the module docstring."""

    prefix_ids: torch.Tensor  # (U, P) each group's common prompt prefix, left-padded
    prefix_mask: torch.Tensor  # (U, P) 1 on real tokens
    prefix_positions: torch.Tensor  # (U, P) positions counted from each prefix's first real token
    row_prefix: torch.Tensor  # (B,) the prefix each row continues
    suffix_ids: torch.Tensor  # (B, S) the rest of the prompt, then the output but its last; right-aligned
    suffix_mask: torch.Tensor  # (B, S) 1 on real tokens
    suffix_positions: torch.Tensor  # (B, S) positions in the whole sequence (0 on padding)
    output_lengths: torch.Tensor  # (B,) output tokens per row

    def to(self, device: torch.device) -> SharedPrompts:
        """The same layout with every tensor on `device`."""
        return SharedPrompts(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @property
    def attention_mask(self) -> torch.Tensor:
        """(B, P + S) what each row's suffix attends to: its prefix's real tokens, then its own."""
        return torch.cat([self.prefix_mask[self.row_prefix], self.suffix_mask], dim=1)

    @property
    def last_prompt_index(self) -> torch.Tensor:
        """(B,) suffix column of each row's last prompt token (where the value head reads)."""
        return self.suffix_ids.shape[1] - self.output_lengths


class PrefixGroup(NamedTuple):
    """Rows whose prompts all start with the same `length` tokens."""

    length: int
    rows: list[int]


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of leading tokens `a` and `b` share."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(differ[0]) if differ.size else n


def prefix_groups(prompts: Sequence[Sequence[int]]) -> list[PrefixGroup]:
    """Rows of `prompts` in groups with a common prefix (see the module docstring), by their first row.

    A row joins the group before it (in prompt order) when the s tokens it shares with it exceed
    what its n rows lose: n x (the group's prefix - s) tokens move to their suffixes. Every prompt
    needs at least 2 tokens (a prefix of at least 1 before the last).
    """
    groups: list[list] = []  # [length, rows]
    for row in sorted(range(len(prompts)), key=lambda i: prompts[i]):
        limit = len(prompts[row]) - 1  # the last prompt token stays in the suffix
        if groups:
            length, rows = groups[-1]
            shared = min(length, limit, common_prefix_length(prompts[rows[-1]], prompts[row]))
            if shared > len(rows) * (length - shared):
                groups[-1] = [shared, rows + [row]]
                continue
        groups.append([limit, [row]])
    return sorted((PrefixGroup(length, sorted(rows)) for length, rows in groups), key=lambda g: g.rows[0])


def plain_padded_tokens(samples: Sequence[PromptAndOutput]) -> int:
    """Tokens the plain layout of `samples` holds, padding included: B x the longest prompt + output."""
    return len(samples) * max(len(s.prompt_ids) + len(s.output_ids) for s in samples)


def shared_padded_tokens(samples: Sequence[PromptAndOutput]) -> int | None:
    """Tokens the two passes of `samples` hold, padding included (U x P + B x S); None where they cannot run."""
    groups = _shareable_groups(samples)
    return None if groups is None else _layout_tokens(samples, groups)


def _shareable_groups(samples: Sequence[PromptAndOutput]) -> list[PrefixGroup] | None:
    """The prefix groups of `samples`, or None where the shared layout cannot run or buys nothing.

    None where a prompt has a single token (nothing to cache before it) or every row is a group of
    its own (two passes for nothing).
    """
    if min(len(s.prompt_ids) for s in samples) < 2:
        return None
    groups = prefix_groups([s.prompt_ids for s in samples])
    return None if len(groups) == len(samples) else groups


def _layout_tokens(samples: Sequence[PromptAndOutput], groups: list[PrefixGroup]) -> int:
    """U x P + B x S of `groups`."""
    prefix = {row: group.length for group in groups for row in group.rows}
    suffix = max(len(s.prompt_ids) - prefix[row] + len(s.output_ids) - 1 for row, s in enumerate(samples))
    return len(groups) * max(group.length for group in groups) + len(samples) * suffix


def share_prompts(samples: Sequence[PromptAndOutput], *, pad_id: int) -> SharedPrompts | None:
    """The shared layout of `samples`, or None where it cannot run (`shared_padded_tokens`) or costs no less."""
    groups = _shareable_groups(samples)
    if groups is None or _layout_tokens(samples, groups) >= plain_padded_tokens(samples):
        return None
    width = max(group.length for group in groups)
    prefix_ids = torch.full((len(groups), width), pad_id, dtype=torch.long)  # (U, P)
    prefix_mask = torch.zeros((len(groups), width), dtype=torch.long)  # (U, P)
    group_of = [0] * len(samples)
    for index, group in enumerate(groups):
        prefix_ids[index, width - group.length :] = torch.tensor(samples[group.rows[0]].prompt_ids[: group.length])
        prefix_mask[index, width - group.length :] = 1
        for row in group.rows:
            group_of[row] = index
    starts = [groups[group_of[row]].length for row in range(len(samples))]
    suffixes = [s.prompt_ids[start:] + s.output_ids[:-1] for s, start in zip(samples, starts, strict=True)]
    suffix_len = max(len(suffix) for suffix in suffixes)
    suffix_ids = torch.full((len(samples), suffix_len), pad_id, dtype=torch.long)  # (B, S)
    suffix_mask = torch.zeros((len(samples), suffix_len), dtype=torch.long)  # (B, S)
    suffix_positions = torch.zeros((len(samples), suffix_len), dtype=torch.long)  # (B, S)
    for row, (suffix, start) in enumerate(zip(suffixes, starts, strict=True)):
        suffix_ids[row, suffix_len - len(suffix) :] = torch.tensor(suffix)
        suffix_mask[row, suffix_len - len(suffix) :] = 1
        suffix_positions[row, suffix_len - len(suffix) :] = torch.arange(start, start + len(suffix))
    return SharedPrompts(
        prefix_ids=prefix_ids,
        prefix_mask=prefix_mask,
        prefix_positions=(prefix_mask.cumsum(dim=1) - 1).clamp(min=0),
        row_prefix=torch.tensor(group_of),
        suffix_ids=suffix_ids,
        suffix_mask=suffix_mask,
        suffix_positions=suffix_positions,
        output_lengths=torch.tensor([len(s.output_ids) for s in samples]),
    )
