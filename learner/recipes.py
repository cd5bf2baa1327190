"""Named learner presets: the settings a recipe fixes, written once, applied by `LearnerConfig(preset=...)`.

`paper_ppo` is the PPO column of design.md's "The paper's recipe" (Chu et al., 2025, official
code): 4 epochs of 2 optimizer steps (2,048 turns per update, 1,024 samples per step), clips 0.1,
value coefficient 0.5, no entropy bonus, whitened advantages, gradient clip 0.01, Adam with eps
1e-7 and no weight decay at lr 1e-6, cosine to 1e-9 over T_max = 100 updates stepped once per
update, and the thought tokens' policy-gradient weight 0.5 (thought_prob_coef). No KL and no
reference model. A preset fills only the fields the user did not set: an explicit value always wins.

    .venv/bin/python -m learner.recipes paper_ppo      # prints the preset's settings as JSON
"""

from __future__ import annotations

import json
import sys
from typing import Any

PAPER_PPO: dict[str, Any] = {
    "algo": "ppo",
    "kl_mode": "none",
    "ppo_epochs": 4,
    "mini_batches": 2,
    "clip_low": 0.1,
    "clip_high": 0.1,
    "value_clip": 0.1,
    "value_coef": 0.5,
    "entropy_coef": 0.0,
    "whiten_advantages": True,
    "grad_clip": 0.01,
    "adam_eps": 1e-7,
    "weight_decay": 0.0,
    "lr": 1e-6,
    "lr_schedule": "cosine",
    "lr_min": 1e-9,
    "warmup_steps": 0,
    "total_steps": 100,
    "schedule_unit": "update",
    "pre_action_weight": 0.5,
}

PRESETS: dict[str, dict[str, Any]] = {"paper_ppo": PAPER_PPO}


def with_preset(fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` plus every setting of `fields["preset"]` that `fields` does not set itself.

    An unknown preset name is passed through unchanged (the config's Literal check names it).
    """
    preset = PRESETS.get(fields.get("preset", "none"), {})
    return {**preset, **fields}


if __name__ == "__main__":
    print(json.dumps(PRESETS[sys.argv[1] if len(sys.argv) > 1 else "paper_ppo"], indent=2))
