"""Weight export from a ZeRO-3 engine: a CPU state dict with HF names, and a HF model directory.

ZeRO-3 shards every parameter over the ranks. `gather_policy_state_dict` gathers them module by
module (`deepspeed.zero.GatheredParameters` on one module's own parameters at a time), so the
peak extra memory on a rank is one module's full parameters, while rank 0 copies each into one
CPU state dict. Every rank must call it (the gathers are collective). Only the policy is exported
(the `policy.` prefix is stripped, the value head is dropped), under its HF parameter names, with
tied weights sharing one tensor.

`export_hf` writes that state dict as `model.safetensors` plus config, generation config and
tokenizer/processor: a directory that `from_pretrained`, `learner.models.load_policy(path)` and
`sftrl serve --checkpoint` load. `write_weights_file` writes a state dict alone, as one weights file.

A weight sync never holds the whole state dict: `iter_policy_tensors` yields one gathered module
at a time in `policy_tensor_specs` order, and `StreamedWeightsFile` writes their bytes as they
come, as the safetensors file the policy servers load: `write_policy_file` tensor by tensor (the
file transport), the broadcast (`learner.weight_stream`) bucket by bucket.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from learner.value_head import POLICY_PREFIX
from learner.weight_stream import TensorSpec, spec_of


def _policy_modules(module: nn.Module) -> Iterator[tuple[str, dict[str, nn.Parameter], dict[str, torch.Tensor]]]:
    """(HF name prefix, own parameters, own persistent buffers) of each policy module, in a fixed order."""
    for module_name, sub in module.named_modules():
        if not (module_name + ".").startswith(POLICY_PREFIX):
            continue
        prefix = f"{module_name}."[len(POLICY_PREFIX) :]
        buffers = {
            name: buffer
            for name, buffer in sub.named_buffers(recurse=False)
            if name not in sub._non_persistent_buffers_set
        }
        yield prefix, dict(sub.named_parameters(recurse=False)), buffers


def gather_policy_state_dict(module: nn.Module, *, rank: int) -> dict[str, torch.Tensor] | None:
    """Rank 0: {HF name: CPU tensor} of the policy; other ranks: None. Collective."""
    state: dict[str, torch.Tensor] = {}
    copies: dict[int, torch.Tensor] = {}  # id(param) -> CPU copy, so tied weights share one
    for prefix, params, buffers in _policy_modules(module):
        if params:
            with _gathered(params):
                if rank == 0:
                    for name, param in params.items():
                        if id(param) not in copies:
                            copies[id(param)] = param.detach().to("cpu", copy=True)
                        state[prefix + name] = copies[id(param)]
        if rank == 0:
            state.update({prefix + name: buffer.detach().to("cpu", copy=True) for name, buffer in buffers.items()})
    return state if rank == 0 else None


def policy_tensor_specs(module: nn.Module) -> list[TensorSpec]:
    """What `iter_policy_tensors` yields, read without gathering: each tensor once, full shapes."""
    specs, seen = [], set()
    for prefix, params, buffers in _policy_modules(module):
        for name, tensor in {**params, **buffers}.items():
            if id(tensor) not in seen:
                seen.add(id(tensor))
                specs.append(spec_of(prefix + name, tensor.dtype, getattr(tensor, "ds_shape", tensor.shape)))
    return specs


def iter_policy_tensors(module: nn.Module, *, rank: int) -> Iterator[tuple[str, torch.Tensor]]:
    """Rank 0: (HF name, full tensor) of the policy, in `policy_tensor_specs` order; other ranks: nothing.

    Each tensor comes once (tied weights under their first name). Collective: every rank must
    exhaust it. One module's parameters are gathered at a time; a yielded tensor is valid until the next one
    is asked for (copy it to keep it).
    """
    seen: set[int] = set()
    for prefix, params, buffers in _policy_modules(module):
        with _gathered(params):
            if rank == 0:
                for name, tensor in {**params, **buffers}.items():
                    if id(tensor) not in seen:
                        seen.add(id(tensor))
                        yield prefix + name, tensor.detach()


@contextmanager
def policy_tensors_to_the_end(module: nn.Module, *, rank: int) -> Iterator[Iterator[tuple[str, torch.Tensor]]]:
    """`iter_policy_tensors`, run to its end when the block exits however it ends (a return, an error).

    Its gathers are collective: a rank that stopped early would leave the others waiting.
    """
    tensors = iter_policy_tensors(module, rank=rank)
    try:
        yield tensors
    finally:
        for _ in tensors:
            pass


@contextmanager
def _gathered(params: dict[str, nn.Parameter]) -> Iterator[None]:
    """Gather `params`' ZeRO-3 shards onto every rank (collective); freed again on exit."""
    if not params:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(params.values()), modifier_rank=None):
        yield


