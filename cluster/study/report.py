"""A study's results from its run directories alone: summary.csv, report.md, TensorBoard scalars, the plot.

    sftrl study report STUDY_DIR      (also written at the end of every `sftrl study`)

Every evaluation row of every run (metrics.jsonl, `phase: eval`) becomes one `Point` per variant
and metric: its value, binomial standard error, denominator (episodes or trials) and position on
the compute axis. Point 0 of both arms is their init's evaluation; points 1..K are the arm's own.
The report compares the last points: per arm the mean over seeds with a 95% Student-t interval
(stats.py), RL - SFT paired by seed, and the paper's published numbers beside them.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from cluster.config import TASKS
from cluster.metrics import read_metrics
from cluster.study.runner import STUDY_FILE, arm_dir, init_dir
from cluster.study.stats import Interval, binomial_se, t_interval, wilson_interval

SUMMARY_FILE = "summary.csv"
REPORT_FILE = "report.md"

HEADLINE: dict[str, tuple[str, ...]] = {
    "gp-l": ("success", "legal_formula"),
    "gp-vl": ("success", "card_accuracy", "legal_formula"),
    "virl-l": ("step_accuracy", "success"),
    "virl-vl": ("step_accuracy", "success"),
}
"""The metrics reported per task: the paper's first (GP: success within the budget, and card accuracy for
GP-VL; V-IRL: per-step accuracy, route success), then GP's `legal_formula` (ours: the first answer uses
each of the hand's numbers under the variant's rule exactly once), which moves before success does."""

PAPER: dict[tuple[str, str, str], tuple[float, float, float]] = {
    ("gp-l", "rule_ood", "success"): (11.5, 15.0, 3.4),
    ("virl-l", "rule_ood", "step_accuracy"): (80.8, 91.8, 1.3),
    ("gp-vl", "rule_ood", "success"): (11.2, 14.2, 5.6),
    ("virl-vl", "rule_ood", "step_accuracy"): (35.7, 45.0, 2.5),
    ("gp-vl", "visual_ood", "success"): (23.6, 41.2, 13.7),
    ("virl-vl", "visual_ood", "step_accuracy"): (16.7, 77.8, 11.1),
}
"""Chu et al. 2025 (Llama-3.2-11B-Vision, one run each), in percent: (Init, Init -> RL, Init -> SFT)."""


@dataclass(frozen=True)
class Point:
    """One evaluated metric of one variant at one point of a run (a row of summary.csv)."""

    arm: str
    seed: int
    point: int
    variant: str
    metric: str
    value: float
    se: float
    n: int
    gflops: float
    train_tokens: float
    buffer_tokens: float
    sft_step: int
    iteration: int
    policy_version: int


@dataclass(frozen=True)
class StudyLayout:
    """What the report needs to know of a study directory (its study.yaml)."""

    study_dir: Path
    command: str
    task: str
    model: str
    seeds: list[int]
    init_per_seed: bool
    eval_points: int
    episodes_per_variant: int

    @classmethod
    def read(cls, study_dir: Path) -> StudyLayout:
        """Read STUDY_DIR/study.yaml; FileNotFoundError if it is not a study directory."""
        path = Path(study_dir) / STUDY_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; is {study_dir} the --run-dir of a `sftrl study`?")
        held = yaml.safe_load(path.read_text())
        raw = held["study_file"]
        base, plan = raw.get("base") or {}, raw.get("study") or {}
        return cls(
            study_dir=Path(study_dir),
            command=held.get("command", ""),
            task=(base.get("env") or {}).get("task", "gp-l"),
            model=(base.get("learner") or {}).get("model", "tiny"),
            seeds=list(plan.get("seeds", [0])),
            init_per_seed=bool(plan.get("init_per_seed", False)),
            eval_points=int(plan.get("eval_points", 4)),
            episodes_per_variant=int(((base.get("eval") or {}).get("episodes_per_variant")) or 0),
        )

    def init_dir(self, seed: int) -> Path:
        """The run directory of the init of `seed` (runner.init_dir)."""
        return init_dir(self.study_dir, seed, per_seed=self.init_per_seed)


def run_points(run_dir: Path, *, arm: str, seed: int, first_point: int, task: str) -> list[Point]:
    """The evaluation points of one run, numbered from `first_point` in the order they were logged."""
    rows = [r for r in read_metrics(run_dir) if r["phase"] == "eval"]
    points = []
    for index, row in enumerate(rows):
        for variant in TASKS[task].variants:
            for metric in HEADLINE[task]:
                value = row.get(f"eval/{variant}/{metric}")
                if value is None:
                    continue
                denominator = "episodes" if metric == "success" else f"{metric}_trials"
                n = int(row.get(f"eval/{variant}/{denominator}") or 0)
                points.append(
                    Point(
                        arm=arm,
                        seed=seed,
                        point=first_point + index,
                        variant=variant,
                        metric=metric,
                        value=value,
                        se=binomial_se(value, n),
                        n=n,
                        gflops=row.get("compute/gflops") or 0.0,
                        train_tokens=row.get("compute/train_tokens") or 0.0,
                        buffer_tokens=row.get("compute/buffer_tokens") or 0.0,
                        sft_step=row["sft_step"],
                        iteration=row["iteration"],
                        policy_version=row["policy_version"],
                    )
                )
    return points


def collect_points(layout: StudyLayout) -> list[Point]:
    """Every finished or partial run's points: the init(s) as arm 'init', then each arm's (point 0 = its init)."""
    points: list[Point] = []
    init_seeds = layout.seeds if layout.init_per_seed else layout.seeds[:1]
    for seed in init_seeds:
        if (layout.init_dir(seed) / "metrics.jsonl").is_file():
            points += run_points(layout.init_dir(seed), arm="init", seed=seed, first_point=0, task=layout.task)
    for seed in layout.seeds:
        init_seed = seed if layout.init_per_seed else layout.seeds[0]
        init_final = _last_points([p for p in points if p.arm == "init" and p.seed == init_seed])
        for arm in ("sft", "rl"):
            run_dir = arm_dir(layout.study_dir, arm, seed)
            if not (run_dir / "metrics.jsonl").is_file():
                continue
            points += [_as_start(p, arm=arm, seed=seed) for p in init_final]
            points += run_points(run_dir, arm=arm, seed=seed, first_point=1, task=layout.task)
    return points


def write_report(study_dir: Path) -> list[Path]:
    """Write summary.csv, report.md, plots/study.png and TensorBoard scalars; returns the files written.

    FileNotFoundError if STUDY_DIR is not a study directory; ValueError if no run has evaluated yet.
    """
    from cluster.study.figures import plot_study

    layout = StudyLayout.read(study_dir)
    points = collect_points(layout)
    if not points:
        raise ValueError(f"no run under {study_dir} has logged an evaluation yet; run the study first")
    summary = write_summary(points, Path(study_dir) / SUMMARY_FILE)
    report = Path(study_dir) / REPORT_FILE
    report.write_text(render_report(layout, points))
    figure = plot_study(layout, points, Path(study_dir) / "plots" / "study.png")
    write_tensorboard(points, Path(study_dir) / "tensorboard")
    return [summary, report, figure]


def write_summary(points: list[Point], path: Path) -> Path:
    """One row per arm, seed, point, variant and metric."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(points[0])))
        writer.writeheader()
        writer.writerows(asdict(p) for p in points)
    return path


