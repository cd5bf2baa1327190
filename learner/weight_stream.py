"""A bucketed weight broadcast from learner rank 0 to every policy replica over a group of its own.

A weight sync opens a torch.distributed group for the purpose (gloo; learner rank 0 is its rank
0 and hosts the rendezvous store, each replica takes the next free rank from that store), then
streams the policy's tensors in buckets of at most `bucket_bytes`: rank 0 packs the tensors of a
bucket into one flat byte buffer and broadcasts it, the replicas unpack it into their model. Both
sides cut the same buckets from the same `StreamPlan` (names, dtypes and full shapes, in the
order the sender produces them), so only the plan travels by control call: once per sync.
Memory on either side is bounded by two buckets (one being sent or received, one being filled or
unpacked), not by the model.

    plan = open_plan(...)                                   # learner rank 0, before the sync
    send(plan, tensors(), store=store, on_bucket=write)     # learner rank 0
    for name, tensor in receive(plan):                      # each replica, at the same time
        model_tensors[name].copy_(tensor)

A group lives for one sync: replicas that were replaced since the last one need no special case.
A rank that does not arrive fails the others after `timeout_s`, with the error torch raises.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

RANK_COUNTER = "sftrl/next_rank"


@dataclass(frozen=True)
class TensorSpec:
    """One streamed tensor: its name, dtype (torch's name, e.g. "float32") and full shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        """Its size in bytes."""
        return math.prod(self.shape) * self.torch_dtype.itemsize

    @property
    def torch_dtype(self) -> torch.dtype:
        """Its dtype as a torch.dtype."""
        return getattr(torch, self.dtype)


@dataclass(frozen=True)
class StreamPlan:
    """What every member of one sync's group needs: where to join, what comes, in what buckets."""

    address: str
    port: int
    world_size: int
    version: int
    tensors: tuple[TensorSpec, ...]
    bucket_bytes: int
    timeout_s: float

    def buckets(self) -> list[list[int]]:
        """Indices into `tensors`, cut in order into buckets of at most `bucket_bytes` (a bigger tensor goes alone)."""
        buckets: list[list[int]] = []
        size = 0
        for index, spec in enumerate(self.tensors):
            if not buckets or size + spec.nbytes > self.bucket_bytes:
                buckets.append([])
                size = 0
            buckets[-1].append(index)
            size += spec.nbytes
        return buckets

    @property
    def total_bytes(self) -> int:
        """The bytes one sync moves to each replica."""
        return sum(spec.nbytes for spec in self.tensors)

    def to_dict(self) -> dict:
        """Plain data (for processes that unpickle no classes of ours, e.g. vLLM's workers)."""
        return {**asdict(self), "tensors": [asdict(spec) for spec in self.tensors]}

    @classmethod
    def from_dict(cls, data: dict) -> StreamPlan:
        """The plan `to_dict` gave."""
        tensors = tuple(TensorSpec(t["name"], t["dtype"], tuple(t["shape"])) for t in data["tensors"])
        return cls(**{**data, "tensors": tensors})


def spec_of(name: str, dtype: torch.dtype, shape: Iterable[int]) -> TensorSpec:
    """A TensorSpec from torch's dtype and a shape."""
    return TensorSpec(name, str(dtype).removeprefix("torch."), tuple(int(d) for d in shape))


def open_store(address: str, *, timeout_s: float) -> dist.TCPStore:
    """The rendezvous store of one sync, hosted by the sender on a free port of `address`."""
    return dist.TCPStore(
        address, 0, None, True, timeout=timedelta(seconds=timeout_s), wait_for_workers=False, multi_tenant=False
    )


def _group(plan: StreamPlan, store: dist.Store, rank: int, address: str) -> dist.ProcessGroup:
    options = dist.ProcessGroupGloo._Options()
    options._timeout = timedelta(seconds=plan.timeout_s)
    options._devices = [dist.ProcessGroupGloo.create_device(hostname=address)]
    return dist.ProcessGroupGloo(dist.PrefixStore(f"v{plan.version}", store), rank, plan.world_size, options)


def _broadcast(group: dist.ProcessGroup, buffer: torch.Tensor):
    options = dist.BroadcastOptions()
    options.rootRank = 0
    return group.broadcast([buffer], options)


def send(
    plan: StreamPlan,
    tensors: Iterable[tuple[str, torch.Tensor]],
    *,
    store: dist.TCPStore,
    on_bucket: Callable[[torch.Tensor, bool], None] | None = None,
) -> None:
    """Broadcast `tensors` (in the plan's order, names and shapes as planned) to the plan's receivers.

    Blocks until every receiver joined and the last bucket left. `on_bucket(buffer, last)` sees
    each packed bucket while it is on the wire (before the last one is sent, for the last), e.g.
    to write it to a file. Raises ValueError when a tensor differs from its spec.
    """
    group = _group(plan, store, 0, plan.address)
    stream = iter(tensors)
    in_flight = None
    buckets = plan.buckets()
    for number, bucket in enumerate(buckets):
        buffer = torch.empty(sum(plan.tensors[i].nbytes for i in bucket), dtype=torch.uint8)  # (bytes,)
        offset = 0
        for index in bucket:
            spec = plan.tensors[index]
            name, tensor = next(stream)
            if spec_of(name, tensor.dtype, tensor.shape) != spec:
                raise ValueError(f"streamed tensor {name} {tensor.dtype} {tuple(tensor.shape)} differs from its {spec}")
            buffer[offset : offset + spec.nbytes].copy_(tensor.detach().contiguous().view(-1).view(torch.uint8).cpu())
            offset += spec.nbytes
        last = number == len(buckets) - 1
        if on_bucket is not None and last:
            on_bucket(buffer, True)  # the file is whole before any receiver has the whole stream
        if in_flight is not None:
            in_flight.wait()
        in_flight = _broadcast(group, buffer)
        if on_bucket is not None and not last:
            on_bucket(buffer, False)  # overlaps the broadcast
    if in_flight is not None:
        in_flight.wait()


def receive(plan: StreamPlan, *, address: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Join the plan's group from this host (`address`) and yield (name, CPU tensor) in the plan's order.

    A yielded tensor is a view into its bucket's buffer: copy it before the next one is asked
    for if it must outlive the stream. The next bucket is received while this one is unpacked.
    The caller must consume the whole stream (the sender waits for every receiver).
    """
    store = dist.TCPStore(plan.address, plan.port, None, False, timeout=timedelta(seconds=plan.timeout_s))
    rank = store.add(RANK_COUNTER, 1)
    if rank >= plan.world_size:
        raise RuntimeError(f"weight stream v{plan.version} planned {plan.world_size - 1} replicas; this one came late")
    group = _group(plan, store, rank, address)
    buckets = plan.buckets()

    def post(bucket: list[int]):
        buffer = torch.empty(sum(plan.tensors[i].nbytes for i in bucket), dtype=torch.uint8)  # (bytes,)
        return buffer, _broadcast(group, buffer)

    pending = post(buckets[0]) if buckets else None
    for number, bucket in enumerate(buckets):
        buffer, work = pending
        work.wait()
        pending = post(buckets[number + 1]) if number + 1 < len(buckets) else None
        offset = 0
        for index in bucket:
            spec = plan.tensors[index]
            data = buffer[offset : offset + spec.nbytes]  # (bytes,)
            if offset % data.element_size() or offset % spec.torch_dtype.itemsize:
                data = data.clone()  # a view of another dtype must start on its element boundary
            yield spec.name, data.view(spec.torch_dtype).view(spec.shape)
            offset += spec.nbytes


def drain(plan: StreamPlan, *, address: str) -> None:
    """Join the plan's group and receive the whole stream, keeping nothing (a receiver that refuses it).

    The sender waits for every planned receiver, so one that refuses the weights still takes them.
    """
    for _ in receive(plan, address=address):
        pass
