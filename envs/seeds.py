"""Disjoint seed ranges: drivers draw training seeds from one and evaluation seeds from the other.

`reset(seed=s)` reproduces an episode exactly, so keeping the ranges apart means evaluation runs on
hands and routes the policy never trained on (design.md, "Seeds").
"""

TRAIN_SEEDS = range(0, 1_000_000)
EVAL_SEEDS = range(1_000_000_000, 1_001_000_000)
