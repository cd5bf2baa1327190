"""The weight-sync step of an RL iteration: the learner's new weights reach every policy replica.

`weight_sync.transport`:
- **broadcast** (default): learner rank 0 opens a group of its own with the replicas and streams
  the policy to all of them at once in buckets of `bucket_mb` (`learner.weight_stream`): one
  control call to the replicas, memory bounded by two buckets on either side, no registry copy.
  Rank 0 writes the same bytes to `RUN_DIR/weights/vN.safetensors` as they go; the registry
  keeps that path for replicas that start later.
- **file**: rank 0 writes that file, then every replica reads it (`PolicyService.push`).

A broadcast that fails (a replica died mid-stream, one never joined within `timeout_s`, one more
replica came up than planned) falls back to the file, logged: a replica that the broken stream
left torn loads the whole file (or fails its health check and is replaced by Serve).
"""

from __future__ import annotations

import logging
from pathlib import Path

from cluster.config import WeightSyncConfig
from cluster.ports import LearnerPort, PolicyPort

logger = logging.getLogger(__name__)


def sync_weights(
    learner: LearnerPort, policy: PolicyPort, *, path: Path, version: int, config: WeightSyncConfig
) -> str:
    """Make every replica serve the learner's current weights as `version` (file at `path`).

    Returns the transport that delivered them: `config.transport`, or "file" after a failed broadcast.
    """
    if config.transport == "broadcast":
        try:
            _broadcast(learner, policy, path=path, version=version, config=config)
            return "broadcast"
        except Exception as error:  # noqa: BLE001 (any failure of the stream: the file path still works)
            logger.warning("broadcast weight sync of version %d failed (%r); syncing through the file", version, error)
    policy.push(learner.export_weights(str(path)), version)
    return "file"


def _broadcast(learner: LearnerPort, policy: PolicyPort, *, path: Path, version: int, config: WeightSyncConfig) -> None:
    plan = learner.open_weight_stream(
        receivers=policy.replica_count(),
        version=version,
        bucket_bytes=int(config.bucket_mb * 2**20),
        timeout_s=config.timeout_s,
    )
    receipt = policy.receive(plan, str(path), version)  # the replicas join while rank 0 sends
    learner.stream_weights(plan, str(path))
    receipt.result()