def export_hf(
    state_dict: dict[str, torch.Tensor],
    out_dir: str | Path,
    *,
    model_config,
    generation_config,
    tokenizer,
    processor=None,
) -> Path:
    """Write a HF model directory from a gathered state dict (call on rank 0 only).

    Tied weights are stored once (safetensors refuses shared tensors); `from_pretrained` re-ties
    them from the config.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(_untied(state_dict), str(out / "model.safetensors"), metadata={"format": "pt"})
    model_config.save_pretrained(out)
    if generation_config is not None:
        generation_config.save_pretrained(out)
    (processor or tokenizer).save_pretrained(out)
    return out


def _untied(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each tensor once, under its first name (safetensors refuses tensors sharing memory), contiguous."""
    unique: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in state_dict.items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            unique[name] = tensor.contiguous()
    return unique


def write_weights_file(state_dict: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write a gathered state dict as one safetensors file at `path`, atomically (call on rank 0 only).

    Tied weights are stored once, under their first name (the embeddings; servers re-tie the
    output layer). The file is written beside `path` and renamed into place, so a reader never
    sees it half-written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    save_file(_untied(state_dict), str(partial), metadata={"format": "pt"})
    os.replace(partial, path)
    return path


SAFETENSORS_DTYPES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
}  # fmt: skip


def write_policy_file(module: nn.Module, path: str | Path, *, rank: int) -> Path | None:
    """Rank 0 writes the policy's weights file at `path` (as `write_weights_file` would) and returns it; collective.

    The tensors go to the file as they are gathered, without a state dict: rank 0's memory rises by
    one module's gathered parameters (nothing with whole parameters, on one rank).
    """
    with policy_tensors_to_the_end(module, rank=rank) as tensors:
        if rank != 0:
            return None
        file = StreamedWeightsFile(path, policy_tensor_specs(module))
        try:
            for _, tensor in tensors:
                file.write(tensor.contiguous().cpu().view(-1).view(torch.uint8))
        except BaseException:
            file.abort()
            raise
        return file.commit()


class StreamedWeightsFile:
    """A safetensors file written from its tensors' bytes as they arrive, in `specs` order (rank 0 only).

    The header (names, dtypes, shapes, offsets) is written first, from the specs; `write` appends
    raw bytes; `commit` renames the finished file into place (a reader never sees it half-written).
    """

    def __init__(self, path: str | Path, specs: list[TensorSpec]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = self.path.with_name(f".{self.path.name}.partial")
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for spec in specs:
            header[spec.name] = {
                "dtype": SAFETENSORS_DTYPES[spec.dtype],
                "shape": list(spec.shape),
                "data_offsets": [offset, offset + spec.nbytes],
            }
            offset += spec.nbytes
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
        self._expected, self._written = offset, 0
        self._file = open(self._partial, "wb")  # noqa: SIM115 (closed by commit)
        self._file.write(struct.pack("<Q", len(encoded)) + encoded)

    def write(self, data: torch.Tensor) -> None:
        """Append the bytes of the uint8 CPU tensor `data` (the next tensors' data, in spec order)."""
        self._file.write(memoryview(data.numpy()))
        self._written += data.numel()

    def commit(self) -> Path:
        """Close the file and move it into place; raises ValueError when it holds fewer or more bytes than planned."""
        self._file.close()
        if self._written != self._expected:
            self._partial.unlink(missing_ok=True)
            raise ValueError(f"weights file {self.path}: wrote {self._written} data bytes, planned {self._expected}")
        os.replace(self._partial, self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the unfinished file (the weights at `path`, if any, stay as they were)."""
        self._file.close()
        self._partial.unlink(missing_ok=True)
