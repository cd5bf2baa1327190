"""Run a study: the init, then both arms per seed, each a training run, on one Ray cluster.

    STUDY_DIR/study.yaml           the study file's tree after overrides, and the command
    STUDY_DIR/init/                the shared init's run directory (per seed: seed<S>/init/)
    STUDY_DIR/seed<S>/sft/, rl/    the arms' run directories (cluster/trainer.py layout)
    STUDY_DIR/summary.csv, report.md, plots/study.png, tensorboard/    (report.py)

Each run is `cluster.train.train` on its config (config.py). A finished run holds `study_run.json`
(its final state, wall time and the SHA-256 of the weights it started from) and is skipped when
the study runs again; a killed one resumes from its newest checkpoint, or restarts when it saved
none. Both arms of a seed load the init's exported `policy/` directory: the digests in their
`study_run.json` show they started from byte-identical weights, each with a fresh optimizer.
All runs share one Ray cluster; each starts its own policy server (a Serve app named after the
run), learner and fleet, so runs never share state. The init(s) go first; then the arms, one after
another, or `study.parallel_runs` at a time (threads of this driver), which Ray places as its
resources allow (a run whose actors do not fit yet waits for one that finishes).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from cluster.study.config import Study
from cluster.trainer import POLICY_DIR, newest_checkpoint

DONE_FILE = "study_run.json"
STUDY_FILE = "study.yaml"
Kind = Literal["init", "sft", "rl"]


@dataclass(frozen=True)
class Job:
    """One run of the study: the init (shared or per seed) or an arm of a seed."""

    kind: Kind
    seed: int
    run_dir: Path

    @property
    def label(self) -> str:
        """How progress lines name the run."""
        return f"{self.kind} (seed {self.seed})"


def init_dir(study_dir: Path, seed: int, *, per_seed: bool) -> Path:
    """The run directory of the init that `seed`'s arms start from (`per_seed`: study.init_per_seed)."""
    return study_dir / f"seed{seed}" / "init" if per_seed else study_dir / "init"


def arm_dir(study_dir: Path, arm: str, seed: int) -> Path:
    """The run directory of an arm of a seed."""
    return study_dir / f"seed{seed}" / arm


def plan_jobs(study: Study, study_dir: Path) -> list[Job]:
    """The study's runs in order: the init(s) first, then per seed the SFT arm and the RL arm."""
    seeds = study.plan.seeds
    init_seeds = seeds if study.plan.init_per_seed else seeds[:1]
    jobs = [Job("init", seed, init_dir(study_dir, seed, per_seed=study.plan.init_per_seed)) for seed in init_seeds]
    return jobs + [Job(arm, seed, arm_dir(study_dir, arm, seed)) for seed in seeds for arm in ("sft", "rl")]


def read_done(run_dir: Path) -> dict[str, Any] | None:
    """The finished run's record (`study_run.json`), or None if the run has not finished."""
    path = run_dir / DONE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def weights_digest(policy_dir: Path) -> str:
    """SHA-256 over a HF policy directory's weight files (names and bytes, in name order)."""
    files = sorted(policy_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{policy_dir} holds no *.safetensors weights; did its run finish?")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def prepare_study_dir(study: Study, study_dir: Path, *, command: str) -> None:
    """Create STUDY_DIR with its study.yaml; FileExistsError if it holds a different study."""
    path = study_dir / STUDY_FILE
    if path.is_file():
        held = yaml.safe_load(path.read_text())
        if held.get("study_file") != study.raw:
            raise FileExistsError(
                f"{study_dir} holds another study (its {STUDY_FILE} differs from this config and overrides): "
                "give a new --run-dir, or the same config and overrides to resume it"
            )
        return
    study_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"command": command, "study_file": study.raw}, sort_keys=False))


def run_study(study: Study, study_dir: Path, *, command: str, say: Callable[[str], None] = print) -> None:
    """Run every unfinished run of the study (resuming killed ones); the report is `report.write_report`."""
    from cluster.session import ClusterSession
    from cluster.train import local_num_cpus

    prepare_study_dir(study, study_dir, command=command)
    jobs = plan_jobs(study, study_dir)
    num_cpus = max(local_num_cpus(c) for c in (study.init, study.sft, study.rl))
    progress = _StudyProgress(len(jobs), parallel=study.plan.parallel_runs, say=say)

    def run_one(job: Job) -> None:
        if read_done(job.run_dir) is not None:
            progress.skipped(job)
            return
        progress.started(job, remaining=[j for j in jobs if read_done(j.run_dir) is None])
        progress.finished(job, _run(study, study_dir, job, say=say))

    with ClusterSession(num_cpus=study.init.run.num_cpus or num_cpus):
        check_parallel_room(study)
        for wave in ([j for j in jobs if j.kind == "init"], [j for j in jobs if j.kind != "init"]):
            _run_wave(wave, run_one, parallel=study.plan.parallel_runs)


