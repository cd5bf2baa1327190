"""Fixtures of the k8s/ tests: the GPU manifests, the rendered CPU overlay, and both in turn."""

from __future__ import annotations

from typing import Any

import pytest
from k8s_manifests import K8S, MANIFESTS, OVERLAY, by_kind, load_docs, render_overlay


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
