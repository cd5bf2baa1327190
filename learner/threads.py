"""Thread budgets: the phase that runs owns its node's cores, whatever CPUs Ray reserved for it.

A synchronous iteration runs one phase at a time (rollout, then learn, then the weight sync), and
each phase runs in processes of its own (Serve replicas generate, learner ranks learn). Ray gives an
actor as many intra-op threads as CPUs it reserved (OMP_NUM_THREADS), which leaves a 1-CPU learner
on one core of a 2-core node while the replica it waits for sits idle. A process of one phase
therefore takes the node's cores, shared with the other processes of the same phase on the node.
"""

from __future__ import annotations

import os


def node_cores() -> int:
    """The cores this process may run on (its CPU affinity)."""
    return len(os.sched_getaffinity(0))


def phase_threads(configured: int | None, sharers: int) -> int:
    """Intra-op threads of one of `sharers` processes of a phase on a node: `configured`, else an equal share."""
    if configured is not None:
        return configured
    return max(1, node_cores() // max(1, sharers))


def use_threads(threads: int) -> None:
    """Set torch's intra-op threads of this process (threads started later inherit them)."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