def check_parallel_room(study: Study) -> None:
    """With study.parallel_runs > 1: the cluster must hold that many arms at once, or PreflightError.

    Runs placed together that only partly fit would each hold part of their actors while waiting
    for the rest, and wait on each other forever; this refuses such a study before anything starts.
    """
    from cluster.preflight import PreflightError, preflight

    parallel = study.plan.parallel_runs
    if parallel == 1:
        return
    for config in (study.sft, study.rl):
        try:
            preflight(config, copies=parallel)
        except PreflightError as err:
            raise PreflightError(
                f"study.parallel_runs={parallel} runs {parallel} arms at once, but {err}; lower "
                "study.parallel_runs (1 runs them one after another)"
            ) from None


def _run_wave(jobs: list[Job], run_one: Callable[[Job], None], *, parallel: int) -> None:
    """Run `jobs` in order, or `parallel` at a time; the first error (or Ctrl-C) stops the study.

    On an error the runs not yet started are cancelled and the ones running are left to the
    session's exit, which stops the Ray cluster this study started (they then fail fast).
    """
    if parallel == 1:
        for job in jobs:
            run_one(job)
        return
    pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="study-run")
    try:
        for future in as_completed([pool.submit(run_one, job) for job in jobs]):
            future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


class _StudyProgress:
    """One line per run started or skipped: its number, elapsed time and an ETA (thread-safe)."""

    def __init__(self, n_jobs: int, *, parallel: int, say: Callable[[str], None]) -> None:
        self._n, self._parallel, self._say = n_jobs, parallel, say
        self._count = 0
        self._start = time.monotonic()
        self._walls: dict[Kind, list[float]] = {"init": [], "sft": [], "rl": []}
        self._lock = threading.Lock()

    def skipped(self, job: Job) -> None:
        with self._lock:
            self._count += 1
            self._say(f"study {self._count}/{self._n}: {job.label} finished earlier ({job.run_dir}), skipped")

    def started(self, job: Job, *, remaining: list[Job]) -> None:
        with self._lock:
            self._count += 1
            eta = _eta(remaining, self._walls)
            left = f", about {_minutes(eta / self._parallel)} left" if eta else ""
            elapsed = _minutes(time.monotonic() - self._start)
            self._say(f"study {self._count}/{self._n}: {job.label} in {job.run_dir}  elapsed {elapsed}{left}")

    def finished(self, job: Job, wall_s: float) -> None:
        with self._lock:
            self._walls[job.kind].append(wall_s)


def _run(study: Study, study_dir: Path, job: Job, *, say: Callable[[str], None]) -> float:
    """Run (or resume) one job to its end, record it as finished; returns its wall time in seconds."""
    from cluster.train import train

    started = time.monotonic()
    start_weights = None
    if job.kind == "init":
        config = study.init_config(job.seed)
    else:
        source = init_dir(study_dir, job.seed, per_seed=study.plan.init_per_seed)
        init = read_done(source)
        if init is None:
            raise RuntimeError(f"the init in {source} has not finished; run the study again to finish it first")
        start_weights = weights_digest(source / POLICY_DIR)
        init_tokens = study.plan.init_tokens if study.plan.init else init["state"]["train_tokens"]
        config = study.arm_config(
            job.kind, job.seed, init_policy=(source / POLICY_DIR).resolve(), prior_train_tokens=init_tokens
        )
    resume = newest_checkpoint(job.run_dir) is not None
    if not resume and job.run_dir.exists():
        say(f"{job.run_dir} saved no checkpoint: starting that run again")
        shutil.rmtree(job.run_dir)
    state = train(config, job.run_dir, resume=resume)
    wall_s = time.monotonic() - started
    record = {"kind": job.kind, "seed": job.seed, "state": asdict(state), "wall_s": wall_s}
    record["start_weights_sha256"] = start_weights
    partial = job.run_dir / f"{DONE_FILE}.partial"
    partial.write_text(json.dumps(record, indent=2))
    partial.replace(job.run_dir / DONE_FILE)
    return wall_s


def _eta(remaining: list[Job], walls: dict[Kind, list[float]]) -> float | None:
    """Seconds left: each remaining job at the mean wall time of finished jobs of its kind (else of any)."""
    finished = [w for ws in walls.values() for w in ws]
    if not finished:
        return None
    overall = sum(finished) / len(finished)
    return sum(sum(walls[j.kind]) / len(walls[j.kind]) if walls[j.kind] else overall for j in remaining)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"
