"""Benchmark: an sftrl RL iteration against TRL's `GRPOTrainer` on the same work, on this machine (issue 16).

Settings (issue 16): SmolLM2-135M fp32, GP-L single-turn (`env.kwargs.max_attempts=1`), GRPO, 2 hands
x a group of 4 = 8 completions per iteration, 64 new tokens, temperature 1.0, lr 1e-5, no KL, 1
learner rank, 1 Serve replica, 1 rollout actor, no SFT. Both sides play the same hands: the seeds of
`Trainer.training_requests(i)` for iterations 0-3, whose first observation (`env.reset(seed)`) is
TRL's conversational prompt; TRL's reward function scores each completion with the env itself
(`env.reset(seed)` then `env.step(text)`: the verifier parses and judges, model text is never
evaluated). TRL runs as shipped apart from the settings above: one process, HF `generate`
(`use_vllm=False`), fp32 on CPU, `gradient_checkpointing=False` (sftrl does not recompute either);
sftrl runs `cluster/configs/demo.yaml` with the overrides in `SINGLE_TURN`, through its own driver
(`build_session`, `begin_rl`, `trainer.iteration()`).

Each side runs in a fresh subprocess (this file as a script), alternating TRL, sftrl, TRL, sftrl
over `SFTRL_BENCH_ROUNDS` rounds (default 2; the issue used 4). A sampler in this process (process_tree.py) reads
the child's whole process tree (Ray's GCS, raylet and workers are its descendants) every 0.25 s
with psutil. Printed per phase (rollout = generation and scoring, learn, weight sync, the whole
iteration): the median seconds of iterations 2-4 over the rounds, the ratio sftrl/TRL and the CPU
utilisation (CPU-seconds of the tree / (cores x wall), pooled over those iterations); start-up +
teardown (the child's wall time outside its 4 iterations); the peak of the tree's summed RSS, and
per process role (driver, learner rank, Serve replica, ... named by command line / Ray actor name).

`demo` runs the demo's own config (multi-turn: 2 attempts per hand, 2 actors, no SFT) on sftrl
alone. TRL 1.16 has no equivalent to run as shipped: its `environment_factory` is tool calling (the
env's methods as tools, which SmolLM2's chat template does not offer), and its `rollout_func` with an
`env_mask` leaves the multi-turn generation loop to the user (TRL's examples drive vLLM) and trains one
concatenated sequence per episode, where sftrl trains each turn on its own prompt.

Timings are wall clock on a shared machine: nothing is asserted about them, and each side's line
says how many cores other processes kept busy during its iterations (TRL's two torch threads slow
down far more than their share when the cores are oversubscribed). The children build DeepSpeed's
JIT ops into `TORCH_EXTENSIONS_DIR` (default: a folder of this bench under the temp dir), so a
neighbour's build with other flags does not turn sftrl's start-up into minutes of compiling; a
start-up that built one is reported.

    pip install -e '.[bench]'   # TRL (trl==1.16.0), a bench-only extra
    .venv/bin/python -m pytest tests/bench/bench_vs_trl.py -s -p no:cacheprovider -k single_turn
    SFTRL_BENCH_MODEL=tiny SFTRL_BENCH_ROUNDS=1 .venv/bin/python -m pytest tests/bench/bench_vs_trl.py -s

`SFTRL_BENCH_MODEL=tiny` swaps in the tiny random model (seconds per iteration) to check the
wiring; its figures mean nothing.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import psutil
import pytest
from process_tree import COMPILER, TreeSampler, TreeSamples
from transformers import TrainerCallback

if TYPE_CHECKING:
    from cluster.config import TrainConfig

MODEL = os.environ.get("SFTRL_BENCH_MODEL", "smollm2-135m")
ROUNDS = int(os.environ.get("SFTRL_BENCH_ROUNDS", "2"))
ITERATIONS = 4
MEASURED = slice(1, ITERATIONS)  # iterations 2-4: the first one includes warm-up
PHASES = ("rollout", "learn", "weight_sync")
SAMPLE_INTERVAL_S = 0.25
ROOT = Path(__file__).resolve().parents[2]
TORCH_EXTENSIONS_DIR = Path(tempfile.gettempdir()) / "sftrl-bench-torch-extensions"
"""DeepSpeed's JIT ops for the children, built once: a shared ~/.cache/torch_extensions is rebuilt whenever a
neighbour's build with other flags replaced it (minutes of compiling inside sftrl's start-up)."""

COMMON = [f"learner.model={MODEL}", "run.sft_steps=0", f"run.iterations={ITERATIONS}", "run.checkpoint_every=0"]
SINGLE_TURN = COMMON + [
    "env.task=gp-l",
    "env.kwargs={max_attempts: 1}",
    "rollout.episodes_per_iteration=8",
    "rollout.group_size=4",
    "rollout.n_actors=1",
    "rollout.sampling.temperature=1.0",
    "rollout.sampling.top_p=1.0",
    "rollout.sampling.max_new_tokens=64",
    "learner.algo=grpo",
    "learner.lr=1e-5",
    "learner.kl_mode=none",
    "run.learner_ranks=1",
    "serving.num_replicas=1",
]
SETTINGS = {"single_turn": SINGLE_TURN, "demo": COMMON}
"""Overrides of cluster/configs/demo.yaml per benchmarked setting."""

BUILD_CPU_S = 30.0  # more toolchain CPU-seconds than this: an op was built, not just probed


def bench_config(setting: str) -> TrainConfig:
    """The sftrl TrainConfig of a setting: demo.yaml plus its overrides."""
    from cluster.config import CONFIG_DIR, load_config

    return load_config(CONFIG_DIR / "demo.yaml", SETTINGS[setting])


def training_seeds(config: TrainConfig) -> list[list[int]]:
    """Per iteration, the env seeds sftrl's trainer plays (one per episode, a group's members share it)."""
    from cluster.trainer import Trainer

    # training_requests reads only self.config: call it unbound rather than copy how seeds are drawn.
    trainer = SimpleNamespace(config=config)
    return [[request.seed for request in Trainer.training_requests(trainer, i)] for i in range(ITERATIONS)]


# --- the children: one side each, writing its iteration timings as JSON ---------------------------------


def run_sftrl(setting: str, run_dir: Path) -> list[dict]:
    """Run sftrl's driver on the setting: build the session, cross into RL, time ITERATIONS iterations, close."""
    from cluster.train import build_session

    session = build_session(bench_config(setting), run_dir)
    records = []
    try:
        session.trainer.begin_rl()  # what Trainer.run does before the first iteration
        for _ in range(ITERATIONS):
            start = time.time()
            row = session.trainer.iteration()
            end, at, phases = time.time(), start, {}
            for phase in PHASES:  # the trainer runs them one after another, in this order
                phases[phase] = (at, at + row[f"time/{phase}_s"])
                at = phases[phase][1]
            records.append({"start": start, "end": end, "phases": phases, "tokens": row["rollout/tokens_generated"]})
    finally:
        session.close()
    return records


