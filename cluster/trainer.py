"""The training loop: optional SFT phase, then RL iterations, periodic evaluation, checkpoints.

The SFT -> RL boundary: before the first RL iteration the trainer calls `learner.begin_rl()` once
(fresh optimizer and LR schedule, as the paper starts RL from the SFT checkpoint) and records the
phase in its state, so a run resumed past the boundary does not reset the optimizer again.

One RL iteration (design.md, "Data flow of one RL iteration"):

    collect   the fleet plays `episodes_per_iteration` episodes on fresh training seeds
    batch     episodes -> samples (GRPO: group-normalised; PPO: GAE over turns with learner values)
    learn     learner.rl_step(samples): ZeRO-3 optimizer steps
    sync      learner rank 0 broadcasts the weights to every replica, writing them to
              RUN_DIR/weights/vN.safetensors as they go (cluster/weight_sync.py)
    log       metrics.jsonl + TensorBoard; evaluation every N iterations; a checkpoint every M

The trainer's own state (`TrainState`: SFT steps done, RL iterations done, phase, policy version)
is saved next to the learner's checkpoint, so `run(resume=True)` continues from the newest
checkpoint's step, phase and version, pushing its weights to the server before the first rollout.
The policy version has one owner, `TrainState.policy_version`: the learner counts none. Training
seeds of iteration i depend only on (run.seed, i), and each episode's sampling seed only on
(run.seed, i, episode index), so a resumed run plays the hands it would have played with the
sampling noise it would have drawn. Training episodes deal env.split_for("train") tasks, evaluation
env.split_for("eval") ones (held out, unless env.split=none).

The trainer reaches the learner, the policy server and the fleet through the typed ports of
cluster/ports.py: `train.build_session` starts the real ones (LearnerGroup, PolicyService,
RolloutFleet) and wires them in; the unit tests pass in-process fakes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from cluster.batch_builder import grpo_samples, ppo_samples, rollout_stats
from cluster.compute import compute_metrics, rollout_tokens, sample_tokens
from cluster.config import TrainConfig, dump_config
from cluster.evaluation import evaluate, variant_metrics
from cluster.metrics import METRICS_FILE, MetricsLogger, trim_metrics
from cluster.ports import FleetPort, LearnerPort, PolicyPort
from cluster.progress import RunProgress
from cluster.rollout import SEED_SPACE, EpisodeRequest
from cluster.weight_files import prune_weight_files, weights_path
from cluster.weight_sync import sync_weights
from envs.seeds import TRAIN_SEEDS

if TYPE_CHECKING:
    from cluster.fleet import CollectResult

STATE_FILE = "trainer_state.json"
CHECKPOINTS = "checkpoints"
POLICY_DIR = "policy"


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of a run: where it happened and the per-variant results."""

    sft_step: int
    iteration: int
    policy_version: int
    results: list[Any]
    """`evaluation.VariantResult` per variant."""

    @property
    def stage(self) -> str:
        """Where in the run it happened, in words: before training, after SFT, after RL iteration N."""
        if self.policy_version == 0:
            return "before training"
        return "after SFT" if self.iteration == 0 else f"after RL iteration {self.iteration}"


@dataclass
class TrainState:
    """Progress of a run; saved in every checkpoint."""

    sft_step: int = 0
    iteration: int = 0
    phase: Literal["sft", "rl"] = "sft"
    """Becomes "rl" when `learner.begin_rl()` runs (the learner's checkpoint records the same boundary)."""
    policy_version: int = 0
    """The version of the weights the server holds: +1 at every SFT push (eval points, the phase's end) and
    after each learned iteration."""
    dropped_episodes: int = 0
    train_tokens: int = 0
    """Tokens the learner trained on in this run (prompt + output per sample, once per PPO epoch)."""
    buffer_tokens: int = 0
    """Prompt + output tokens of every training rollout turn (the paper's D_buffer)."""
    generated_tokens: int = 0
    """Output tokens of every training rollout turn."""


