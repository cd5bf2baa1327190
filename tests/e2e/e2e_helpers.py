"""Shared helpers of the end-to-end tests: a local Ray cluster, free ports, tiny-config overrides."""

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import ray
from ray import serve

from cluster.config import CONFIG_DIR

TINY = str(CONFIG_DIR / "tiny.yaml")


def free_port() -> int:
    """A TCP port nobody listens on right now (for Ray/Serve processes the test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def local_ray(num_cpus: int) -> Iterator[None]:
    """A local Ray cluster of `num_cpus` logical CPUs for the block; Serve and Ray are stopped after it."""
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        serve.shutdown()
        ray.shutdown()
