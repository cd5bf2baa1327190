"""Disjoint seed ranges: drivers draw training seeds from one and evaluation seeds from the other.

`reset(seed=s)` reproduces an episode exactly, so disjoint ranges keep training and evaluation
episodes apart. They do not keep their tasks apart: GeneralPoints has only 1,820 rank multisets
and a V-IRL city a few thousand routes, so seeds from both ranges deal the same hands and routes.
Held-out hands and routes come from the envs' `split` argument (`envs.splits`): "train" for
training and SFT data, "eval" for evaluation.
"""

TRAIN_SEEDS = range(0, 1_000_000)
EVAL_SEEDS = range(1_000_000_000, 1_001_000_000)
