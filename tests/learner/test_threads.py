"""Thread budgets: a configured count wins, else an equal share of the node's cores (at least one)."""

import os

import torch

from learner.threads import node_cores, phase_threads, use_threads


def test_a_phase_shares_the_nodes_cores_unless_configured():
    cores = len(os.sched_getaffinity(0))
    assert node_cores() == cores
    assert phase_threads(None, 1) == cores
    assert phase_threads(None, 2) == max(1, cores // 2)
    assert phase_threads(None, 10 * cores) == 1
    assert phase_threads(3, 1) == 3


def test_use_threads_sets_torchs_intra_op_threads():
    before = torch.get_num_threads()
    try:
        use_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
