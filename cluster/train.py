"""Job entry point: `python -m cluster.train --config FILE [--run-dir DIR] [--resume] [key=value ...]`.

On a bare machine it starts Ray itself; under `ray job submit` (RAY_ADDRESS is set) it connects
to that cluster. It then starts the policy server (Ray Serve), the learner ranks (DeepSpeed
ZeRO-3) and the rollout fleet, and runs `trainer.Trainer`: SFT phase, RL iterations, evaluation.
At the end, on an error, Ctrl-C or SIGTERM it stops what it started (`session.ClusterSession`).
Everything the run writes lives under the run directory (default `runs/<config name>`): the
resolved `config.yaml`, `metrics.jsonl`, `tensorboard/`, `eval/`, `checkpoints/`.

    python -m cluster.train --config cluster/configs/tiny.yaml --run-dir runs/tiny run.iterations=3
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python -m cluster.train --config cluster/configs/gp_l_rl.yaml
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.config import ConfigError, TrainConfig, load_config
from cluster.fleet import RolloutFleet
from cluster.policy_service import PolicyService
from cluster.preflight import PreflightError, preflight
from cluster.rollout import RolloutWorker
from cluster.session import ClusterSession
from cluster.trainer import Trainer, TrainState, check_fresh_run_dir
from learner.run_dir import RunDirNotSharedError


@dataclass
class TrainingSession:
    """A wired trainer and the cluster session that holds its parts; `with` it, or call `close()`."""

    trainer: Trainer
    cluster: ClusterSession

    def __enter__(self) -> TrainingSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def release_training(self) -> None:
        """Stop the rollout fleet and the learner ranks; the policy server keeps serving."""
        self.cluster.stop("fleet", "learner")

    def close(self) -> None:
        """Stop everything the session started (Serve and Ray only if this process started Ray)."""
        self.cluster.close()


def local_num_cpus(config: TrainConfig) -> int:
    """Logical CPUs for a local cluster: the machine's, or what the run reserves if that is more.

    Phases alternate (rollout, then learning), so reserving more logical CPUs than cores only lets
    every role be placed; it does not make them compete at the same time.
    """
    reserved = (
        config.serving.num_replicas * config.serving.num_cpus_per_replica
        + config.run.learner_ranks * config.run.learner_resources.get("CPU", 0.0)
        + config.rollout.n_actors * config.rollout.num_cpus_per_actor
    )
    return max(os.cpu_count() or 1, math.ceil(reserved))


def sft_sample_source(config: TrainConfig) -> Callable[[int], list[Any]]:
    """A function n -> at least n SFT samples from oracle episodes on training seeds."""

    def make(n_samples: int) -> list[Any]:
        from cluster.sft_phase import oracle_samples

        return oracle_samples(config.env, config.learner.model, n_samples=n_samples, seed=config.run.seed)

    return make


def build_session(config: TrainConfig, run_dir: Path, *, worker_cls: type = RolloutWorker) -> TrainingSession:
    """Join or start Ray, start the policy server, the learner ranks and the fleet, wire a Trainer.

    Prints how long each part took to start (`ClusterSession.startup_s`; the policy's includes the
    preflight). If a part fails to start (or Ctrl-C comes), the parts started before it are stopped again. The
    learner ranks first check that they see `run_dir` (a marker the driver writes there): one on a
    node without the same storage raises `learner.run_dir.RunDirNotSharedError`, naming the fix.
    """
    from learner.group import LearnerGroup

    cluster = ClusterSession(num_cpus=config.run.num_cpus or local_num_cpus(config))
    with ExitStack() as on_failure:
        on_failure.enter_context(cluster)
        preflight(config)  # every requested resource fits the cluster's nodes, or fail now with the fix
        policy = cluster.started("policy", PolicyService.start(config.serving, http=config.run.serve_http))
        learner = cluster.started(
            "learner",
            LearnerGroup(
                config.run.learner_ranks,
                config.learner,
                resources_per_rank=config.run.learner_resources,
                run_dir=run_dir,  # checkpoints and the exported policy: every rank must see it
            ),
        )
        fleet = cluster.started(
            "fleet", RolloutFleet.launch(config.env, policy.handle, config.rollout, worker_cls=worker_cls)
        )
        trainer = Trainer(
            config, run_dir, learner=learner, policy=policy, fleet=fleet, sft_samples=sft_sample_source(config)
        )
        on_failure.pop_all()  # everything started: from here the TrainingSession stops it
    print("started in " + ", ".join(f"{part} {seconds:.1f} s" for part, seconds in cluster.startup_s.items()))
    return TrainingSession(trainer=trainer, cluster=cluster)


def train(config: TrainConfig, run_dir: Path, *, resume: bool = False) -> TrainState:
    """Run one training job to the end and release what it started; a new run needs a fresh run_dir."""
    if not resume:
        check_fresh_run_dir(run_dir)
    with build_session(config, run_dir) as session:
        return session.trainer.run(resume=resume)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The entry point's options: --config, --run-dir, --resume and dotted overrides."""
    parser = argparse.ArgumentParser(prog="python -m cluster.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="YAML config (see cluster/configs/)")
    parser.add_argument("--run-dir", default=None, help="where the run writes (default runs/<config name>)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --run-dir")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. learner.lr=1e-6")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Train with the options in `argv` (default: the command line); returns the exit status.

    2 for a bad config, a used run directory without --resume, a cluster that cannot host it
    (`cluster.preflight`), or a run directory some learner rank does not see (not on shared storage).
    """
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    run_dir = Path(args.run_dir or Path("runs") / Path(args.config).stem)
    try:
        state = train(config, run_dir, resume=args.resume)
    except (PreflightError, FileExistsError, RunDirNotSharedError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"done: {state.sft_step} SFT steps, {state.iteration} RL iterations, "
        f"policy version {state.policy_version}, run directory {run_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
