"""Weight export from a ZeRO-3 engine: a CPU state dict with HF names, and a HF model directory.

ZeRO-3 shards every parameter over the ranks. `gather_policy_state_dict` gathers them module by
module (`deepspeed.zero.GatheredParameters` on one module's own parameters at a time), so the
peak extra memory on a rank is one module's full parameters, while rank 0 copies each into one
CPU state dict. Every rank must call it (the gathers are collective). Only the policy is exported
(the `policy.` prefix is stripped, the value head is dropped), under its HF parameter names, with
tied weights sharing one tensor.

`export_hf` writes that state dict as `model.safetensors` plus config, generation config and
tokenizer/processor: a directory that `from_pretrained`, `learner.models.load_policy(path)` and
`sftrl serve --checkpoint` load. `write_weights_file` writes it alone, as the file a weight sync
hands the policy servers.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from learner.value_head import POLICY_PREFIX


def gather_policy_state_dict(module: nn.Module, *, rank: int) -> dict[str, torch.Tensor] | None:
    """Rank 0: {HF name: CPU tensor} of the policy; other ranks: None. Collective."""
    state: dict[str, torch.Tensor] = {}
    copies: dict[int, torch.Tensor] = {}  # id(param) -> CPU copy, so tied weights share one
    for module_name, sub in module.named_modules():
        if not (module_name + ".").startswith(POLICY_PREFIX):
            continue
        prefix = f"{module_name}."
        params = dict(sub.named_parameters(recurse=False))
        if params:
            _copy_gathered(params, prefix, state=state, copies=copies, rank=rank)
        if rank == 0:
            for name, buffer in sub.named_buffers(recurse=False):
                if name not in sub._non_persistent_buffers_set:
                    state[prefix + name] = buffer.detach().to("cpu", copy=True)
    if rank != 0:
        return None
    return {name[len(POLICY_PREFIX) :]: tensor for name, tensor in state.items()}


def _copy_gathered(params: dict[str, nn.Parameter], prefix: str, *, state: dict, copies: dict, rank: int) -> None:
    import deepspeed

    # gather this module's shards onto every rank (collective); they are freed again on exit,
    # so at most one module's full parameters are materialised at a time
    with deepspeed.zero.GatheredParameters(list(params.values()), modifier_rank=None):
        if rank == 0:
            for name, param in params.items():
                if id(param) not in copies:
                    copies[id(param)] = param.detach().to("cpu", copy=True)
                state[prefix + name] = copies[id(param)]


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
