"""The weight files of a run: what a weight sync hands the policy servers, on the run's storage.

`RUN_DIR/weights/v00005.safetensors` holds policy version 5 (learner rank 0 writes it, every
replica reads it, the weight registry keeps its path for replicas that start later). The run
directory is shared by every node (learner.run_dir checks it), so replicas anywhere can read it;
on one node a read comes from the page cache. The newest `KEEP` files stay: the newest is being
served, the one before may still be read by a replica that started just before the last sync.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = "weights"
KEEP = 2


def weights_path(run_dir: str | Path, version: int) -> Path:
    """Where policy `version`'s weights file goes under `run_dir`."""
    return Path(run_dir) / WEIGHTS_DIR / f"v{version:05d}.safetensors"


def prune_weight_files(run_dir: str | Path, *, keep: int = KEEP) -> list[Path]:
    """Delete all but the newest `keep` weight files of `run_dir`; returns the deleted paths."""
    files = sorted((Path(run_dir) / WEIGHTS_DIR).glob("v*.safetensors"))
    doomed = files[:-keep] if keep else files
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed
