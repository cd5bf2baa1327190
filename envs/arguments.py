"""Constructor-argument checks shared by sftrl's environments.

Each check raises ValueError naming the bad argument and the fix, so a typo in
`gymnasium.make(..., variant="rule-ood")` fails at construction rather than mid-episode.
"""

from __future__ import annotations

from collections.abc import Collection

from envs.splits import SPLITS


def check_common_arguments(
    variant, modality, *, variants: Collection[str], split, max_attempts, default_attempts: int, render_mode
) -> None:
    """Validate the arguments every sftrl env takes; raise ValueError on the first bad one.

    `variants` lists the env's variant names; `default_attempts` is the example shown in the
    error for `max_attempts`. `split` is the held-out split, "train", "eval" or "all"
    (`envs.splits`).
    """
    if variant not in variants:
        raise ValueError(f"variant={variant!r} is unknown; use one of {sorted(variants)}")
    if modality not in ("text", "image"):
        raise ValueError(f"modality={modality!r} is unknown; use 'text' or 'image'")
    if variant == "visual_ood" and modality != "image":
        raise ValueError("variant='visual_ood' changes only the pictures; use it with modality='image'")
    if split not in SPLITS:
        raise ValueError(
            f"split={split!r} is unknown; use 'train' (training tasks only), 'eval' (held-out tasks only) "
            "or 'all' (no split, the paper's protocol)"
        )
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ValueError(f"max_attempts={max_attempts!r} must be an int >= 1, e.g. {default_attempts}")
    if render_mode not in (None, "rgb_array"):
        raise ValueError(f"render_mode={render_mode!r} is unsupported; use None or 'rgb_array'")


def check_episode_bound(max_attempts: int, *, points: int, max_episode_steps: int) -> None:
    """Raise ValueError when an episode could outlast the registered `max_episode_steps`.

    An episode makes at most `max_attempts` policy calls at each of its `points` decision points
    (1 for GeneralPoints, the longest route's rail points for V-IRL).
    """
    if max_attempts * points > max_episode_steps:
        most = max_episode_steps // points
        fix = f"use max_attempts <= {most}" if most else f"use routes of at most {max_episode_steps} points"
        raise ValueError(
            f"max_attempts={max_attempts} allows {max_attempts * points} policy calls per episode "
            f"({points} decision points x {max_attempts} attempts), more than the registered "
            f"max_episode_steps={max_episode_steps}; {fix}"
        )
