"""Is the run directory shared? A marker the driver writes and every learner rank must read.

Without storage every node mounts, each rank writes its checkpoint shard to its own node's disk and
the first checkpoint fails. So the driver writes a marker file holding a fresh token into the run
directory (`write_run_dir_marker`), every rank reads it back (`marker_problem`), and
`check_run_dir_shared` raises `RunDirNotSharedError`, naming each rank that could not, and the fix
(the PVC in k8s/). Pure standard library: the driver imports the error without torch or DeepSpeed.

    marker = write_run_dir_marker("runs/x")  # the driver
    problem = marker_problem(marker)         # each rank: None when it reads the token
    check_run_dir_shared(marker, [RankSighting(node, problem), ...])  # the driver: every rank's
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

RUN_DIR_MARKER = ".sftrl-shared-dir"
"""Name of the marker file the driver writes into the run directory."""
MARKER_WAIT_S = 5.0
"""How long a rank keeps looking for the marker (a shared file system may show a new file late)."""
SHARED_PATH_FIX = (
    "put the run directory on storage every node mounts: on Kubernetes the `sftrl-runs` PVC "
    "(k8s/checkpoints-pvc.yaml), mounted at /mnt/sftrl on every pod (--run-dir /mnt/sftrl/runs/NAME); "
    "elsewhere an NFS (or other shared) path"
)


class RunDirNotSharedError(RuntimeError):
    """A learner rank cannot see the run directory the driver wrote; the message names the rank's node."""


@dataclass(frozen=True)
class RunDirMarker:
    """A file holding `token` that the driver wrote into `run_dir` (absolute): who reads it shares the directory."""

    run_dir: str
    token: str

    @property
    def path(self) -> Path:
        """The marker file."""
        return Path(self.run_dir) / RUN_DIR_MARKER


class RankSighting(NamedTuple):
    """What one learner rank saw of the marker: its node's address and why it could not read it (None: it did)."""

    node: str
    problem: str | None


def absolute(path: str | Path) -> str:
    """`path` made absolute on the driver, so actors (whose working directory may differ) agree."""
    return str(Path(path).expanduser().resolve())


def write_run_dir_marker(run_dir: str | Path) -> RunDirMarker:
    """Write a marker with a fresh token into `run_dir` (created if missing), atomically; return it."""
    directory = Path(absolute(run_dir))
    directory.mkdir(parents=True, exist_ok=True)
    marker = RunDirMarker(str(directory), uuid.uuid4().hex)
    partial = marker.path.with_name(f"{RUN_DIR_MARKER}.{os.getpid()}.tmp")
    partial.write_text(marker.token)
    os.replace(partial, marker.path)  # a reader sees the old marker or the new one, never half of it
    return marker


def marker_problem(marker: RunDirMarker, *, wait_s: float = MARKER_WAIT_S) -> str | None:
    """Why this process does not see `marker` (None when it reads the exact token within `wait_s`)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            found = marker.path.read_text()
        except FileNotFoundError:
            problem = f"{marker.path} does not exist on this node"
        except OSError as error:
            problem = f"cannot read {marker.path}: {error}"
        else:
            if found == marker.token:
                return None
            problem = f"{marker.path} holds another run's token {found[:32]!r}: a different directory at the same path"
        if time.monotonic() >= deadline:
            return problem
        time.sleep(0.2)  # poll: an NFS client caches directory entries, so a new file may show late


def check_run_dir_shared(marker: RunDirMarker, sightings: list[RankSighting]) -> None:
    """Raise RunDirNotSharedError, naming each rank that did not see `marker`; `sightings[rank]` is rank's."""
    unshared = [(rank, node, problem) for rank, (node, problem) in enumerate(sightings) if problem is not None]
    if unshared:
        where = "; ".join(f"rank {rank} on node {node}: {problem}" for rank, node, problem in unshared)
        raise RunDirNotSharedError(
            f"the run directory {marker.run_dir} is not shared with every learner rank ({where}). Each rank "
            f"writes its checkpoint shard there and the driver reads them back, so {SHARED_PATH_FIX}"
        )
