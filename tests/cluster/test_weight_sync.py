"""Which transport a weight sync takes (cluster/weight_sync.py), with the learner and the server faked.

auto: the file when every replica shares learner rank 0's node, the broadcast when one does not;
an explicit transport is taken as given; a broadcast that fails falls back to the file, and says so.
The transports themselves run for real in tests/learner/test_weight_stream.py and the e2e tests.
"""

from concurrent.futures import Future

import pytest
from cluster_fakes import FakeLearner, FakePolicy, FakeServer

from cluster.config import WeightSyncConfig
from cluster.weight_sync import sync_weights


class BrokenStreamLearner(FakeLearner):
    def stream_weights(self, plan, path):
        raise ConnectionError("a replica left mid-stream")


class TornServer(FakeServer):
    def receive(self, plan, path, version):
        """The replicas' side of the broken stream: nothing swapped."""
        future = Future()
        future.set_exception(ConnectionError("the stream broke off"))
        return future


@pytest.mark.parametrize(
    "transport, replica_nodes, planned",
    [
        ("auto", ["127.0.0.1", "127.0.0.1"], "file"),  # one node: FakeLearner's rank 0 is on 127.0.0.1
        ("auto", ["127.0.0.1", "10.0.0.2"], "broadcast"),
        ("broadcast", ["127.0.0.1"], "broadcast"),
        ("file", ["10.0.0.2"], "file"),
    ],
)
def test_auto_takes_the_file_on_one_node_and_the_broadcast_across_nodes(tmp_path, transport, replica_nodes, planned):
    server = FakeServer(FakePolicy(), nodes=replica_nodes)
    synced = sync_weights(
        FakeLearner(), server, path=tmp_path / "v1", version=1, config=WeightSyncConfig(transport=transport)
    )
    assert (synced.planned, synced.used, synced.fell_back) == (planned, planned, False)
    assert server.pushed[-1][1] == 1 and server.handle.version == 1


def test_a_failed_broadcast_falls_back_to_the_file(tmp_path):
    server = TornServer(FakePolicy())
    synced = sync_weights(
        BrokenStreamLearner(), server, path=tmp_path / "v1", version=1, config=WeightSyncConfig(transport="auto")
    )
    assert (synced.planned, synced.used, synced.fell_back) == ("broadcast", "file", True)
    assert server.pushed == [(f"{tmp_path / 'v1'}#steps=0", 1)]
