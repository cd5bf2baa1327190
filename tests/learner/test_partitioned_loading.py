"""Partitioned loading: two ZeRO-3 ranks (gloo, one process each) load a saved model under zero.Init.

Each rank must hold only its partition right after `load_policy(zero3_config=...)`, in the training
dtype, and the gathered weights must be the file's. Before partitioned loading, every rank
materialised the whole model in fp32 (42 GB per rank for an 11B model).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

WORLD = 2


def _rank_main(rank: int, port: int, model: str, dtype: str, out: str) -> None:
    import deepspeed
    import torch
    from safetensors.torch import load_file

    from learner.config import LearnerConfig
    from learner.distributed import init_distributed
    from learner.engine import training_dtype
    from learner.models import load_policy
    from learner.optim import deepspeed_config

    init_distributed(rank, WORLD, master_port=port)
    config = LearnerConfig(model=model, algo="sft", dtype=dtype)
    train_dtype = training_dtype(config)
    policy = load_policy(model, dtype=train_dtype, zero3_config=deepspeed_config(config, dtype=train_dtype))
    params = dict(policy.model.named_parameters())
    report = {
        "partitioned": all(p.numel() == 0 and hasattr(p, "ds_tensor") for p in params.values()),
        "local_fraction": sum(p.ds_tensor.numel() for p in params.values()) / sum(p.ds_numel for p in params.values()),
        "dtypes": sorted({str(p.ds_tensor.dtype) for p in params.values()}),
    }
    saved = load_file(str(Path(model) / "model.safetensors"))
    with deepspeed.zero.GatheredParameters(list(params.values())):
        report["max_abs_diff"] = max(
            (params[name].detach().float() - tensor.to(train_dtype).float()).abs().max().item()
            for name, tensor in saved.items()
            if name in params
        )
        report["compared"] = sum(name in params for name in saved)
    Path(out).write_text(json.dumps(report))
    torch.distributed.barrier()


@pytest.mark.slow
@pytest.mark.integration
def test_each_rank_loads_only_its_partition_in_the_training_dtype(tmp_path):
    from learner.distributed import free_port
    from learner.models import model_dir

    model, port, dtype = str(model_dir("tiny")), free_port(), "bfloat16"  # the file holds float32
    outs = [tmp_path / f"rank{rank}.json" for rank in range(WORLD)]
    procs = [
        subprocess.Popen([sys.executable, __file__, str(rank), str(port), model, dtype, str(out)])
        for rank, out in enumerate(outs)
    ]
    assert [proc.wait(timeout=300) for proc in procs] == [0] * WORLD
    for out in outs:
        report = json.loads(out.read_text())
        assert report["partitioned"], "a rank holds whole parameters after loading"
        assert 0.45 < report["local_fraction"] < 0.55, report  # half each (ZeRO-3 pads to the world size)
        assert report["dtypes"] == [f"torch.{dtype}"]
        assert report["compared"] > 0
        assert report["max_abs_diff"] == 0.0, report  # the file's values, rounded to bfloat16


if __name__ == "__main__":
    _rank_main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
