"""A rank's own parameters copied rank-locally: the frozen reference's weights in begin_rl and checkpoints.

Under ZeRO-3 each rank holds one flat slice (`param.ds_tensor`) of every parameter; under stage 0
it holds the whole parameter. Two engines built from the same model on the same ranks slice it
identically, so copying one rank's slices into the other's moves whole weights with no communication.

    .venv/bin/python -m pytest tests/learner/test_learner_engine.py -k begin_rl
"""

from __future__ import annotations

import torch
from torch import nn


def _own(param: nn.Parameter) -> torch.Tensor:
    """What this rank holds of `param`: its ZeRO-3 partition, or the parameter itself when not partitioned."""
    return getattr(param, "ds_tensor", param)


def local_partitions(module: nn.Module) -> dict[str, torch.Tensor]:
    """This rank's part (ZeRO-3 partition, or whole tensor) of every parameter of `module`, as CPU copies."""
    return {name: _own(param).detach().cpu().clone() for name, param in module.named_parameters()}


def load_partitions(module: nn.Module, partitions: dict[str, torch.Tensor]) -> None:
    """Copy `partitions` (from `local_partitions` of the same model, same world size) into `module`'s."""
    params = dict(module.named_parameters())
    if set(params) != set(partitions):
        raise ValueError(
            f"partitions of {len(partitions)} parameters do not fit a module of {len(params)}: "
            f"load them into the model they were taken from"
        )
    for name, param in params.items():
        assert _own(param).shape == partitions[name].shape, f"{name}: another ZeRO-3 partitioning"
        _own(param).data.copy_(partitions[name])
