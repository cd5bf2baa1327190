"""A Serve replica that reserved no GPU uses none: CUDA hidden, device cpu (`sftrl serve --num-gpus`: test_serve_cli).

Ray 2.60 no longer sets CUDA_VISIBLE_DEVICES="" for actors with num_gpus=0, so without this a
0-GPU replica on a GPU node would see every GPU and stack unaccounted work on GPU 0. No GPU is
needed here: torch.cuda.is_available is faked where CUDA's presence matters.
"""

import os

import pytest
import torch

from serving.config import ServingConfig, hide_unreserved_gpus
from tests.cuda_probe import cuda_queries_on_import


@pytest.fixture
def cuda_visible(monkeypatch):
    """Pretend this process sees a GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


@pytest.mark.parametrize("device", ["auto", "cpu"])
def test_a_replica_without_a_gpu_runs_on_the_cpu_even_where_cuda_is_visible(cuda_visible, device):
    assert ServingConfig(device=device).resolved_device(reserved_gpus=0) == "cpu"


def test_a_replica_with_a_gpu_uses_cuda_when_visible(cuda_visible, monkeypatch):
    config = ServingConfig(num_gpus_per_replica=1)
    assert config.resolved_device(reserved_gpus=1) == "cuda"
    assert ServingConfig(device="cpu").resolved_device(reserved_gpus=1) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert config.resolved_device(reserved_gpus=1) == "cpu"


def test_cuda_without_a_reserved_gpu_is_refused_with_the_fix(cuda_visible):
    with pytest.raises(ValueError, match="reserved no GPU: set num_gpus_per_replica .*--num-gpus 1"):
        ServingConfig(device="cuda").resolved_device(reserved_gpus=0)


def test_no_reserved_gpu_hides_cuda_and_a_reserved_one_keeps_rays_setting(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")  # what a 0-GPU actor inherits on a 4-GPU node
    hide_unreserved_gpus(0)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")  # Ray's choice for a 1-GPU replica
    hide_unreserved_gpus(1)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2"


def test_importing_the_replicas_module_queries_no_cuda():
    """PolicyServer hides CUDA in its constructor; that is in time only if no import asked CUDA before."""
    assert cuda_queries_on_import("serving.app") == []
