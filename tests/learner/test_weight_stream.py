"""The bucketed weight broadcast (learner.weight_stream): real gloo groups, one thread per member.

A sender and two receivers exchange tensors of several dtypes through buckets smaller than some
tensors; every receiver must get them bit for bit, and the file the sender writes beside the
stream must load (with safetensors' own reader) to the same tensors. A receiver that refuses the
weights still takes the whole stream, so the sender never hangs.
"""

from __future__ import annotations

import threading

import pytest
import torch
from safetensors.torch import load_file

from learner.export import StreamedWeightsFile
from learner.weight_stream import StreamPlan, open_store, receive, send, spec_of
from serving.weights import StaleVersionError, VersionedWeights

ADDRESS = "127.0.0.1"


def _tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.randn(3, 5, generator=generator),
        "b.odd_bf16": torch.randn(7, generator=generator).to(torch.bfloat16),  # leaves the next offset unaligned
        "c.steps": torch.arange(4, dtype=torch.int64),
        "d.big": torch.randn(40, 40, generator=generator),  # 6400 bytes: bigger than a bucket, goes alone
        "e.bias": torch.randn(9, generator=generator),
    }


def _plan(tensors: dict[str, torch.Tensor], store, *, receivers: int, version: int = 1) -> StreamPlan:
    return StreamPlan(
        address=ADDRESS,
        port=store.port,
        world_size=receivers + 1,
        version=version,
        tensors=tuple(spec_of(name, t.dtype, t.shape) for name, t in tensors.items()),
        bucket_bytes=256,
        timeout_s=60,
    )


def _run(*targets) -> list:
    """Run each target in its own thread; return their results (re-raising the first error)."""
    results, errors = [None] * len(targets), [None] * len(targets)

    def call(index, target):
        try:
            results[index] = target()
        except BaseException as error:  # noqa: BLE001 (reported below)
            errors[index] = error

    threads = [threading.Thread(target=call, args=(i, t)) for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a stream member hung"
    return results, errors


def test_buckets_cut_in_order_and_a_big_tensor_goes_alone():
    store = open_store(ADDRESS, timeout_s=10)
    plan = _plan(_tensors(), store, receivers=1)
    assert plan.buckets() == [[0, 1, 2], [3], [4]]  # 60 + 14 + 32 bytes; 6400 alone; 36
    assert StreamPlan.from_dict(plan.to_dict()) == plan


def test_receivers_get_every_tensor_bit_for_bit_and_the_file_matches(tmp_path):
    tensors = _tensors()
    store = open_store(ADDRESS, timeout_s=60)
    plan = _plan(tensors, store, receivers=2)
    path = tmp_path / "v00001.safetensors"
    file = StreamedWeightsFile(path, list(plan.tensors))
    seen_before_last = []

    def write(buffer, last):
        file.write(buffer)
        if last:
            seen_before_last.append(path.exists())
            file.commit()

    def sender():
        send(plan, iter(tensors.items()), store=store, on_bucket=write)

    def receiver():
        return {name: t.clone() for name, t in receive(plan, address=ADDRESS)}

    results, errors = _run(sender, receiver, receiver)
    assert errors == [None, None, None]
    for got in results[1:]:
        assert list(got) == list(tensors)
        for name, tensor in tensors.items():
            assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), name
    assert seen_before_last == [False]  # committed while handling the last bucket, before it is sent
    loaded = load_file(str(path))
    assert set(loaded) == set(tensors)
    assert all(torch.equal(loaded[name], tensor) for name, tensor in tensors.items())


def test_a_tensor_that_differs_from_its_spec_is_refused_by_the_sender():
    tensors = _tensors()
    store = open_store(ADDRESS, timeout_s=10)
    plan = _plan(tensors, store, receivers=0)
    wrong = {**tensors, "a.weight": torch.zeros(5, 3)}
    with pytest.raises(ValueError, match="a.weight"):
        send(plan, iter(wrong.items()), store=store)


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(5, 3, bias=False)
        self.e = torch.nn.Linear(1, 9)


def _model_stream(model_weights: dict[str, torch.Tensor], *, version: int, receiver):
    store = open_store(ADDRESS, timeout_s=60)
    plan = _plan(model_weights, store, receivers=1, version=version)
    return _run(lambda: send(plan, iter(model_weights.items()), store=store), lambda: receiver(plan))


def test_a_replica_copies_the_stream_into_its_model_and_refuses_what_does_not_fit():
    model = _Model()
    weights = VersionedWeights(model)
    new = {name: torch.full_like(t, 0.5) for name, t in model.state_dict().items()}

    def into_model(plan, version):
        shapes = {spec.name: spec.shape for spec in plan.tensors}
        return weights.receive(shapes, receive(plan, address=ADDRESS), version)

    results, errors = _model_stream(new, version=3, receiver=lambda plan: into_model(plan, 3))
    assert errors == [None, None] and results[1].swapped and weights.version == 3
    assert all(torch.equal(t, new[name]) for name, t in model.state_dict().items())

    wrong = {**new, "a.weight": torch.zeros(3, 4)}  # the sender is told nothing: the replica drains, then raises
    _, errors = _model_stream(wrong, version=4, receiver=lambda plan: into_model(plan, 4))
    assert errors[0] is None and isinstance(errors[1], ValueError) and weights.version == 3

    _, errors = _model_stream(new, version=2, receiver=lambda plan: into_model(plan, 2))
    assert errors[0] is None and isinstance(errors[1], StaleVersionError) and weights.version == 3


def test_a_stream_that_breaks_off_leaves_the_model_torn_until_a_whole_swap():
    model = _Model()
    weights = VersionedWeights(model)
    state = {name: torch.ones_like(t) for name, t in model.state_dict().items()}

    def broken():
        yield "a.weight", state["a.weight"]
        raise ConnectionError("sender gone")

    with pytest.raises(ConnectionError):
        weights.receive({name: tuple(t.shape) for name, t in state.items()}, broken(), 5)
    assert weights.version == 0 and "broke off" in weights.torn
    weights.swap(state, 5)
    assert weights.torn is None and weights.version == 5
