"""`sftrl study`: the paper's comparison as one command (same as `python -m cluster.study`).

    sftrl study --config cluster/configs/study_tiny.yaml --seeds 0,1 --run-dir runs/study_tiny
    sftrl study report runs/study_tiny

Every argument goes to `python -m cluster.study` unchanged (`sftrl study --help` lists them).
"""

from __future__ import annotations

import typer


def study(ctx: typer.Context) -> None:
    """Run the SFT-vs-RL study (init, both arms per seed, report); `sftrl study report DIR` rebuilds the report."""
    from cluster.study.__main__ import main

    raise typer.Exit(main(list(ctx.args)))


SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
"""The command takes no options of its own: `--help` and the rest reach cluster.study's parser."""
