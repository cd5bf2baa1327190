"""`sftrl train`, `sftrl eval`, `sftrl plot`: the training driver from the command line.

    sftrl train --config cluster/configs/tiny.yaml --run-dir runs/tiny learner.lr=1e-4
    sftrl train --config cluster/configs/tiny.yaml --run-dir runs/tiny --resume run.iterations=4
    sftrl eval --checkpoint runs/tiny/policy --task gp-l --episodes 32
    sftrl plot runs/tiny

`train` is `python -m cluster.train`; `eval` serves a saved policy (a run's `policy/` directory,
any HF directory, or a built-in model name) and scores it on every variant of the task on held-out
seeds; `plot` draws the run's curves to `RUN_DIR/plots/*.png`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from cluster.config import TASKS

app = typer.Typer()


@app.command("train")
def train(
    config: Path = typer.Option(..., "--config", help="YAML config (see cluster/configs/)"),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="where the run writes (default runs/<config name>)"),
    resume: bool = typer.Option(False, "--resume", help="continue from the newest checkpoint in --run-dir"),
    overrides: list[str] | None = typer.Argument(None, help="dotted overrides, e.g. learner.lr=1e-6"),
) -> None:
    """Train: SFT phase, RL iterations, evaluation (same as `python -m cluster.train`)."""
    from cluster.train import main

    argv = ["--config", str(config)] + (["--run-dir", str(run_dir)] if run_dir else [])
    argv += ["--resume"] * resume + list(overrides or [])
    raise typer.Exit(main(argv))


@app.command("eval")
def evaluate(
    checkpoint: str = typer.Option(
        ..., "--checkpoint", help="a run's policy/ directory, a HF directory or a model name"
    ),
    task: str = typer.Option(..., "--task", help=f"one of {', '.join(TASKS)}"),
    episodes: int = typer.Option(32, "--episodes", min=1, help="episodes per variant"),
    sampled: bool = typer.Option(False, "--sampled", help="sample (temperature 1) instead of greedy decoding"),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1, help="token budget per answer"),
    actors: int = typer.Option(2, "--actors", min=1, help="rollout actors"),
    out: Path | None = typer.Option(None, "--out", help="output folder (default eval/<task>)"),
) -> None:
    """Evaluate a saved policy on every variant of a task (id, rule_ood, visual_ood for VL)."""
    from rich.console import Console

    from cluster.config import EnvConfig, EvalConfig, RolloutConfig, SamplingConfig
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
        serving=ServingConfig(num_cpus_per_replica=1.0),
        out_dir=out_dir,
    )
    Console().print(render_table(results, title=f"{task}: {checkpoint}"))
    typer.echo(f"episodes and summary.csv in {out_dir}")


@app.command("plot")
def plot(run_dir: Path = typer.Argument(..., help="a run directory of `sftrl train`")) -> None:
    """Draw a run's metrics to RUN_DIR/plots/*.png."""
    from cluster.plot import plot_run

    try:
        paths = plot_run(run_dir)
    except (FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    for path in paths:
        typer.echo(str(path))
