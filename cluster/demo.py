"""Interim `make demo`: the GeneralPoints oracle playing a few episodes of every variant.

Each episode opens with a naive first answer (the sum of the card numbers), so the verifier's
feedback and the sequential revision show, then the oracle answers. Printed with rich; the picture
of one image hand is saved to runs/demo/hand.png. The training driver replaces this module with the
real SFT-then-RL run. Run: `python -m cluster.demo [--episodes 3] [--out runs/demo]`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

SUIT_SYMBOLS = {"spades": "\u2660", "clubs": "\u2663", "hearts": "\u2665", "diamonds": "\u2666"}
VARIANTS = [("id", "text"), ("rule_ood", "text"), ("id", "image"), ("rule_ood", "image"), ("visual_ood", "image")]


def play_variant(variant: str, modality: str, *, episodes: int, first_seed: int):
    """Play ``episodes`` episodes; return (rows for the table, the env after the last one)."""
    import gymnasium

    import envs  # noqa: F401  (registers the ids)

    env = gymnasium.make("sftrl/GeneralPoints-v0", variant=variant, modality=modality, render_mode="rgb_array")
    rows = []
    for seed in range(first_seed, first_seed + episodes):
        _, info = env.reset(seed=seed)
        naive = "+".join(str(n) for n in info["numbers"])
        naive_answer = json.dumps({"cards": info["cards"], "number": info["numbers"], "formula": naive})
        _, first_reward, solved, _, first_info = env.step(naive_answer)
        formula, second_reward = "", ""
        if not solved:
            oracle = env.unwrapped.oracle_action()
            formula = json.loads(oracle)["formula"]
            second_reward = f"{env.step(oracle)[1]:+g}"
        hand = " ".join(rank + SUIT_SYMBOLS[suit] for rank, suit in zip(info["cards"], info["suits"]))
        feedback = first_info["feedback"] or "solved"
        rows.append((hand, naive, f"{first_reward:+g}", feedback, formula, second_reward))
    return rows, env


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=3, help="episodes per variant")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="folder for hand.png")
    args = parser.parse_args(argv)

    from PIL import Image
    from rich.console import Console
    from rich.table import Table

    from envs.seeds import EVAL_SEEDS

    console = Console()
    console.rule("GeneralPoints: the oracle plays every variant (sequential revision after a naive try)")
    for variant, modality in VARIANTS:
        rows, env = play_variant(variant, modality, episodes=args.episodes, first_seed=EVAL_SEEDS.start)
        table = Table(title=f"variant={variant} modality={modality}", show_lines=False)
        for column in ("hand", "try 1", "reward", "feedback", "oracle, try 2", "reward"):
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*row)
        console.print(table)
        if (variant, modality) == ("id", "image"):
            args.out.mkdir(parents=True, exist_ok=True)
            Image.fromarray(env.render()).save(args.out / "hand.png")
            console.print(f"picture of the last hand saved to {args.out / 'hand.png'}")


if __name__ == "__main__":
    main()
