"""`freeze_vision`: train only a VLM's language model (a text task never runs the rest).

A vision-language model's inner `model` holds `language_model` beside the parts that read images
(Llava's `vision_tower` and `multi_modal_projector`, Mllama's `vision_model` and projector);
Mllama's language model also interleaves cross-attention layers, which it skips when no image
states are given. Frozen parameters get no gradients, so ZeRO-3 keeps no gradient or optimizer
state for them: for Llama-3.2-11B-Vision about 2.6B of its 10.7B parameters (an estimate from its
config: 8 cross-attention layers of ~0.22B and a ~0.9B vision encoder).
"""

from __future__ import annotations

from torch import nn


def vision_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of `model` that only images use: empty for a text-only model."""
    inner = getattr(model, "model", None)
    language = getattr(inner, "language_model", None)
    if language is None:
        return []
    parts = [module for name, module in inner.named_children() if name != "language_model"]
    parts += [layer for layer in getattr(language, "layers", []) if "CrossAttention" in type(layer).__name__]
    return [param for part in parts for param in part.parameters()]


def freeze_vision(model: nn.Module) -> int:
    """Stop gradients to `vision_parameters(model)`; returns how many parameters it froze (ZeRO-3: whole sizes)."""
    frozen = vision_parameters(model)
    for param in frozen:
        param.requires_grad_(False)
    return sum(parameter_count(param) for param in frozen)


def parameter_count(param: nn.Parameter) -> int:
    """Elements of `param`: its whole size also when ZeRO-3 has partitioned it (`ds_numel`)."""
    return getattr(param, "ds_numel", param.numel())
