"""Fixtures of the end-to-end tests."""

import pytest
import ray
from ray import serve


@pytest.fixture(scope="module")
def ray_cluster():
    """A local 2-CPU Ray cluster for one test module; Serve and Ray are stopped after it."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    serve.shutdown()
    ray.shutdown()
