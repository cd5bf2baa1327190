"""torch.distributed set-up for learner ranks, with or without Ray.

`init_distributed` joins the process group the ZeRO-3 engine runs in: NCCL when CUDA is available,
gloo on CPU (with `DS_ACCELERATOR=cpu` so DeepSpeed picks its CPU accelerator). A single process
calls `init_distributed(0, 1, master_port=free_port())`; Ray ranks get rank 0's address and port
from `LearnerGroup`.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

import torch
import torch.distributed as dist

INIT_TIMEOUT = timedelta(minutes=10)


def free_port() -> int:
    """A TCP port that was free a moment ago on this host (for MASTER_PORT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def node_ip() -> str:
    """This host's address as other hosts reach it (127.0.0.1 when it has no other)."""
    try:
        import ray

        if ray.is_initialized():
            return ray.util.get_node_ip_address()
    except ImportError:
        pass
    return "127.0.0.1"


def device_for_rank() -> torch.device:
    """cuda:LOCAL_RANK when CUDA is visible (Ray gives each rank its GPU as cuda:0), else cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def init_distributed(rank: int, world_size: int, *, master_addr: str = "127.0.0.1", master_port: int) -> None:
    """Join (or create) the default process group; no-op if this process already joined one."""
    if dist.is_initialized():
        return
    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "LOCAL_RANK": os.environ.get("LOCAL_RANK", "0"),
            "MASTER_ADDR": master_addr,
            "MASTER_PORT": str(master_port),
        }
    )
    if on_gpu:
        torch.cuda.set_device(device_for_rank())
    dist.init_process_group(
        "nccl" if on_gpu else "gloo",
        rank=rank,
        world_size=world_size,
        init_method=f"tcp://{master_addr}:{master_port}",
        timeout=INIT_TIMEOUT,
    )
