"""Fixtures of the k8s/ tests: the GPU manifests, the rendered CPU overlay, both in turn, and each RayJob."""

from __future__ import annotations

from typing import Any

import pytest
from k8s_manifests import JOBS, K8S, MANIFESTS, OVERLAY, by_kind, load_docs, render_overlay


@pytest.fixture(scope="module")
def base() -> dict[str, dict[str, Any]]:
    return by_kind([doc for name in MANIFESTS for doc in load_docs((K8S / name).read_text())])


@pytest.fixture(scope="module")
def cpu() -> dict[str, dict[str, Any]]:
    return by_kind(render_overlay(OVERLAY))


@pytest.fixture(params=["base", "cpu"])
def manifests(request) -> dict[str, dict[str, Any]]:
    """k8s/ (GPU) and the rendered CPU overlay, in turn."""
    return request.getfixturevalue(request.param)


# The CPU overlay adapts the training job only; k8s/ holds both.
JOB_SOURCES = [("base", name) for name in sorted(JOBS)] + [("cpu", "train")]


@pytest.fixture(params=JOB_SOURCES, ids=[f"{source}-{name}" for source, name in JOB_SOURCES])
def job_with_manifests(request) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(a RayJob, the manifests it came with): each job of k8s/ and the CPU overlay's training job, in turn."""
    source, name = request.param
    manifests = request.getfixturevalue(source)
    return manifests[JOBS[name]], manifests


@pytest.fixture
def job(job_with_manifests) -> dict[str, Any]:
    """Each RayJob of `job_with_manifests`, in turn."""
    return job_with_manifests[0]
