"""Training curves from a run directory: `sftrl plot RUN_DIR` -> `RUN_DIR/plots/*.png`.

Reads `metrics.jsonl` (see metrics.py) and draws one PNG per namespace (`rollout`, `eval`, `loss`,
`time`, `perf`, ...), one line per key, against the step, with matplotlib's Agg backend (no
display needed). SFT-phase records are drawn in `sft.png` against the SFT step.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from cluster.metrics import read_metrics

_META = {"step", "phase", "policy_version", "sft_step", "iteration", "wall_time"}


def plot_run(run_dir: Path, *, out_dir: Path | None = None) -> list[Path]:
    """Write the PNGs and return their paths; ValueError if the run logged nothing plottable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(run_dir)
    panels = _panels(records)
    if not panels:
        raise ValueError(f"{run_dir}/metrics.jsonl holds no numeric metrics to plot; train first")
    out_dir = Path(out_dir or Path(run_dir) / "plots")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, series in sorted(panels.items()):
        path = out_dir / f"{name}.png"
        _draw_panel(plt, name, series, path=path)
        written.append(path)
    return written


def _draw_panel(plt: Any, name: str, series: dict[str, list[tuple[int, float]]], *, path: Path) -> None:
    """One figure per namespace, one small chart per key (each with its own y scale)."""
    from matplotlib.ticker import MaxNLocator

    keys = sorted(series)
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):  # a grid may have spare axes
        xs, ys = zip(*series[key], strict=True)
        ax.plot(xs, ys, marker="o", markersize=3)
        ax.set_title(key, fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.supxlabel("SFT step" if name == "sft" else "RL iteration", fontsize=9)
    fig.suptitle(name)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _panels(records: list[dict[str, Any]]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Panel name -> key -> [(step, value)]: SFT records in 'sft', others by key namespace."""
    panels: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        for key, value in record.items():
            if key in _META or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            panel = "sft" if record.get("phase") == "sft" else key.split("/", 1)[0]
            panels[panel][key].append((record["step"], value))
    return panels
