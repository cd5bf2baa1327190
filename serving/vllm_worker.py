"""Methods vLLM's workers gain for sftrl (`worker_extension_cls`), called by name through `collective_rpc`.

A named method rather than a shipped function: vLLM refuses to unpickle functions sent to its
workers unless `VLLM_ALLOW_INSECURE_SERIALIZATION` is set.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from safetensors import safe_open

from learner.weight_stream import StreamPlan, receive

EXTENSION = "serving.vllm_worker.WeightLoader"
LOAD_SAFETENSORS = "sftrl_load_safetensors"
RECEIVE_STREAM = "sftrl_receive_stream"


def _tensors(path: str) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of a safetensors file, read one tensor at a time."""
    with safe_open(path, framework="pt") as file:
        for name in file.keys():  # noqa: SIM118 (safe_open is not a mapping)
            yield name, file.get_tensor(name)


class WeightLoader:
    """Mixed into vLLM's worker class: `self.model_runner` is the worker's."""

    def sftrl_load_safetensors(self, path: str) -> None:
        """Load HF-named weights from the safetensors file `path` into the live model, in place.

        `model_runner.reload_weights` runs the model's own loading and the CPU runner's weight
        repacking again; the model's `load_weights` alone fails on a running CPU engine, whose
        linear weights were repacked after the first load.
        """
        self.model_runner.reload_weights(weights_iterator=_tensors(path))

    def sftrl_receive_stream(self, plan: dict, address: str) -> None:
        """Join the weight stream `plan` (`StreamPlan.to_dict()`) from this host's `address` and load it as it arrives.

        The same reload as a file's: each received tensor goes through the model's own loading.
        """
        self.model_runner.reload_weights(weights_iterator=receive(StreamPlan.from_dict(plan), address=address))
