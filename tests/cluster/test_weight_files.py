"""The run's weight files: one per version, atomic, tied weights once; the newest two kept."""

import torch
from safetensors.torch import load_file

from cluster.weight_files import KEEP, prune_weight_files, weights_path
from learner.export import write_weights_file


def test_a_weights_file_holds_each_tensor_once_and_appears_whole(tmp_path):
    embed = torch.randn(5, 3)
    path = write_weights_file({"embed.weight": embed, "head.weight": embed, "norm": torch.ones(3)}, tmp_path / "w.st")
    assert sorted(load_file(path)) == ["embed.weight", "norm"]  # the tied head is stored once, as the embeddings
    torch.testing.assert_close(load_file(path)["embed.weight"], embed)
    assert [p.name for p in tmp_path.iterdir()] == ["w.st"]  # no partial file left behind


def test_versions_sort_by_name_and_only_the_newest_two_stay(tmp_path):
    paths = [weights_path(tmp_path, version) for version in (9, 10, 11, 100)]
    for path in paths:
        write_weights_file({"w": torch.zeros(1)}, path)
    deleted = prune_weight_files(tmp_path)
    assert deleted == paths[:2] and sorted(p for p in paths if p.exists()) == paths[2:] and KEEP == 2
