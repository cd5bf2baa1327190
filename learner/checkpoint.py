"""Learner checkpoints: DeepSpeed's sharded save/load plus our client state, last K kept.

Layout under a checkpoint root (DeepSpeed's, one directory per tag):

    root/latest                 # text file: the newest tag (written by DeepSpeed)
    root/step_00000012/         # ZeRO-3 shards of model and optimizer, and the client state, per rank
    root/step_00000010/         # older tags beyond `keep_checkpoints` are deleted

The client state saved with every rank's shard holds the learner step, the phase ("sft" / "rl",
`LearnerEngine.begin_rl`), the LR schedule's state (ours, not DeepSpeed's: `learner.optim`), that
rank's RNG states and, when KL is on, that rank's ZeRO-3 partition of the frozen reference (after
begin_rl it is the post-SFT policy, which nothing else can rebuild). A resumed run therefore
continues bit for bit and, past the SFT -> RL boundary, neither resets the optimizer again nor loses
the reference. The policy version and data position are the trainer's (cluster/trainer.py). Every
rank calls `save_checkpoint` / `load_checkpoint` (both are collective); the root must be on storage
all ranks share, and a checkpoint loads into as many ranks as saved it.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist

from learner.engine import LearnerEngine
from learner.partitions import load_partitions, local_partitions

TAG_PREFIX = "step_"


@dataclass
class ClientState:
    """What a checkpoint restores besides the weights and the optimizer."""

    step: int
    phase: Literal["sft", "rl"]


def rng_states() -> dict:
    """The RNG states of python, numpy, torch (and CUDA when present) of this process."""
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    """Inverse of `rng_states`."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(learner: LearnerEngine, root: str | Path) -> str:
    """Save a tag `step_<step>` under `root`, point `latest` at it, prune to the last K; collective.

    Returns the tag's directory.
    """
    root = Path(root)
    tag = f"{TAG_PREFIX}{learner.step:08d}"
    client = {
        "step": learner.step,
        "phase": learner.phase,
        "schedule": learner.schedule.state_dict(),
        "rng": rng_states(),
    }
    if learner.reference is not None:
        client["reference"] = local_partitions(learner.reference.module.policy)
    # A step that saved before (an iteration that learned nothing) is saved anew, not overwritten
    # in place: a kill mid-save must not leave new shards beside the old tag's trainer state.
    if learner.rank == 0 and (root / tag).is_dir():
        shutil.rmtree(root / tag)
    dist.barrier()  # no rank writes into the tag while rank 0 clears it
    learner.engine.save_checkpoint(str(root), tag=tag, client_state=client, save_latest=True)
    dist.barrier()  # all shards of this tag are on disk before anything older is deleted
    if learner.rank == 0:
        tags = sorted(p for p in root.glob(f"{TAG_PREFIX}*") if p.is_dir())
        for old in tags[: -learner.config.keep_checkpoints]:
            shutil.rmtree(old)
    dist.barrier()  # no rank reads the directory while rank 0 prunes it
    return str(root / tag)


def load_checkpoint(learner: LearnerEngine, root: str | Path) -> ClientState:
    """Load the `latest` tag under `root` (weights, optimizer, LR schedule, phase, reference, RNG); collective."""
    if not (Path(root) / "latest").is_file():
        raise FileNotFoundError(
            f"no checkpoint under {str(root)!r} (no 'latest' file): pass the root directory given to save_checkpoint"
        )
    path, client = learner.engine.load_checkpoint(str(root))
    if path is None:
        raise FileNotFoundError(f"DeepSpeed could not load the latest checkpoint under {root!r}")
    restore_rng_states(client["rng"])
    learner.schedule.load_state_dict(client["schedule"])
    if learner.reference is not None and "reference" in client:
        load_partitions(learner.reference.module.policy, client["reference"])
    elif learner.reference is not None and client["phase"] == "rl":
        raise ValueError(
            f"the checkpoint under {str(root)!r} is past begin_rl but holds no KL reference (saved with "
            f"kl_mode='none'): resume with kl_mode='none', or start the RL phase from an SFT checkpoint"
        )
    learner.step, learner.phase = client["step"], client["phase"]
    return ClientState(learner.step, learner.phase)
