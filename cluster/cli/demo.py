"""`make demo`: train SmolLM2-135M on GP-L, compare id vs rule_ood, then serve it until Ctrl-C.

The run is an SFT warm-up, then GRPO; the tables compare id vs rule_ood on held-out hands, the
plots draw the curves, and the trained policy is served on 127.0.0.1:8000 until Ctrl-C.

    python -m cluster.cli.demo [--config cluster/configs/demo.yaml] [--run-dir runs/demo] [--no-serve]
                           [key=value ...]          # e.g. serving.port=8001 run.iterations=1

Everything runs on this machine: a local Ray cluster, one Serve replica, one DeepSpeed rank, two
rollout actors. Once trained, the learner and the fleet are stopped while the server keeps serving;
Ctrl-C or SIGTERM stops the rest. The run directory holds the metrics, evaluation files, plots and
final policy.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from rich.console import Console

from cluster.cli.serve import CURL_AUTH, example_curl
from cluster.config import CONFIG_DIR, TrainConfig, load_config
from cluster.evaluation import eval_requests, render_table
from cluster.plot import plot_run
from cluster.study.stats import wilson_interval
from cluster.train import TrainingSession, build_session
from cluster.trainer import Evaluation


def example_request(config: TrainConfig) -> dict:
    """An OpenAI chat request holding a held-out rule_ood hand of the demo's task."""
    split = config.env.split_for("eval")
    env = config.env.make("rule_ood", split)
    obs, _ = env.reset(seed=eval_requests("rule_ood", 1, split=split)[0].seed)
    return {
        "model": config.serving.model,
        "messages": obs["messages"],
        "temperature": 0,
        "max_tokens": config.eval.sampling.max_new_tokens,
    }


def show_serving(config: TrainConfig, run_dir: Path, console: Console) -> None:
    """Write the example request, ask the server once, print the curl line and the reply."""
    import httpx

    request = example_request(config)
    request_path = run_dir / "example_request.json"
    request_path.write_text(json.dumps(request, indent=1))
    base = f"http://{config.serving.host}:{config.serving.port}"
    headers = {"Authorization": f"Bearer {config.serving.api_key.get_secret_value()}"} if config.serving.api_key else {}
    reply = httpx.post(f"{base}/v1/chat/completions", json=request, headers=headers, timeout=120).json()
    console.print(f"\n[bold]The trained policy is served at {base}[/bold] (OpenAI-compatible). Try:")
    with_key = config.serving.api_key is not None
    console.print("  " + example_curl(base, with_key=with_key, data=f"@{request_path}"), soft_wrap=True, markup=False)
    auth = CURL_AUTH if with_key else ""
    console.print(f"  curl -s {base}/v1/policy{auth}", soft_wrap=True, markup=False)
    console.print("Its answer to that request (a rule_ood hand it never saw):")
    console.print("  " + reply["choices"][0]["message"]["content"], soft_wrap=True, markup=False)


def learning_line(evals: list[Evaluation]) -> str:
    """One line: the in-distribution rate that moves first (legal formulas on GP, step accuracy on V-IRL) per stage."""
    first = evals[0].results[0]
    metric = next(m for m in ("legal_formula", "step_accuracy", "success") if getattr(first, m) is not None)
    stages = []
    for evaluation in evals:
        result = next(r for r in evaluation.results if r.variant == "id")
        value = getattr(result, metric)
        trials = getattr(result, f"{metric}_trials", None) or result.episodes
        low, high = wilson_interval(value, trials)
        stages.append(f"{100 * value:.0f}% [{100 * low:.0f}, {100 * high:.0f}] {evaluation.stage}")
    return f"in-distribution {metric.replace('_', ' ')} (95% Wilson interval): " + " -> ".join(stages)


def run_demo(session: TrainingSession, run_dir: Path, *, serve: bool, console: Console) -> None:
    """Train, print the evaluation tables and plots, then (with `serve`) serve until interrupted."""
    config = session.trainer.config
    start = time.perf_counter()
    state = session.trainer.run()
    console.print(f"trained in {time.perf_counter() - start:.0f}s: policy version {state.policy_version}")
    for evaluation in session.trainer.evals:
        title = f"{config.env.task} {evaluation.stage}, held-out hands: in-distribution vs rule OOD"
        console.print(render_table(evaluation.results, title=title))
    console.print(learning_line(session.trainer.evals))
    for path in plot_run(run_dir):
        console.print(f"plot: {path}")
    if not serve:
        return
    session.release_training()
    show_serving(config, run_dir, console)
    console.print("\nServing until Ctrl-C.")
    while True:
        time.sleep(3600)


def main(argv: list[str] | None = None) -> int:
    """Run the demo with the options in `argv` (default: the command line); returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m cluster.cli.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIG_DIR / "demo.yaml"), help="YAML config")
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=Path("runs/demo"),
        help="where the run writes (a previous demo there is replaced)",
    )
    parser.add_argument("--no-serve", action="store_true", help="stop after training, evaluation and plots")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. serving.port=8001")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    console = Console()
    config = load_config(args.config, [*args.overrides, f"run.serve_http={not args.no_serve}"])
    console.print(
        f"[bold]sftrl demo[/bold]: {config.learner.model} on {config.env.task}, "
        f"{config.run.sft_steps} SFT steps then {config.run.iterations} {config.learner.algo.upper()} "
        f"iterations; run directory {args.run_dir}"
    )
    if args.run_dir.exists():  # each demo is a fresh run: metrics of two demos must not mix
        console.print(f"replacing the previous demo run in {args.run_dir}")
        shutil.rmtree(args.run_dir)
    with build_session(config, args.run_dir) as session:
        try:
            run_demo(session, args.run_dir, serve=not args.no_serve, console=console)
        except KeyboardInterrupt:
            console.print("stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