def write_tensorboard(points: list[Point], log_dir: Path) -> None:
    """`<arm>/<variant>/<metric>/seed<S>` per point, and `.../mean` over seeds, against the point index."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(log_dir))
    by_key: dict[tuple[str, str, str, int], list[float]] = defaultdict(list)
    for p in points:
        writer.add_scalar(f"{p.arm}/{p.variant}/{p.metric}/seed{p.seed}", p.value, p.point)
        by_key[(p.arm, p.variant, p.metric, p.point)].append(p.value)
    for (arm, variant, metric, point), values in sorted(by_key.items()):
        writer.add_scalar(f"{arm}/{variant}/{metric}/mean", sum(values) / len(values), point)
    writer.close()


def final_values(points: list[Point], arm: str, variant: str, metric: str) -> dict[int, Point]:
    """Seed -> the last point of `arm` for a variant and metric."""
    last: dict[int, Point] = {}
    for p in points:
        if (p.arm, p.variant, p.metric) == (arm, variant, metric) and p.point >= last.get(p.seed, p).point:
            last[p.seed] = p
    return last


def render_report(layout: StudyLayout, points: list[Point]) -> str:
    """report.md: the paper's table shape (Init -> RL / Init -> SFT, ID and OOD) with intervals."""
    seeds = sorted({p.seed for p in points if p.arm != "init"})
    lines = [
        f"# Study: {layout.task} on `{layout.model}`",
        "",
        f"Command: `{layout.command}`" if layout.command else "",
        "",
        f"Seeds {', '.join(map(str, seeds)) or '-'} (each: an SFT arm and an RL arm from the same init, "
        f"{'one init per seed' if layout.init_per_seed else 'one shared init'}); {layout.eval_points} "
        f"evaluation points per arm; {layout.episodes_per_variant} held-out episodes per variant and point.",
        "",
        "Cells: the last evaluation point of each arm. With several seeds, the mean over seeds and its 95% "
        "Student-t interval [mean +- t(0.975, n-1) s/sqrt(n)]; with one value, that value and its 95% "
        "Wilson interval over its n episodes (or steps). RL - SFT is paired by seed. Values in %.",
        "",
        "| variant | metric | Init | Init -> RL | Init -> SFT | RL - SFT | paper: Init / -> RL / -> SFT |",
        "|---|---|---|---|---|---|---|",
    ]
    readings = []
    for variant in TASKS[layout.task].variants:
        for metric in HEADLINE[layout.task]:
            init = _cell(final_values(points, "init", variant, metric))
            rl_by_seed = final_values(points, "rl", variant, metric)
            sft_by_seed = final_values(points, "sft", variant, metric)
            paired = [rl_by_seed[s].value - sft_by_seed[s].value for s in rl_by_seed if s in sft_by_seed]
            difference = t_interval(paired)
            paper = PAPER.get((layout.task, variant, metric))
            lines.append(
                f"| {variant} | {metric} | {init} | {_cell(rl_by_seed)} | {_cell(sft_by_seed)} | "
                f"{_fmt(difference)} | {' / '.join(f'{v:.1f}' for v in paper) if paper else '-'} |"
            )
            if variant != "id" and paired:
                readings.append(_reading(variant, metric, difference))
    lines += ["", "## Reading", ""] + [f"- {r}" for r in readings] + ["", "## Per seed (last point)", ""]
    lines += ["| seed | variant | metric | Init -> RL | Init -> SFT | GFLOPs RL / SFT |", "|---|---|---|---|---|---|"]
    for seed in seeds:
        for variant in TASKS[layout.task].variants:
            for metric in HEADLINE[layout.task]:
                rl = final_values(points, "rl", variant, metric).get(seed)
                sft = final_values(points, "sft", variant, metric).get(seed)
                lines.append(
                    f"| {seed} | {variant} | {metric} | {_point(rl)} | {_point(sft)} | {_gflops(rl)} / {_gflops(sft)} |"
                )
    lines += ["", "Every point: `summary.csv`; curves against GFLOPs: `plots/study.png`.", ""]
    return "\n".join(lines)


