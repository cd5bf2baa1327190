"""The study's figure, shaped like the paper's Fig. 5/6: each metric against training GFLOPs, RL vs SFT.

One row per variant (id on top, the OOD variants below), one column per headline metric. Thin
lines: one seed of one arm, from the init (point 0) through its K evaluations. Thick line and band:
the mean over seeds at each point (x: the mean GFLOPs there) and its 95% Student-t interval.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from cluster.config import TASKS
from cluster.study.stats import t_interval

if TYPE_CHECKING:
    from cluster.study.report import Point, StudyLayout

COLORS = {"rl": "tab:blue", "sft": "tab:orange"}


def plot_study(layout: StudyLayout, points: list[Point], path: Path) -> Path:
    """Draw the figure to `path` (PNG, matplotlib's Agg backend); returns `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cluster.study.report import HEADLINE

    variants, metrics = TASKS[layout.task].variants, HEADLINE[layout.task]
    fig, axes = plt.subplots(
        len(variants), len(metrics), figsize=(4.2 * len(metrics), 3.0 * len(variants)), squeeze=False
    )
    for row, variant in enumerate(variants):
        for col, metric in enumerate(metrics):
            ax = axes[row][col]
            for arm in ("rl", "sft"):
                _draw_arm(ax, [p for p in points if (p.arm, p.variant, p.metric) == (arm, variant, metric)], arm)
            ax.set_title(f"{variant}: {metric}", fontsize=9)
            ax.set_xlabel("training GFLOPs", fontsize=8)
            ax.set_ylabel("%", fontsize=8)
            ax.set_ylim(0, max(5.0, ax.get_ylim()[1]))  # rates from 0; at least a 5-point span
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{layout.task} on {layout.model}: RL vs SFT from one init", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _draw_arm(ax, points: list[Point], arm: str) -> None:
    """Thin per-seed lines, then the mean over seeds with its interval band."""
    by_seed: dict[int, list[Point]] = defaultdict(list)
    by_point: dict[int, list[Point]] = defaultdict(list)
    for p in sorted(points, key=lambda p: p.point):
        by_seed[p.seed].append(p)
        by_point[p.point].append(p)
    for seed_points in by_seed.values():
        ax.plot(
            [p.gflops for p in seed_points], [100 * p.value for p in seed_points], color=COLORS[arm], lw=0.7, alpha=0.45
        )
    xs, means, lows, highs = [], [], [], []
    for index in sorted(by_point):
        interval = t_interval([p.value for p in by_point[index]])
        xs.append(sum(p.gflops for p in by_point[index]) / len(by_point[index]))
        means.append(100 * interval.mean)
        lows.append(100 * interval.low if not math.isnan(interval.low) else 100 * interval.mean)
        highs.append(100 * interval.high if not math.isnan(interval.high) else 100 * interval.mean)
    if xs:
        ax.plot(xs, means, color=COLORS[arm], lw=2, marker="o", markersize=3, label=arm.upper())
        ax.fill_between(xs, lows, highs, color=COLORS[arm], alpha=0.15)
