r"""Job entry point: `python -m cluster.study --config FILE [--seeds 0,1,2] [--run-dir DIR] [key=value ...]`.

Runs the study (runner.py) and writes its report (report.py); running it again on the same
--run-dir resumes it (finished runs are skipped, a killed run continues from its checkpoint).
`python -m cluster.study report DIR` rebuilds the report from the run directories alone.

    python -m cluster.study --config cluster/configs/study_tiny.yaml --seeds 0,1
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python -m cluster.study --config cluster/configs/study_gp_l.yaml --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from cluster.config import ConfigError


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The study's options: --config, --seeds, --run-dir, --init, --init-per-seed and dotted overrides."""
    parser = argparse.ArgumentParser(prog="python -m cluster.study", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="study file (see cluster/configs/study_*.yaml)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds, e.g. 0,1,2 (default: the file's)")
    parser.add_argument("--run-dir", default=None, help="the study directory (default runs/<config name>)")
    parser.add_argument("--init", default=None, help="reuse this HF policy directory as the init (no SFT warm-up)")
    parser.add_argument("--init-per-seed", action="store_true", help="repeat the SFT init per seed too")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. base.learner.lr=1e-5 rl.run.iterations=8")
    return parser.parse_args(argv)


def study_overrides(args: argparse.Namespace) -> list[str]:
    """The flags as study-file overrides, after the positional ones (so the flags win)."""
    overrides = list(args.overrides)
    if args.seeds is not None:
        overrides.append(f"study.seeds=[{args.seeds}]")
    if args.init is not None:
        overrides.append(f"study.init={args.init}")
    if args.init_per_seed:
        overrides.append("study.init_per_seed=true")
    return overrides


def main(argv: list[str] | None = None) -> int:
    """Run a study, or with `report DIR` rebuild its report; returns the exit status (2: bad input)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:
        return report_main(argv[1:])
    from cluster.preflight import PreflightError
    from cluster.study.config import load_study
    from cluster.study.report import write_report
    from cluster.study.runner import run_study

    args = parse_args(argv)
    try:
        study = load_study(args.config, study_overrides(args))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    study_dir = Path(args.run_dir or Path("runs") / Path(args.config).stem)
    command = shlex.join(["python", "-m", "cluster.study", *argv])
    try:
        run_study(study, study_dir, command=command)
    except (PreflightError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in write_report(study_dir):
        print(f"wrote {path}")
    return 0


def report_main(argv: list[str]) -> int:
    """`report DIR`: rebuild summary.csv, report.md, the plot and TensorBoard scalars from DIR's runs."""
    from cluster.study.report import write_report

    parser = argparse.ArgumentParser(prog="python -m cluster.study report", description=report_main.__doc__)
    parser.add_argument("study_dir", help="the --run-dir of a study")
    args = parser.parse_args(argv)
    try:
        paths = write_report(Path(args.study_dir))
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
