"""Learner ranks must see the run directory the driver writes: a marker file with a fresh token.

Without storage every node shares, each rank's checkpoint shard lands on its own node's disk and
the first checkpoint fails. Unit tests cover the marker and the error; Ray tests start real ranks,
one group where the marker is where the ranks look, and groups where it is not: the driver's
marker record names a file the ranks cannot find (as if written on the driver's own disk) or one
holding another run's token (a node-local directory at the same path), as another node would.
"""

import time

import pytest

from learner import group as group_module
from learner.config import LearnerConfig
from learner.group import LearnerRank
from learner.run_dir import (
    RankSighting,
    RunDirMarker,
    RunDirNotSharedError,
    check_run_dir_shared,
    marker_problem,
    write_run_dir_marker,
)
from tests.cuda_probe import cuda_queries_on_import

CONFIG = LearnerConfig(model="tiny", algo="sft")
CPU_RANK = {"CPU": 1}


def test_a_written_marker_is_seen_with_its_exact_token(tmp_path):
    first = write_run_dir_marker(tmp_path / "new" / "run")  # the run directory does not exist yet
    assert first.path.read_text() == first.token and first.run_dir == str((tmp_path / "new" / "run").resolve())
    assert marker_problem(first, wait_s=0) is None
    second = write_run_dir_marker(tmp_path / "new" / "run")  # the next session (e.g. --resume) writes a new one
    assert second.token != first.token
    assert marker_problem(second, wait_s=0) is None
    assert "another run's token" in marker_problem(first, wait_s=0)
    assert sorted(p.name for p in (tmp_path / "new" / "run").iterdir()) == [".sftrl-shared-dir"]


def test_a_missing_marker_is_a_problem_after_the_wait(tmp_path):
    marker = RunDirMarker(str(tmp_path), "token")
    started = time.monotonic()
    assert marker_problem(marker, wait_s=0.5) == f"{marker.path} does not exist on this node"
    assert time.monotonic() - started >= 0.5


def test_every_rank_seeing_the_marker_passes_and_one_that_does_not_is_named(tmp_path):
    marker = RunDirMarker(str(tmp_path), "token")
    check_run_dir_shared(marker, [RankSighting("10.0.0.1", None), RankSighting("10.0.0.2", None)])
    with pytest.raises(RunDirNotSharedError) as info:
        check_run_dir_shared(marker, [RankSighting("10.0.0.1", None), RankSighting("10.0.0.2", "no such file")])
    message = str(info.value)
    assert f"the run directory {tmp_path} is not shared" in message
    assert "rank 1 on node 10.0.0.2: no such file" in message and "rank 0" not in message
    assert "`sftrl-runs` PVC" in message and "/mnt/sftrl" in message


def test_a_cpu_rank_hides_cuda(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # Ray 2.60 leaves a 0-GPU actor the node's GPUs
    LearnerRank(0, 1, CONFIG, use_gpu=False)
    assert group_module.os.environ["CUDA_VISIBLE_DEVICES"] == ""


def test_importing_the_rank_module_queries_no_cuda():
    """LearnerRank hides CUDA in its constructor; that is in time only if no import asked CUDA before."""
    assert cuda_queries_on_import("learner.group") == []


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.integration
@pytest.mark.slow
def test_ranks_that_see_the_marker_start(ray_cluster, tmp_path):
    group = group_module.LearnerGroup(1, CONFIG, resources_per_rank=CPU_RANK, run_dir=tmp_path / "run")
    try:
        assert len((tmp_path / "run" / ".sftrl-shared-dir").read_text()) == 32
    finally:
        group.shutdown()


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("on_the_ranks_disk, problem", [(None, "does not exist"), ("an-old-token", "another run's")])
def test_ranks_that_cannot_see_the_marker_fail_naming_their_nodes(
    ray_cluster, tmp_path, monkeypatch, on_the_ranks_disk, problem
):
    run_dir = tmp_path / "run"
    if on_the_ranks_disk is not None:
        run_dir.mkdir()
        (run_dir / ".sftrl-shared-dir").write_text(on_the_ranks_disk)

    def driver_marker(path):  # written where the ranks cannot read it: only the record comes back
        return RunDirMarker(str(path), "written-on-the-drivers-own-disk")  # tmp_path is absolute

    monkeypatch.setattr(group_module, "write_run_dir_marker", driver_marker)
    with pytest.raises(RunDirNotSharedError) as info:
        group_module.LearnerGroup(2, CONFIG, resources_per_rank=CPU_RANK, run_dir=run_dir)
    message = str(info.value)
    node = ray_cluster.util.get_node_ip_address()
    for rank in (0, 1):
        assert f"rank {rank} on node {node}: {run_dir / '.sftrl-shared-dir'}" in message
    assert problem in message and "/mnt/sftrl" in message
    deadline = time.monotonic() + 30  # the failed group released its actors and placement group
    while ray_cluster.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray_cluster.available_resources().get("CPU", 0) == 2
