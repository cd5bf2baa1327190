"""A local Ray cluster with Serve's HTTP proxy on a free loopback port, for serving tests and benches."""

from collections.abc import Iterator
from contextlib import contextmanager

import ray
from ray import serve

from learner.distributed import free_port


@contextmanager
def serve_http(*, num_cpus: int) -> Iterator[str]:
    """Start Ray (`num_cpus`) and Serve's proxy on 127.0.0.1; yields the root URL; stops both after."""
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
