"""The trainer's ports: what `trainer.Trainer` calls on the learner, the policy server and the fleet.

Structural types (`typing.Protocol`): the real `learner.group.LearnerGroup`,
`policy_service.PolicyService` and `fleet.RolloutFleet` satisfy them, and so do the fakes of the
unit tests (tests/cluster/cluster_fakes.py), so the trainer's control flow tests without Ray,
DeepSpeed or Serve. This module imports neither Ray nor torch: the types it names are imported for
type checkers only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from cluster.config import SamplingConfig
    from cluster.fleet import CollectResult
    from cluster.rollout import EpisodeRequest
    from learner.batch import Sample


class LearnerPort(Protocol):
    """The learner ranks (`learner.group.LearnerGroup`): each call takes one batch and shards it."""

    def sft_step(self, samples: list[Sample]) -> dict[str, float]:
        """One SFT optimizer step on `samples`; returns its metrics (`loss/sft`, ...)."""

    def rl_step(self, samples: list[Sample]) -> dict[str, float]:
        """One PPO/GRPO update on `samples`; returns its metrics (`loss/policy`, ...)."""

    def values(self, samples: list[Sample]) -> list[float]:
        """Value-head estimates, one per sample, in the order given (learner.algo='ppo')."""

    def begin_rl(self) -> bool:
        """Start the RL phase: fresh optimizer and LR schedule; False (nothing changed) if already in it."""

    def num_parameters(self) -> int:
        """The policy's parameter count, value head excluded (N of the compute axis, cluster/compute.py)."""

    def node_ip(self) -> str:
        """The address of rank 0's node (where it writes weights files and hosts a broadcast)."""

    def export_weights(self, path: str) -> str:
        """Write the policy's full weights to the safetensors file `path` (for `PolicyPort.push`); returns it."""

    def open_weight_stream(self, receivers: int, version: int, bucket_bytes: int, timeout_s: float) -> Any:
        """Open a weight broadcast of `version` to `receivers` replicas; returns its plan (a `StreamPlan`)."""

    def stream_weights(self, plan: Any, path: str) -> str:
        """Send the weights by `plan` (the replicas receive at the same time) and write them to `path`; returns it."""

    def export_hf(self, out_dir: str) -> str:
        """Write the policy as a Hugging Face model directory; returns its path."""

    def save(self, root: str) -> str:
        """Checkpoint under `root` (a new tag that `root/latest` names); returns the tag's directory."""

    def load(self, root: str) -> object:
        """Restore the checkpoint that `root/latest` names."""


class PolicyPort(Protocol):
    """The policy server (`policy_service.PolicyService`) as the trainer sees it: weights go in."""

    def push(self, weights: Any, version: int) -> list[dict]:
        """Make every replica serve `weights` (a weights file's path) as `version` (versions only go up).

        Returns one swap report per replica.
        """

    def replica_nodes(self) -> list[str]:
        """The node address of each replica a broadcast reaches now."""

    def receive(self, plan: Any, path: str, version: int) -> Any:
        """Start every replica receiving the weight broadcast `plan` as `version` (`path`: the same weights as a file).

        Returns at once, a `concurrent.futures.Future` of one swap report per replica.
        """


class FleetPort(Protocol):
    """The rollout actor fleet (`fleet.RolloutFleet`): episode requests in, episodes out."""

    def collect(self, requests: list[EpisodeRequest], sampling: SamplingConfig) -> CollectResult:
        """Play every request with `sampling`; episodes lost with crashed actors are counted as dropped."""