def _reading(variant: str, metric: str, difference: Interval) -> str:
    """One honest sentence on RL - SFT out of distribution."""
    head = f"{variant} {metric}: RL - SFT = {_fmt(difference)} percentage points"
    if difference.n < 2:
        return head + "; one seed gives no interval, so no difference is resolved."
    if difference.low > 0:
        return head + "; the interval excludes 0: RL ahead of SFT, as in the paper."
    if difference.high < 0:
        return head + "; the interval excludes 0: SFT ahead of RL, the reverse of the paper."
    return head + "; the interval includes 0: no difference resolved at this budget."


def _cell(by_seed: dict[int, Point]) -> str:
    """Mean [95% t interval] over seeds, or one value [95% Wilson interval]."""
    if not by_seed:
        return "-"
    if len(by_seed) == 1:
        return _point(next(iter(by_seed.values())))
    return _fmt(t_interval([p.value for p in by_seed.values()]))


def _point(p: Point | None) -> str:
    if p is None:
        return "-"
    low, high = wilson_interval(p.value, p.n)
    if math.isnan(low):
        return f"{100 * p.value:.1f}"
    unit = "episodes" if p.metric == "success" else "trials"
    return f"{100 * p.value:.1f} [{100 * low:.1f}, {100 * high:.1f}] ({p.n} {unit})"


def _fmt(interval: Interval) -> str:
    if interval.n == 0:
        return "-"
    if interval.n < 2:
        return f"{100 * interval.mean:.1f}"
    return f"{100 * interval.mean:.1f} [{100 * interval.low:.1f}, {100 * interval.high:.1f}] ({interval.n} seeds)"


def _gflops(p: Point | None) -> str:
    return "-" if p is None else f"{p.gflops:.3g}"


def _last_points(points: list[Point]) -> list[Point]:
    """The points of a run's last evaluation."""
    if not points:
        return []
    last = max(p.point for p in points)
    return [p for p in points if p.point == last]


def _as_start(p: Point, *, arm: str, seed: int) -> Point:
    """An init point as point 0 of an arm."""
    return Point(**{**asdict(p), "arm": arm, "seed": seed, "point": 0})
