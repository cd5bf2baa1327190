"""The trainer's ports: the real learner, server and fleet and the unit tests' fakes all fit them."""

import importlib
import inspect
import subprocess
import sys

import pytest
from cluster_fakes import FakeLearner, FakeServer, InProcessFleet

from cluster.ports import FleetPort, LearnerPort, PolicyPort


def _misfits(cls: type, port: type) -> list[str]:
    """Each method of `port` that `cls` lacks or cannot be called like (one value per port parameter)."""
    misfits = []
    for name, member in vars(port).items():
        if name.startswith("_") or not inspect.isfunction(member):
            continue
        method = getattr(cls, name, None)
        if method is None:
            misfits.append(f"{cls.__name__}.{name} is missing")
            continue
        parameters = list(inspect.signature(member).parameters)  # self first
        try:
            inspect.signature(method).bind(*parameters)
        except TypeError as error:
            misfits.append(f"{cls.__name__}.{name}{inspect.signature(method)}: {error}")
    return misfits


def _load(path: str) -> type:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize(
    "port, real, fake",
    [
        (LearnerPort, "learner.group:LearnerGroup", FakeLearner),
        (PolicyPort, "cluster.policy_service:PolicyService", FakeServer),
        (FleetPort, "cluster.fleet:RolloutFleet", InProcessFleet),
    ],
    ids=["learner", "policy", "fleet"],
)
def test_real_classes_and_fakes_fit_the_ports(port, real, fake):
    assert _misfits(_load(real), port) == []
    assert _misfits(fake, port) == []


def test_a_missing_or_misshapen_method_is_a_misfit():
    class Incomplete:
        def sft_step(self, samples, extra):
            return {}

    misfits = _misfits(Incomplete, LearnerPort)
    assert any("sft_step" in m for m in misfits) and any("rl_step is missing" in m for m in misfits)


def test_the_ports_import_neither_ray_nor_torch():
    code = "import sys, cluster.ports; print(sorted({'ray', 'torch'} & sys.modules.keys()))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
