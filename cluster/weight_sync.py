"""The weight-sync step of an RL iteration: the learner's new weights reach every policy replica.

`weight_sync.transport`:
- **broadcast**: learner rank 0 opens a group of its own with the replicas and streams
  the policy to all of them at once in buckets of `bucket_mb` (`learner.weight_stream`): one
  control call to the replicas, memory bounded by two buckets on either side, no registry copy.
  Rank 0 writes the same bytes to `RUN_DIR/weights/vN.safetensors` as they go; the registry
  keeps that path for replicas that start later.
- **file**: rank 0 writes that file, then every replica reads it (`PolicyService.push`), each
  tensor as it is gathered and read (`learner.export.write_policy_file`, the engines' file loads).
- **auto** (default): the file when every replica runs on learner rank 0's node, where the file
  is in the page cache that all of them share (SmolLM2-135M to 2 replicas: ~1 s against ~3 s for
  the gloo stream over loopback, tests/bench/bench_weight_sync.py), the broadcast otherwise.

A broadcast that fails (a replica died mid-stream, one never joined within `timeout_s`, one more
replica came up than planned) falls back to the file, logged: a replica that the broken stream
left torn loads the whole file (or fails its health check and is replaced by Serve).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from cluster.config import WeightSyncConfig
from cluster.ports import LearnerPort, PolicyPort

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Synced:
    """How one sync went: the transport chosen for it and the one that delivered the weights."""

    planned: str
    used: str

    @property
    def fell_back(self) -> bool:
        """True when a broadcast failed and the file delivered the weights."""
        return self.used != self.planned


def sync_weights(
    learner: LearnerPort, policy: PolicyPort, *, path: Path, version: int, config: WeightSyncConfig
) -> Synced:
    """Make every replica serve the learner's current weights as `version` (file at `path`)."""
    nodes = policy.replica_nodes()
    planned = config.transport
    if planned == "auto":
        planned = "file" if set(nodes) <= {learner.node_ip()} else "broadcast"
    if planned == "broadcast":
        try:
            _broadcast(learner, policy, receivers=len(nodes), path=path, version=version, config=config)
            return Synced(planned, "broadcast")
        except Exception as error:  # noqa: BLE001 (any failure of the stream: the file path still works)
            logger.warning("broadcast weight sync of version %d failed (%r); syncing through the file", version, error)
    policy.push(learner.export_weights(str(path)), version)
    return Synced(planned, "file")


def _broadcast(
    learner: LearnerPort, policy: PolicyPort, *, receivers: int, path: Path, version: int, config: WeightSyncConfig
) -> None:
    plan = learner.open_weight_stream(
        receivers=receivers,
        version=version,
        bucket_bytes=int(config.bucket_mb * 2**20),
        timeout_s=config.timeout_s,
    )
    receipt = policy.receive(plan, str(path), version)  # the replicas join while rank 0 sends
    learner.stream_weights(plan, str(path))
    receipt.result()
