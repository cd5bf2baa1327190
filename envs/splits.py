"""Held-out splits: which GeneralPoints hands and V-IRL routes are for training, which for evaluation.

Held-out seeds are not held-out tasks: GP-L has only 1,236 solvable in-distribution rank multisets
and a few thousand training episodes deal nearly all of them, and most V-IRL evaluation routes
also occur among a few thousand training seeds. So every task carries a **split key** (a short
ASCII string: a GP hand's in-distribution numbers, a V-IRL route's city and places) and a fixed
rule assigns the key to "train" or "eval": the first 8 bytes of its SHA-256, as an integer, modulo
100, below `EVAL_PERCENT` means "eval". The rule depends on nothing but the key (not on Python's
salted `hash()`, the process or the platform), so every run and every machine agrees on it.

The environments take ``split``: "train" deals only training tasks, "eval" only evaluation tasks,
and "all" (the default) deals every task, the paper's no-split protocol. A driver builds its
training and SFT-export envs with split="train" and its evaluation envs with split="eval".
"""

from __future__ import annotations

import hashlib
from typing import Literal

Split = Literal["train", "eval", "all"]
SPLITS: tuple[str, ...] = ("train", "eval", "all")
#: Share of split keys, in percent, that the rule assigns to evaluation.
EVAL_PERCENT = 20


def split_of(key: str) -> Literal["train", "eval"]:
    """The split the key belongs to: "eval" for about `EVAL_PERCENT` percent of keys, else "train"."""
    digest = hashlib.sha256(key.encode("ascii")).digest()
    return "eval" if int.from_bytes(digest[:8], "big") % 100 < EVAL_PERCENT else "train"


def in_split(key: str, split: Split) -> bool:
    """Whether an env built with ``split`` may deal the task with this key ("all" admits every key)."""
    return split == "all" or split_of(key) == split