class Trainer:
    """Drives one run through its ports (cluster/ports.py); `sft_samples(n)` returns n SFT demonstrations."""

    def __init__(
        self,
        config: TrainConfig,
        run_dir: Path,
        *,
        learner: LearnerPort,
        policy: PolicyPort,
        fleet: FleetPort,
        sft_samples: Callable[[int], list[Any]],
        say: Callable[[str], None] = print,
    ):
        self.config = config
        self._say = say
        self.run_dir = Path(run_dir)
        self.learner = learner
        self.policy = policy
        self.fleet = fleet
        self._sft_samples = sft_samples
        self.state = TrainState()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        dump_config(config, self.run_dir / "config.yaml")
        self.metrics = MetricsLogger(self.run_dir)
        self._evaluated_version = -1
        self.evals: list[Evaluation] = []
        """Every evaluation of this process, in order."""
        self._progress: RunProgress | None = None
        self._n_parameters: int | None = None
        self._sync_fallbacks = 0  # weight syncs whose broadcast failed and went through the file

    def run(self, *, resume: bool = False) -> TrainState:
        """Evaluation of the start (eval.before_training), SFT phase, RL iterations, final evaluation.

        Returns the final state.
        """
        if resume:
            self.resume()
        if self.config.eval.before_training and self.state.policy_version == 0:
            self.evaluate()  # the starting point: what training is measured against
        with RunProgress(sft_steps=self.config.run.sft_steps, iterations=self.config.run.iterations) as progress:
            self._progress = progress
            progress.update(sft_step=self.state.sft_step, iteration=self.state.iteration)
            self.sft_phase()
            if self.state.iteration < self.config.run.iterations:
                self.begin_rl()
            while self.state.iteration < self.config.run.iterations:
                self.iteration()
            if self._evaluated_version != self.state.policy_version:
                self.evaluate()
        self._progress = None
        # The final policy as a HF directory: `sftrl eval --checkpoint` and `sftrl serve` load it.
        self.learner.export_hf(str(self.run_dir / POLICY_DIR))
        self.metrics.close()
        return self.state

    def resume(self) -> Path | None:
        """Load the newest checkpoint (if any) and push its weights to the server."""
        checkpoint = newest_checkpoint(self.run_dir)
        if checkpoint is None:
            self._say(f"no checkpoint under {self.run_dir / CHECKPOINTS}: starting from the beginning")
            return None
        self.learner.load(str(self.run_dir / CHECKPOINTS))
        self.state = TrainState(**json.loads((checkpoint / STATE_FILE).read_text()))
        dropped = trim_metrics(self.run_dir, sft_step=self.state.sft_step, iteration=self.state.iteration)
        self._sync_weights()
        self._say(
            f"resumed from {checkpoint}: SFT step {self.state.sft_step}, RL iteration "
            f"{self.state.iteration}, policy version {self.state.policy_version} "
            f"({dropped} metric records after it dropped)"
        )
        return checkpoint

    def sft_phase(self) -> None:
        """run.sft_steps steps of SFT on oracle turns, then a weight push, evaluation and a checkpoint.

        Every `eval.every_n_sft_steps` steps within the phase the weights are pushed (a new policy
        version), evaluated and checkpointed (if run.checkpoint_every) too: the SFT curve of a study.
        """
        steps, batch_size = self.config.run.sft_steps, self.config.run.sft_batch_size
        if self.state.sft_step >= steps:
            return
        every = self.config.eval.every_n_sft_steps
        samples = self._sft_samples(steps * batch_size)
        for step in range(self.state.sft_step, steps):
            batch = [samples[(step * batch_size + i) % len(samples)] for i in range(batch_size)]
            timings: dict[str, float] = {}
            with _timed(timings, "time/learn_s"):
                metrics = self.learner.sft_step(batch)
            self.state.sft_step = step + 1
            self.state.train_tokens += sample_tokens(batch)
            self._show_progress()
            self._log({**metrics, **timings}, step=step + 1, phase="sft")
            self._say(
                f"sft {step + 1}/{steps}  loss/sft={metrics.get('loss/sft', float('nan')):.4f}  "
                f"{timings['time/learn_s']:.1f}s"
            )
            if every and self.state.sft_step % every == 0 and self.state.sft_step < steps:
                self._sft_point(evaluate=True)
        self._sft_point(evaluate=self.config.eval.after_sft or bool(every))

    def _sft_point(self, *, evaluate: bool) -> None:
        """Push the SFT weights as a new policy version, evaluate them if asked, checkpoint if configured."""
        self.state.policy_version += 1
        self._sync_weights()
        if evaluate:
            self.evaluate()
        if self.config.run.checkpoint_every:
            self.checkpoint()

    def begin_rl(self) -> None:
        """Cross the SFT -> RL boundary once: the learner's fresh optimizer and LR schedule, phase "rl".

        A no-op when the state is already in the RL phase (resumed from a checkpoint past it).
        """
        if self.state.phase == "rl":
            return
        self.learner.begin_rl()
        self.state.phase = "rl"

    def iteration(self) -> dict[str, float]:
        """One RL iteration; returns (and logs) its metrics."""
        timings: dict[str, float] = {}
        learner_version = self.state.policy_version
        with _timed(timings, "time/rollout_s"):
            collected = self.fleet.collect(self.training_requests(self.state.iteration), self.config.rollout.sampling)
        with _timed(timings, "time/learn_s"):
            # The learner needs a sample (turn) per rank and mini-batch, for PPO's value pass too;
            # with fewer (nearly all episodes lost with crashed actors) the iteration updates
            # nothing and the version stays.
            n_turns = sum(len(ep.turns) for ep in collected.episodes)
            learned = n_turns >= self.config.run.learner_ranks * self.config.learner.mini_batches
            samples = self.build_samples(collected) if learned else []
            learn_metrics = self.learner.rl_step(samples) if learned else {}
        self.state.iteration += 1
        self.state.dropped_episodes += collected.dropped
        self.state.train_tokens += sample_tokens(samples) * self.config.learner.ppo_epochs
        buffer_tokens, generated_tokens = rollout_tokens(collected.episodes)
        self.state.buffer_tokens += buffer_tokens
        self.state.generated_tokens += generated_tokens
        self._show_progress()
        with _timed(timings, "time/weight_sync_s"):
            if learned:
                self.state.policy_version += 1
                self._sync_weights()
        metrics = {
            **rollout_stats(collected.episodes, learner_version=learner_version),
            **_fleet_stats(collected, rollout_s=timings["time/rollout_s"]),
            **learn_metrics,
            **timings,
            "rollout/samples": float(len(samples)),
            "rollout/dropped_total": float(self.state.dropped_episodes),
            "sync/fallbacks_total": float(self._sync_fallbacks),
        }
        self._log(metrics, step=self.state.iteration, phase="rl")
        self._say(
            f"rl {self.state.iteration}/{self.config.run.iterations}  "
            f"reward={metrics.get('rollout/reward_mean', float('nan')):.2f}  "
            f"success={metrics.get('rollout/success', float('nan')):.2f}  "
            f"dropped={collected.dropped}  rollout {timings['time/rollout_s']:.1f}s  "
            f"learn {timings['time/learn_s']:.1f}s  sync {timings['time/weight_sync_s']:.1f}s"
        )
        every_eval, every_ckpt = self.config.eval.every_n_iterations, self.config.run.checkpoint_every
        if every_eval and self.state.iteration % every_eval == 0:
            self.evaluate()
        last = self.state.iteration == self.config.run.iterations
        if every_ckpt and (last or self.state.iteration % every_ckpt == 0):
            self.checkpoint()
        return metrics

    def training_requests(self, iteration: int) -> list[EpisodeRequest]:
        """Episodes of an iteration: groups of `group_size` on seeds drawn from (run.seed, iteration).

        Episode k of the iteration samples with `episode_sampling_seed(run.seed, iteration, k)` and
        deals the tasks of env.split_for("train").
        """
        rollout, run_seed = self.config.rollout, self.config.run.seed
        n_groups = rollout.episodes_per_iteration // rollout.group_size
        rng = np.random.default_rng([run_seed, iteration])
        seeds = rng.choice(len(TRAIN_SEEDS), size=n_groups, replace=False)
        env_seeds = [int(TRAIN_SEEDS[int(s)]) for s in seeds for _ in range(rollout.group_size)]
        return [
            EpisodeRequest(
                seed=env_seed,
                group=iteration * n_groups + index // rollout.group_size,
                variant="id",
                split=self.config.env.split_for("train"),
                sampling_seed=episode_sampling_seed(run_seed, iteration, index),
            )
            for index, env_seed in enumerate(env_seeds)
        ]

    def build_samples(self, collected: CollectResult) -> list[Any]:
        """The learner batch of the collected episodes, per learner.algo."""
        advantage = self.config.advantage
        if self.config.learner.algo == "ppo":
            return ppo_samples(collected.episodes, self.learner.values, gamma=advantage.gamma, lam=advantage.lam)
        return grpo_samples(collected.episodes, scale_by_std=advantage.scale_by_std)

    def evaluate(self) -> dict[str, float]:
        """Evaluate every variant on held-out seeds; logs `eval/<variant>/<metric>`."""
        timings: dict[str, float] = {}
        out_dir = self.run_dir / "eval" / f"v{self.state.policy_version:05d}"
        with _timed(timings, "time/eval_s"):
            results = evaluate(self.fleet, self.config.env, self.config.eval, out_dir=out_dir)
        metrics = {**variant_metrics(results), **timings}
        self._log(metrics, step=self.state.iteration, phase="eval")
        self._evaluated_version = self.state.policy_version
        self.evals.append(Evaluation(self.state.sft_step, self.state.iteration, self.state.policy_version, results))
        self._say(
            "eval  "
            + "  ".join(f"{r.variant}: success={r.success:.2f}" for r in results)
            + f"  {timings['time/eval_s']:.1f}s"
        )
        return metrics

    def checkpoint(self) -> Path:
        """Save the learner (a tag under checkpoints/, `latest` points at it) and the trainer state."""
        tag = Path(self.learner.save(str(self.run_dir / CHECKPOINTS)))
        # Written after the learner's shards, and atomically (a kill mid-write leaves no partial file):
        # a tag without it is incomplete and never resumed.
        partial = tag / f"{STATE_FILE}.partial"
        partial.write_text(json.dumps(asdict(self.state)))
        os.replace(partial, tag / STATE_FILE)
        return tag

    def _log(self, metrics: dict[str, float], *, step: int, phase: str) -> None:
        """Log a metrics row with the run's position (SFT step, RL iteration, version) and compute so far."""
        if self._n_parameters is None:
            self._n_parameters = self.learner.num_parameters()
        compute = compute_metrics(
            n_parameters=self._n_parameters,
            train_tokens=self.config.run.prior_train_tokens + self.state.train_tokens,
            buffer_tokens=self.state.buffer_tokens,
            generated_tokens=self.state.generated_tokens,
        )
        self.metrics.log(
            {**metrics, **compute},
            step=step,
            phase=phase,
            policy_version=self.state.policy_version,
            sft_step=self.state.sft_step,
            iteration=self.state.iteration,
        )

    def _show_progress(self) -> None:
        if self._progress is not None:
            self._progress.update(sft_step=self.state.sft_step, iteration=self.state.iteration)

    def _sync_weights(self) -> None:
        version = self.state.policy_version
        path = weights_path(self.run_dir, version)
        synced = sync_weights(self.learner, self.policy, path=path, version=version, config=self.config.weight_sync)
        self._sync_fallbacks += synced.fell_back
        prune_weight_files(self.run_dir)


