"""Fixtures of the end-to-end tests."""

import pytest
from e2e_helpers import local_ray


@pytest.fixture(scope="module")
def ray_cluster():
    """A local 2-CPU Ray cluster for one test module; Serve and Ray are stopped after it."""
    with local_ray(2):
        yield