def run_trl(run_dir: Path) -> list[dict]:
    """TRL's GRPOTrainer on the single-turn setting's hands; times each optimizer step and its generation."""
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from learner.models import model_dir

    config = bench_config("single_turn")
    env = config.env.make("id", config.env.split_for("train"))
    group = config.rollout.group_size
    rows = []
    for seeds in training_seeds(config):
        for env_seed in seeds[::group]:  # one row per hand: TRL repeats it num_generations times
            obs, _ = env.reset(seed=env_seed)
            rows.append({"prompt": obs["messages"], "seed": env_seed})

    def general_points(completions: list, seed: list[int], **_: object) -> list[float]:
        """The env's reward of each completion on its hand: the verifier judges the text."""
        rewards = []
        for completion, env_seed in zip(completions, seed, strict=True):
            env.reset(seed=int(env_seed))
            text = completion if isinstance(completion, str) else completion[-1]["content"]
            rewards.append(float(env.step(text)[1]))
        return rewards

    sampling = config.rollout.sampling
    args = GRPOConfig(
        output_dir=str(run_dir),
        use_cpu=True,
        bf16=False,
        model_init_kwargs={"dtype": torch.float32},
        gradient_checkpointing=False,
        use_vllm=False,
        per_device_train_batch_size=config.rollout.episodes_per_iteration,
        num_generations=group,
        max_completion_length=sampling.max_new_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        learning_rate=config.learner.lr,
        lr_scheduler_type="constant",
        beta=0.0,
        max_steps=ITERATIONS,
        shuffle_dataset=False,
        seed=config.run.seed,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    timer = TrlTimer()
    trainer = GRPOTrainer(
        model=str(model_dir(config.learner.model)),
        reward_funcs=general_points,
        args=args,
        train_dataset=Dataset.from_list(rows),
        callbacks=[timer],
    )
    generate_and_score = trainer._generate_and_score_completions

    def timed_generate_and_score(inputs):
        start = time.time()
        batch = generate_and_score(inputs)
        timer.rollouts.append((start, time.time(), int(batch["completion_mask"].sum())))
        return batch

    # Rollout boundary: generation, rewards and advantages of one step (grpo_trainer.py, _prepare_inputs).
    trainer._generate_and_score_completions = timed_generate_and_score
    trainer.train()
    return timer.records()


class TrlTimer(TrainerCallback):
    """Records each optimizer step's wall-clock window, and (filled by the wrapper in run_trl) its rollout's."""

    def __init__(self):
        self.steps: list[tuple[float, float]] = []
        self.rollouts: list[tuple[float, float, int]] = []
        self._begin = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        """A step starts: its generation and train step follow (transformers' _run_epoch)."""
        self._begin = time.time()

    def on_step_end(self, args, state, control, **kwargs):
        """The optimizer step and the LR schedule's step are done."""
        self.steps.append((self._begin, time.time()))

    def records(self) -> list[dict]:
        """Per step: the rollout window, the rest of the step as learn, no weight sync (one process)."""
        out = []
        for (start, end), (r_start, r_end, tokens) in zip(self.steps, self.rollouts, strict=True):
            phases = {"rollout": (r_start, r_end), "learn": (r_end, end), "weight_sync": (end, end)}
            out.append({"start": start, "end": end, "phases": phases, "tokens": tokens})
        return out


def child_main(side: str, setting: str, out: str, run_dir: str) -> None:
    """Entry point of a child process: run one side, write its iteration records to `out`."""
    records = run_trl(Path(run_dir)) if side == "trl" else run_sftrl(setting, Path(run_dir))
    Path(out).write_text(json.dumps(records))


# --- the parent: runs the children, samples their process trees, prints the tables ----------------------


@dataclass
class SideRun:
    """One child run: its iteration records, its process tree's samples, when it was spawned and exited."""

    side: str
    records: list[dict]
    samples: TreeSamples
    spawned: float
    exited: float

    @property
    def startup_s(self) -> float:
        """From spawning the child to its first iteration: imports, model load, Ray, Serve, DeepSpeed."""
        return self.records[0]["start"] - self.spawned

    @property
    def teardown_s(self) -> float:
        """From the end of the last iteration to the child's exit."""
        return self.exited - self.records[-1]["end"]

    @property
    def compile_s(self) -> float:
        """CPU-seconds of the C++ toolchain in the tree: a DeepSpeed JIT op build (minutes) or its probes."""
        return self.samples.role_cpu_s.get(COMPILER, 0.0)


def run_side(side: str, setting: str, work: Path) -> SideRun:
    """Run one side in a fresh subprocess, sampling its process tree; its output goes to work/child.log."""
    work.mkdir(parents=True)
    out, log = work / "records.json", work / "child.log"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # start its own local Ray
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("TORCH_EXTENSIONS_DIR", str(TORCH_EXTENSIONS_DIR))
    command = [sys.executable, __file__, side, setting, str(out), str(work / "run")]
    spawned = time.time()
    with log.open("w") as log_file:
        child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        sampler = TreeSampler(psutil.Process(child.pid), side=side, interval_s=SAMPLE_INTERVAL_S)
        sampler.start()
        try:
            code = child.wait(timeout=3000)
        finally:
            samples = sampler.stop()
            if child.poll() is None:  # interrupted: SIGTERM lets the sftrl session stop its Ray
                child.send_signal(signal.SIGTERM)
                child.wait(timeout=120)
    exited = time.time()
    if code:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise RuntimeError(f"{side} child exited {code}; last lines of {log}:\n{tail}")
    return SideRun(side, json.loads(out.read_text()), samples, spawned, exited)


class PhaseFigure(NamedTuple):
    """A phase's median seconds over the measured iterations and the tree's CPU utilisation in it."""

    median_s: float
    cpu_share: float
    """CPU-seconds of the tree / (cores x wall), pooled over the measured iterations; nan for an empty phase."""


def phase_figures(runs: list[SideRun], cores: int) -> dict[str, PhaseFigure]:
    """Per phase, and for the whole iteration, its figures over the runs' measured iterations."""
    figures = {}
    for phase in (*PHASES, "iteration"):
        walls, cpu = [], 0.0
        for run in runs:
            for record in run.records[MEASURED]:
                start, end = (record["start"], record["end"]) if phase == "iteration" else record["phases"][phase]
                walls.append(end - start)
                cpu += run.samples.cpu_between(start, end)
        share = cpu / (cores * sum(walls)) if sum(walls) > 0 else float("nan")
        figures[phase] = PhaseFigure(statistics.median(walls), share)
    return figures


def other_load_cores(runs: list[SideRun]) -> float:
    """Cores other processes on the machine kept busy during the measured iterations (the bench's noise)."""
    other, wall = 0.0, 0.0
    for run in runs:
        for record in run.records[MEASURED]:
            start, end = record["start"], record["end"]
            other += run.samples.cpu_between(start, end, machine=True) - run.samples.cpu_between(start, end)
            wall += end - start
    return other / wall


def print_phases(runs_by_side: dict[str, list[SideRun]], cores: int) -> None:
    """The per-phase table: median seconds and CPU utilisation a side, and sftrl/TRL when both ran."""
    figures = {side: phase_figures(runs, cores) for side, runs in runs_by_side.items()}
    both = len(runs_by_side) == 2
    header = f"{'phase':14s}" + "".join(f"{side + ' s':>10s}{side + ' CPU':>11s}" for side in runs_by_side)
    print(header + (f"{'sftrl/TRL':>11s}" if both else ""))
    for phase in (*PHASES, "iteration"):
        line = f"{phase:14s}" + "".join(
            f"{figures[side][phase].median_s:10.2f}{_percent(figures[side][phase].cpu_share):>11s}"
            for side in runs_by_side
        )
        if both:
            trl, ours = figures["TRL"][phase].median_s, figures["sftrl"][phase].median_s
            line += f"{ours / trl:10.2f}x" if trl > 0 else f"{'n/a':>11s}"
        print(line)


def print_outside_iterations(runs_by_side: dict[str, list[SideRun]]) -> None:
    """Per side: tokens per iteration, start-up + teardown, DeepSpeed op builds, the machine's other load."""
    for side, runs in runs_by_side.items():
        tokens = statistics.median(r["tokens"] for run in runs for r in run.records[MEASURED])
        startup = statistics.median(run.startup_s for run in runs)
        teardown = statistics.median(run.teardown_s for run in runs)
        print(
            f"{side}: {tokens:.0f} tokens generated per iteration (median); start-up + teardown "
            f"{statistics.median(run.startup_s + run.teardown_s for run in runs):.1f} s (start-up {startup:.1f} s, "
            f"teardown {teardown:.1f} s); other processes kept {other_load_cores(runs):.2f} cores busy"
        )
        builds = [f"{run.compile_s:.0f}" for run in runs if run.compile_s > BUILD_CPU_S]
        if builds:
            print(
                f"{side}: {len(builds)} start-up(s) built a DeepSpeed op into {TORCH_EXTENSIONS_DIR} "
                f"({', '.join(builds)} CPU-s)"
            )


def print_memory(runs_by_side: dict[str, list[SideRun]]) -> None:
    """Peak RSS of the whole tree and per role (its processes summed at one sample), CPU-seconds; worst run."""
    print(f"\npeak memory (RSS, GB; the worst of {ROUNDS} run(s) a side)")
    print(f"{'side':8s}{'role':44s}{'processes':>10s}{'role peak':>11s}{'largest':>9s}{'CPU-s':>8s}")
    for side, runs in runs_by_side.items():
        peak, cpu = max(max(r.samples.rss_total) for r in runs) / 1e9, max(r.samples.cpu_s[-1] for r in runs)
        print(f"{side:8s}{'whole process tree':44s}{'':>10s}{peak:11.2f}{'':>9s}{cpu:8.0f}")
        for role in sorted({role for run in runs for role in run.samples.pid_role.values()}):
            peak = max(max(s.get(role, 0.0) for s in run.samples.rss_by_role) for run in runs)
            pids = max(len(run.samples.role_processes(role)) for run in runs)
            largest = max(run.samples.pid_peak[p] for run in runs for p in run.samples.role_processes(role))
            cpu = max(run.samples.role_cpu_s.get(role, 0.0) for run in runs)
            print(f"{'':8s}{role:44s}{pids:10d}{peak / 1e9:11.2f}{largest / 1e9:9.2f}{cpu:8.0f}")
    if len(runs_by_side) == 2:
        trl, ours = (max(max(r.samples.rss_total) for r in runs_by_side[side]) for side in ("TRL", "sftrl"))
        print(f"whole process tree, sftrl/TRL: {ours / trl:.2f}x")


def print_iterations(runs_by_side: dict[str, list[SideRun]]) -> None:
    """Every iteration's phases, for the spread behind the medians."""
    print("\nper iteration (s)")
    print(f"  {'side':6s}{'round':>6s}{'iter':>5s}" + "".join(f"{p:>12s}" for p in (*PHASES, "total")) + "  tokens")
    for side, runs in runs_by_side.items():
        for round_index, run in enumerate(runs, start=1):
            for i, r in enumerate(run.records, start=1):
                spans = "".join(f"{r['phases'][p][1] - r['phases'][p][0]:12.2f}" for p in PHASES)
                print(f"  {side:6s}{round_index:6d}{i:5d}{spans}{r['end'] - r['start']:12.2f}{r['tokens']:8.0f}")


def _percent(share: float) -> str:
    return "-" if np.isnan(share) else f"{share:.0%}"


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("setting", ["single_turn", "demo"])
def test_sftrl_vs_trl_iteration(tmp_path, setting):
    sides = ["sftrl"]
    if setting == "single_turn":
        pytest.importorskip("trl", reason="TRL is a bench-only extra: pip install -e '.[bench]' (trl==1.16.0)")
        sides = ["TRL", "sftrl"]  # A B A B: TRL first in each round
    config = bench_config(setting)  # a bad override fails here, before any child starts
    cores = len(os.sched_getaffinity(0))
    runs: dict[str, list[SideRun]] = {side: [] for side in sides}
    for round_index in range(ROUNDS):
        for side in sides:
            work = tmp_path / f"{side}-{round_index}"
            runs[side].append(run_side("trl" if side == "TRL" else "sftrl", setting, work))
    rollout = config.rollout
    title = (
        f"{setting}: {MODEL} fp32 on {config.env.task}, max_attempts {config.env.kwargs.get('max_attempts', 5)}, "
        f"GRPO, {rollout.episodes_per_iteration // rollout.group_size} hands x {rollout.group_size}, "
        f"{rollout.sampling.max_new_tokens} new tokens, T={rollout.sampling.temperature}, lr {config.learner.lr}, "
        f"kl {config.learner.kl_mode}; {config.run.learner_ranks} learner rank, {config.serving.num_replicas} "
        f"replica, {rollout.n_actors} actor(s)"
    )
    if setting == "demo":
        title += (
            "\nsftrl only: TRL 1.16 runs no multi-turn GRPO as shipped (environment_factory is tool calling; "
            "rollout_func leaves the turn loop to the user and trains one sequence per episode, not one per turn)"
        )
    else:
        title += "\nTRL: GRPOTrainer, one process, HF generate (use_vllm=False), gradient checkpointing off"
    title += (
        f"\nsftrl: serving.engine={config.serving.engine}, serving.torch_threads={config.serving.torch_threads}, "
        f"learner.torch_threads={config.learner.torch_threads} (None: the node's cores shared by its ranks / replicas)"
    )
    n = len(range(ITERATIONS)[MEASURED]) * ROUNDS
    print(f"\n{title}\nmedians of iterations 2-{ITERATIONS} over {ROUNDS} round(s) (n = {n} a side), {cores} cores")
    print_phases(runs, cores)
    print_outside_iterations(runs)
    print_memory(runs)
    print_iterations(runs)
    assert all(len(run.records) == ITERATIONS for side_runs in runs.values() for run in side_runs)


if __name__ == "__main__":
    child_main(*sys.argv[1:5])
