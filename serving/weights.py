"""Versioned weights of a serving replica, and the registry that keeps the newest version.

`VersionedWeights` owns the lock that generation and weight swaps share: a batch holds it from
its first forward to its last token and reads the version once, so no generation mixes two
versions; `swap` takes it, checks the version and copies the new tensors in place. Versions only
go up: an older version is refused with `StaleVersionError`, the current one is a no-op (a replica
that just loaded it from the registry may receive the same broadcast).

`WeightRegistry` is where the newest published version lives. It runs as a Serve
*deployment-scoped actor* of `PolicyServer` (`deployment_actors`, one per deployment, created and
health-checked by the Serve controller, deleted with the deployment). After a broadcast swap, the
first replica to `claim` a version hands what it loaded to the registry: the path of the weights
file (a training run's pushes; the file lives on the run's shared storage) or the state dict
itself, kept in the registry's memory. A replica that starts later
(restart, scale-up) calls `latest()` in its constructor, before Serve routes traffic to it.
If the controller recreates the registry actor, it starts empty; the replicas' health checks
(`PolicyServer.check_health`) see it behind and republish the newest weights they serve.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Set
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open


class StaleVersionError(ValueError):
    """A weight version older than the one being served."""


@dataclass
class SwapResult:
    """What `VersionedWeights.swap` did."""

    version: int
    swapped: bool
    seconds: float
    bytes: int


WeightsSource = Mapping[str, torch.Tensor] | str | Path
"""What a replica is given to load: a HF-named state dict, or the path of a safetensors file holding one."""


def check_not_stale(version: int, current: int) -> None:
    """Raise `StaleVersionError` when `version` is older than `current` (versions only go up)."""
    if version < current:
        raise StaleVersionError(f"weights version {version} is older than the served {current}; versions only go up")


def require_weights_file(path: str | Path) -> Path:
    """`path` as a Path; raises FileNotFoundError naming the fix when this replica cannot see it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {path} is not visible on this replica's node: the run directory must be on storage "
            f"every node shares (the PVC in k8s/), or push a state dict instead"
        )
    return path


def file_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """{name: shape} of the tensors of a safetensors file, read from its header only."""
    with safe_open(str(path), framework="pt") as file:
        return {name: tuple(file.get_slice(name).get_shape()) for name in file.keys()}  # noqa: SIM118


