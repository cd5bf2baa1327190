"""The one lifecycle (cluster/session.py): parts stop newest first, Ray only when this process started it.

Ray itself is faked: `init_ray` says whether the session started it, and stopping Serve and Ray is
recorded, so these tests start nothing.
"""

import sys
import types

import pytest

import cluster.session as session_module
from cluster.config import CONFIG_DIR, load_config
from cluster.session import ClusterSession


class Part:
    def __init__(self, name, stopped, *, fails=False):
        self.name, self._stopped, self._fails = name, stopped, fails

    def shutdown(self):
        self._stopped.append(self.name)
        if self._fails:
            raise RuntimeError(f"{self.name} failed to stop")


@pytest.fixture
def stopped(monkeypatch):
    """The order in which parts (and "ray": Serve and Ray) were stopped; Ray is started by the session."""
    order = []
    monkeypatch.setattr(session_module, "init_ray", lambda num_cpus=None: True)
    monkeypatch.setattr(session_module, "interrupt_on_signals", lambda: order.append("signals"))
    monkeypatch.setattr(session_module, "_stop_serve_and_ray", lambda: order.append("ray"))
    return order


def test_parts_stop_newest_first_then_serve_and_ray(stopped):
    with ClusterSession() as session:
        for name in ("policy", "learner", "fleet"):
            session.started(name, Part(name, stopped))
        assert session.owns_ray
    assert stopped == ["signals", "fleet", "learner", "policy", "ray"]


def test_startup_times_each_part_from_the_previous_one(stopped, monkeypatch):
    clock = iter([10.0, 12.5, 20.0, 21.0])  # entered, Ray ready, policy recorded, learner recorded
    monkeypatch.setattr(session_module.time, "perf_counter", lambda: next(clock))
    with ClusterSession() as session:
        session.started("policy", Part("policy", stopped))
        session.started("learner", Part("learner", stopped))
    assert session.startup_s == {"ray": 2.5, "policy": 7.5, "learner": 1.0}


def test_a_joined_cluster_keeps_running(stopped, monkeypatch):
    monkeypatch.setattr(session_module, "init_ray", lambda num_cpus=None: False)
    with ClusterSession() as session:
        session.started("policy", Part("policy", stopped))
    assert stopped == ["signals", "policy"]


def test_an_error_in_the_block_still_stops_everything(stopped):
    with pytest.raises(KeyboardInterrupt), ClusterSession() as session:
        session.started("policy", Part("policy", stopped))
        raise KeyboardInterrupt  # what Ctrl-C and SIGTERM raise after interrupt_on_signals
    assert stopped == ["signals", "policy", "ray"]


def test_parts_stopped_early_are_not_stopped_again(stopped):
    with ClusterSession() as session:
        for name in ("policy", "learner", "fleet"):
            session.started(name, Part(name, stopped))
        session.stop("learner", "fleet")
        assert stopped == ["signals", "fleet", "learner"]
        session.stop("fleet")  # already stopped: nothing happens
    assert stopped == ["signals", "fleet", "learner", "policy", "ray"]


def test_a_failing_shutdown_does_not_keep_the_rest_running(stopped):
    with pytest.raises(RuntimeError, match="learner failed to stop"), ClusterSession() as session:
        session.started("policy", Part("policy", stopped))
        session.started("learner", Part("learner", stopped, fails=True))
        session.started("fleet", Part("fleet", stopped))
    assert stopped == ["signals", "fleet", "learner", "policy", "ray"]


def test_unknown_and_duplicate_part_names_are_refused(stopped):
    with ClusterSession() as session:
        session.started("policy", Part("policy", stopped))
        with pytest.raises(ValueError, match="already has a part named 'policy'"):
            session.started("policy", Part("policy", stopped))
        with pytest.raises(ValueError, match=r"no part named \['flet'\].*\['policy'\]"):
            session.stop("flet")


def test_build_session_stops_what_started_when_a_later_part_fails(stopped, monkeypatch, tmp_path):
    from cluster import train
    from cluster.policy_service import PolicyService

    def no_learner(*args, **kwargs):
        raise RuntimeError("no resources for the learner ranks")

    monkeypatch.setattr(train, "preflight", lambda config: None)  # Ray is faked here: no nodes to read
    monkeypatch.setattr(PolicyService, "start", classmethod(lambda cls, config, http: Part("policy", stopped)))
    monkeypatch.setitem(sys.modules, "learner.group", types.SimpleNamespace(LearnerGroup=no_learner))
    with pytest.raises(RuntimeError, match="no resources"):
        train.build_session(load_config(CONFIG_DIR / "tiny.yaml"), tmp_path)
    assert stopped == ["signals", "policy", "ray"]


def test_release_training_stops_the_fleet_and_learner_but_keeps_serving(stopped):
    from cluster.train import TrainingSession

    cluster = ClusterSession().__enter__()
    for name in ("policy", "learner", "fleet"):
        cluster.started(name, Part(name, stopped))
    with TrainingSession(trainer=None, cluster=cluster) as session:
        session.release_training()
        assert stopped == ["signals", "fleet", "learner"]
    assert stopped == ["signals", "fleet", "learner", "policy", "ray"]
