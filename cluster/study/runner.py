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
Runs go one after another on one Ray cluster (each starts its own policy server, learner and
fleet, so consecutive runs never share state).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
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
    walls: dict[Kind, list[float]] = {"init": [], "sft": [], "rl": []}
    start = time.monotonic()
    with ClusterSession(num_cpus=study.init.run.num_cpus or num_cpus):
        for index, job in enumerate(jobs):
            done = read_done(job.run_dir)
            if done is not None:
                say(f"study {index + 1}/{len(jobs)}: {job.label} finished earlier ({job.run_dir}), skipped")
                continue
            eta = _eta(jobs[index:], walls)
            say(
                f"study {index + 1}/{len(jobs)}: {job.label} in {job.run_dir}  "
                f"elapsed {_minutes(time.monotonic() - start)}" + (f", about {_minutes(eta)} left" if eta else "")
            )
            walls[job.kind].append(_run(study, study_dir, job, say=say))


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
