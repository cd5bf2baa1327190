"""`sftrl train`, `sftrl eval`, `sftrl plot`: the training driver from the command line.

    sftrl train --config cluster/configs/tiny.yaml --run-dir runs/tiny learner.lr=1e-4
    sftrl train --config cluster/configs/tiny.yaml --run-dir runs/tiny --resume run.iterations=4
    sftrl eval --checkpoint runs/tiny/policy --task gp-l --episodes 32
    sftrl plot runs/tiny

`train` is `python -m cluster.train`; `eval` serves a saved policy (a run's `policy/` directory,
any HF directory, or a built-in model name) and scores it on every variant of the task on held-out
seeds (its defaults are those of `EvalConfig`, `SamplingConfig` and `RolloutConfig`); `plot` draws
the run's curves to `RUN_DIR/plots/*.png`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cluster.config import TASKS, EvalConfig, RolloutConfig, SamplingConfig

app = typer.Typer()

_EPISODES = EvalConfig.model_fields["episodes_per_variant"].default
_GREEDY = EvalConfig.model_fields["greedy"].default
_TEMPERATURE = SamplingConfig.model_fields["temperature"].default
_MAX_NEW_TOKENS = SamplingConfig.model_fields["max_new_tokens"].default
_ACTORS = RolloutConfig.model_fields["n_actors"].default


@app.command("train")
def train(
    config: Annotated[Path, typer.Option("--config", help="YAML config (see cluster/configs/)")],
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="where the run writes (default runs/<config name>)")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue from the newest checkpoint in --run-dir")] = False,
    overrides: Annotated[list[str] | None, typer.Argument(help="dotted overrides, e.g. learner.lr=1e-6")] = None,
) -> None:
    """Train: SFT phase, RL iterations, evaluation (same as `python -m cluster.train`)."""
    from cluster.train import main

    argv = ["--config", str(config)] + (["--run-dir", str(run_dir)] if run_dir else [])
    argv += ["--resume"] * resume + list(overrides or [])
    raise typer.Exit(main(argv))


@app.command("eval")
def evaluate(
    checkpoint: Annotated[
        str, typer.Option("--checkpoint", help="a run's policy/ directory, a HF directory or a model name")
    ],
    task: Annotated[str, typer.Option("--task", help=f"one of {', '.join(TASKS)}")],
    episodes: Annotated[int, typer.Option("--episodes", min=1, help="episodes per variant")] = _EPISODES,
    sampled: Annotated[
        bool, typer.Option("--sampled", help=f"sample (temperature {_TEMPERATURE:g}) instead of greedy decoding")
    ] = not _GREEDY,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", min=1, help="token budget per answer")
    ] = _MAX_NEW_TOKENS,
    actors: Annotated[int, typer.Option("--actors", min=1, help="rollout actors")] = _ACTORS,
    out: Annotated[Path | None, typer.Option("--out", help="output folder (default eval/<task>)")] = None,
) -> None:
    """Evaluate a saved policy on every variant of a task (id, rule_ood, visual_ood for VL)."""
    from rich.console import Console

    from cluster.config import EnvConfig
    from cluster.evaluation import evaluate_checkpoint, render_table
    from serving.config import ServingConfig

    if task not in TASKS:
        raise typer.BadParameter(f"unknown task {task!r}; choose one of {', '.join(TASKS)}", param_hint="--task")
    out_dir = out or Path("eval") / task
    eval_config = EvalConfig(
        episodes_per_variant=episodes, greedy=not sampled, sampling=SamplingConfig(max_new_tokens=max_new_tokens)
    )
    results = evaluate_checkpoint(
        checkpoint,
        EnvConfig(task=task),
        eval_config,
        rollout=RolloutConfig(n_actors=actors, num_cpus_per_actor=0.1),
        serving=ServingConfig(),
        out_dir=out_dir,
    )
    Console().print(render_table(results, title=f"{task}: {checkpoint}"))
    typer.echo(f"episodes and summary.csv in {out_dir}")


@app.command("plot")
def plot(run_dir: Annotated[Path, typer.Argument(help="a run directory of `sftrl train`")]) -> None:
    """Draw a run's metrics to RUN_DIR/plots/*.png."""
    from cluster.plot import plot_run

    try:
        paths = plot_run(run_dir)
    except (FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    for path in paths:
        typer.echo(str(path))