def check_fresh_run_dir(run_dir: Path) -> None:
    """Refuse to start a new run where one already wrote metrics or checkpoints (they would mix).

    Raises FileExistsError naming the directory and both fixes.
    """
    used = [name for name in (METRICS_FILE, f"{CHECKPOINTS}/latest") if (Path(run_dir) / name).exists()]
    if used:
        raise FileExistsError(
            f"{run_dir} already holds a run ({', '.join(used)}): pass --resume to continue it, or give a new --run-dir"
        )


def episode_sampling_seed(run_seed: int, iteration: int, episode: int) -> int:
    """The sampling seed of training episode `episode` of `iteration`: a SeedSequence mix in [0, SEED_SPACE).

    Stable across processes (unlike `hash`); episodes of one group get different seeds, so a
    GRPO group still samples different replies on its shared hand.
    """
    (word,) = np.random.SeedSequence([run_seed, iteration, episode]).generate_state(1, dtype=np.uint64)
    return int(word) % SEED_SPACE


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint tag to resume from, or None before the first complete checkpoint.

    That is the tag RUN_DIR/checkpoints/latest names (the learner loads `latest`). If the run was
    killed while saving it (its trainer_state.json is missing), `latest` is pointed back at the
    newest complete tag, so resume never mixes a new learner state with an old trainer state.
    """
    root = Path(run_dir) / CHECKPOINTS
    latest = root / "latest"
    if not latest.is_file():
        return None
    tag = root / latest.read_text().strip()
    if (tag / STATE_FILE).is_file():
        return tag
    complete = sorted(p.parent for p in root.glob(f"*/{STATE_FILE}"))
    if not complete:
        return None
    latest.write_text(complete[-1].name)
    return complete[-1]


def _fleet_stats(collected: CollectResult, *, rollout_s: float) -> dict[str, float]:
    """Dropped episodes, and the share of rollout time the actors spent waiting on generation."""
    walls = collected.actor_wall_s
    # Actors' wall time minus their env time is time spent awaiting the policy server; divided by
    # the driver's rollout time it also charges the driver's fan-out/gather overhead to orchestration.
    share = (sum(walls) - collected.env_s) / (len(walls) * rollout_s) if walls and rollout_s > 0 else 0.0
    tokens = sum(len(t.output_ids) for ep in collected.episodes for t in ep.turns)
    return {
        "rollout/dropped_episodes": float(collected.dropped),
        "rollout/failed_actors": float(collected.failed_actors),
        "rollout/generation_share": share,
        "rollout/env_s": collected.env_s,
        "perf/rollout_tokens_per_s": tokens / rollout_s if rollout_s > 0 else 0.0,
        "perf/episodes_per_s": len(collected.episodes) / rollout_s if rollout_s > 0 else 0.0,
    }


@contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - start
