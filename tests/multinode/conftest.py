"""The multinode tests (issue 14): a Ray cluster of three hosts in network namespaces; run only when asked.

They start a whole cluster and two training jobs (minutes, a few GB), so `make test` never runs
them: a test marked `multinode` is skipped unless the marker expression selects it or
SFTRL_MULTINODE=1 is set, and skipped where namespaces cannot be made (not root, no `ip netns`):

    timeout 2400 .venv/bin/python -m pytest -m multinode -p no:cacheprovider tests/multinode
    SFTRL_MULTINODE=1 .venv/bin/python -m pytest tests/multinode
"""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess

import pytest
from netns_cluster import Host, NetnsCluster

# The groups of k8s/raycluster.yaml, small: a head that runs no actor (num-cpus 0), a learner host
# and one host for both rollout actors and the policy replica (tiny.yaml: 2 actors, 1 replica).
HOSTS = (
    Host("head", 1, num_cpus=0, head=True),
    Host("learner", 2, num_cpus=1, resources={"learner": 1}),
    Host("rollout", 3, num_cpus=1, resources={"rollout": 2, "policy": 1}),
)
# Not preceded by "not": `-m multinode`, `-m "multinode or integration"` select; `-m "not multinode"` does not.
SELECTED = re.compile(r"(?<!not )\bmultinode\b")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a `multinode` test unless selected explicitly and network namespaces can be made here."""
    if item.get_closest_marker("multinode") is None:
        return
    if os.environ.get("SFTRL_MULTINODE") != "1" and not SELECTED.search(item.config.getoption("markexpr") or ""):
        pytest.skip("multinode tests run only when selected: -m multinode or SFTRL_MULTINODE=1")
    if os.geteuid() != 0:
        pytest.skip("multinode tests need root (network namespaces, veth and bridge links)")
    problem = netns_problem()
    if problem:
        pytest.skip(f"multinode tests need `ip netns`: {problem}")


@functools.cache
def netns_problem() -> str | None:
    """Why no network namespace can be made here (None: one was made and deleted again)."""
    probe = f"smn-probe-{os.getpid()}"
    try:
        made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    except FileNotFoundError:
        return "the `ip` command (iproute2) is not installed"
    if made.returncode != 0:
        return made.stderr.strip() or f"`ip netns add` exited with {made.returncode}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest):
    """The three hosts of HOSTS up for one test module; everything torn down after it, even on failure.

    SIGTERM (`timeout` ending the run) becomes KeyboardInterrupt for the module's duration, so pytest
    unwinds through the teardown instead of dying with the namespaces and Ray processes left behind.
    After a failure the cluster's directory (Ray's and the jobs' logs) is kept and its path printed.
    """

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    failed_before = request.session.testsfailed
    netns = NetnsCluster.create(HOSTS)
    ok = False
    try:
        netns.up()
        yield netns
        ok = request.session.testsfailed == failed_before
    finally:
        netns.teardown(keep_logs=not ok)
        signal.signal(signal.SIGTERM, previous)
        if not ok:
            print(f"\nmultinode: logs of the failed run kept in {netns.base}")