def file_tensors(path: str | Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of each tensor of a safetensors file, read one at a time: a reader holds one tensor."""
    with safe_open(str(path), framework="pt") as file:
        for name in file.keys():  # noqa: SIM118 (safe_open is not a mapping)
            yield name, file.get_tensor(name)


def shapes_of(weights: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """{name: shape} of a state dict."""
    return {name: tuple(tensor.shape) for name, tensor in weights.items()}


def check_weights(
    expected: Mapping[str, tuple[int, ...]], given: Mapping[str, tuple[int, ...]], *, optional: Set[str] = frozenset()
) -> None:
    """Check the `given` {name: shape} against the `expected` one; raises ValueError naming the bad keys.

    Names in `optional` (weights the model ties to another, e.g. `lm_head.weight` tied to the
    embeddings) may be absent; every other expected name must be present with its shape, and no
    other name may appear.
    """
    unexpected = sorted(set(given) - set(expected))
    missing = sorted(set(expected) - set(given) - set(optional))
    bad_shape = sorted(k for k in set(given) & set(expected) if tuple(given[k]) != tuple(expected[k]))
    if unexpected or missing or bad_shape:
        raise ValueError(
            f"weights do not fit the served model: unexpected {unexpected[:5]}, missing {missing[:5]}, "
            f"wrong shape {bad_shape[:5]}; export the policy's HF state dict (no value head) of the same model"
        )


def check_fits_model(model: torch.nn.Module, given: Mapping[str, tuple[int, ...]]) -> None:
    """`check_weights` of the {name: shape} `given` against `model`'s state dict, its tied parameters optional."""
    expected = model.state_dict()
    owned = {name for name, _ in model.named_parameters(remove_duplicate=True)} | {
        name for name, _ in model.named_buffers()
    }
    check_weights(shapes_of(expected), given, optional=set(expected) - owned)


def check_state_dict(model: torch.nn.Module, weights: Mapping[str, torch.Tensor]) -> int:
    """`check_fits_model` of the state dict `weights`; returns its bytes."""
    check_fits_model(model, shapes_of(weights))
    return sum(t.numel() * t.element_size() for t in weights.values())


class VersionedWeights:
    """The served model's version and the lock shared by generation and swaps."""

    def __init__(self, model: torch.nn.Module, *, version: int = 0):
        self.model = model
        self.version = version
        self.torn: str | None = None  # why the model holds part of a version (a stream broke off), until a swap
        self._lock = threading.Lock()

    @contextmanager
    def reading(self) -> Iterator[int]:
        """Hold the weights for one batch; yields the version the batch is generated with."""
        with self._lock:
            yield self.version

    def snapshot(self) -> tuple[int, dict[str, torch.Tensor]]:
        """(version, a CPU copy of the model's state dict), read between batches."""
        with self._lock:
            return self.version, {
                name: tensor.detach().to("cpu", copy=True) for name, tensor in self.model.state_dict().items()
            }

    def swap(self, weights: Mapping[str, torch.Tensor], version: int) -> SwapResult:
        """Copy `weights` into the model as `version`, waiting for the running batch to end.

        Raises StaleVersionError for a version below the current one, ValueError for weights that
        do not fit the model (checked before anything is copied).
        """
        check_not_stale(version, self.version)
        size = check_state_dict(self.model, weights)
        start = time.perf_counter()
        with self._lock, torch.no_grad():
            check_not_stale(version, self.version)
            if version == self.version:
                return SwapResult(version, False, 0.0, 0)
            self.model.load_state_dict(weights, strict=False)  # keys checked above; tied ones may be absent
            self.version, self.torn = version, None
        return SwapResult(version, True, time.perf_counter() - start, size)

    def receive(self, specs: Mapping[str, tuple[int, ...]], tensors: Iterator[tuple[str, torch.Tensor]], version: int):
        """Copy a weight stream or file (`specs`: {name: shape} of what `tensors` yields) into the model as `version`.

        Holds the lock for the whole stream (generation waits). Weights that do not fit, or a version
        not above the served one, are still received (the sender waits for every receiver), then
        refused: ValueError / StaleVersionError, or a no-op at the served version. If the stream
        breaks off midway, the model holds part of it: `torn` says so until a full swap.
        """
        start = time.perf_counter()
        with self._lock, torch.no_grad():
            try:
                check_fits_model(self.model, specs)
                check_not_stale(version, self.version)
                refusal = None
            except ValueError as error:
                refusal = error
            if refusal is not None or version == self.version:
                for _ in tensors:  # take the whole stream, keep nothing
                    pass
                if refusal is not None:
                    raise refusal
                return SwapResult(version, False, 0.0, 0)
            targets, size = self.model.state_dict(), 0
            try:
                for name, tensor in tensors:
                    targets[name].copy_(tensor)
                    size += tensor.numel() * tensor.element_size()
            except BaseException as error:
                self.torn = f"the weight stream of version {version} broke off: {error!r}"
                raise
            self.version, self.torn = version, None
        return SwapResult(version, True, time.perf_counter() - start, size)


class WeightRegistry:
    """Newest published weights of a deployment (run as a Serve deployment-scoped Ray actor).

    It keeps what it was given: where to get the weights (a weights file's path, what a training
    run pushes: a few bytes) or a state dict (a caller that pushed one, or a replica's republish),
    which then lives in this actor's memory and is serialised only when a replica starts.
    """

    def __init__(self):
        self._version = 0
        self._claimed = 0
        self._weights: WeightsSource | None = None

    def claim(self, version: int) -> bool:
        """True for the first replica offering `version` newer than anything claimed: it should `publish`."""
        if version <= self._claimed:
            return False
        self._claimed = version
        return True

    def publish(self, version: int, weights: WeightsSource) -> int:
        """Keep `weights` as the newest version (ignored when not newer); returns the newest version."""
        if version > self._version:
            self._weights, self._version = weights, version
        return self._version

    def version(self) -> int:
        """The newest published version (0 before any publish); cheap to poll."""
        return self._version

    def latest(self) -> tuple[int, WeightsSource | None]:
        """(newest version, its weights: a path or a state dict); (0, None) before any publish."""
        return self._version, self._weights
