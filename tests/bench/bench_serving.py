"""Serving benchmark with smollm2-135m, 64 new tokens per request; prints its figures (`make bench`).

- batching gain: 32 concurrent HTTP requests vs the same 32 one after another (target >= 4x);
- service overhead: HTTP and handle throughput / in-process `generate_batch` at the same batch size
  (target >= 0.85): at batch 32 against the mean of in-process runs before and after; at batch 1
  as the median of per-request ratios, each request run in-process and over HTTP in turn;
- weight swap: seconds from `broadcast("load_weights", ...)` until both of 2 replicas serve the new
  version, and GB/s of weights moved; resident memory per replica.
- sampling: milliseconds per decode step of `sample_tokens` at batch 64 over SmolLM2's 49,152-token
  vocabulary, 1 torch thread (the two-stage Gumbel-max draws 448 noise values per row, not 49,152,
  hashed from (seed, step, position) for the whole batch at once), a new step index every call.
Throughput counts generated tokens (seeded sampling makes every mode generate the same ones).

    .venv/bin/python -m pytest tests/bench/bench_serving.py -s -p no:cacheprovider
"""

import asyncio
import statistics
import threading
import time
from typing import NamedTuple

import httpx
import pytest
import ray
import torch
from ray import serve

from learner.models import load_policy
from learner.prompt_encoding import encode_prompt
from serving.app import build_app
from serving.config import ServingConfig
from serving.generation import GenerationRequest, generate_batch, sample_tokens
from tests.serve_fixtures import serve_http

MODEL, NEW_TOKENS, N_REQUESTS, THREADS = "smollm2-135m", 64, 32, 1
N_PAIRS = 8  # batch-1 requests timed in-process and over HTTP in turn (paired ratios)
SAMPLE_BATCH, SAMPLE_VOCAB, SAMPLE_STEPS = 64, 49_152, 30  # one decode step's sampling, timed alone


def _bodies() -> list[dict]:
    return [
        {
            "messages": [{"role": "user", "content": f"Tell me fact number {i} about the sea."}],
            "max_new_tokens": NEW_TOKENS,
            "temperature": 1.0,
            "seed": i,
        }
        for i in range(N_REQUESTS)
    ]


def _tokens(replies) -> int:
    return sum(len(r["output_token_ids"]) for r in replies)


def _local_requests(policy) -> list[GenerationRequest]:
    """The bodies as in-process requests: the same prompt ids and seeds, so the same tokens come out."""
    return [
        GenerationRequest(encode_prompt(policy, b["messages"]).input_ids, NEW_TOKENS, seed=b["seed"]) for b in _bodies()
    ]


def _local_batched(policy, requests: list[GenerationRequest]) -> float:
    start = time.perf_counter()
    outputs = generate_batch(policy, requests)
    return sum(len(r.output_ids) for r in outputs) / (time.perf_counter() - start)


def _paired_batch_one(policy, requests: list[GenerationRequest], url: str) -> tuple[list[float], float]:
    """Each of the first N_PAIRS requests in-process, then over HTTP, in turn.

    Returns the per-pair HTTP/in-process throughput ratios and the HTTP sequential rate (tok/s).
    """
    ratios, tokens, http_s = [], 0, 0.0
    with httpx.Client(timeout=600) as client:
        for request, body in zip(requests[:N_PAIRS], _bodies(), strict=False):
            start = time.perf_counter()
            local = generate_batch(policy, [request])[0]
            local_s = time.perf_counter() - start
            start = time.perf_counter()
            reply = client.post(f"{url}/v1/generate", json=body).json()
            seconds = time.perf_counter() - start
            ratios.append((len(reply["output_token_ids"]) / seconds) / (len(local.output_ids) / local_s))
            tokens, http_s = tokens + len(reply["output_token_ids"]), http_s + seconds
    return ratios, tokens / http_s


async def _http_concurrent(url: str) -> float:
    async with httpx.AsyncClient(timeout=600) as client:
        start = time.perf_counter()
        replies = await asyncio.gather(*(client.post(f"{url}/v1/generate", json=b) for b in _bodies()))
        return _tokens([r.json() for r in replies]) / (time.perf_counter() - start)


def _handle_concurrent(handle) -> float:
    start = time.perf_counter()
    replies = [response.result() for response in [handle.generate.remote(b) for b in _bodies()]]
    return _tokens(replies) / (time.perf_counter() - start)


class SwapTiming(NamedTuple):
    served_s: float  # broadcast -> every replica reports the new version
    returned_s: float  # broadcast -> results() returned (includes publishing to the registry)
    copy_s: float  # slowest replica's in-place copy under the lock


def _swap(handle, weights: dict, version: int) -> SwapTiming:
    """Time one broadcast swap to `version`, polling the replicas' versions while it runs."""
    ref = ray.put(weights)
    reports: list[dict] = []
    start = time.perf_counter()
    broadcast = threading.Thread(
        target=lambda: reports.extend(handle.broadcast("load_weights", ref, version).results())
    )
    broadcast.start()
    while {info["version"] for info in handle.broadcast("info").results()} != {version}:
        time.sleep(0.05)
    served = time.perf_counter() - start
    broadcast.join()
    return SwapTiming(served, time.perf_counter() - start, max(r["seconds"] for r in reports))


@pytest.fixture(scope="module")
def root():
    with serve_http(num_cpus=4) as url:
        yield url


@pytest.mark.timeout(3600)
def test_batching_gain_and_service_overhead(root):
    torch.set_num_threads(THREADS)
    policy = load_policy(MODEL)
    requests = _local_requests(policy)
    generate_batch(policy, requests[:2])  # warm-up
    config = ServingConfig(
        model=MODEL,
        app_name="bench",
        route_prefix="/bench",
        num_cpus_per_replica=THREADS,
        torch_threads=THREADS,
        max_batch_size=N_REQUESTS,
        batch_wait_timeout_s=0.1,
        batch_max_wait_s=1.0,
    )
    handle = serve.run(build_app(config), name=config.app_name, route_prefix=config.route_prefix)
    url = root + config.route_prefix
    handle.generate.remote(_bodies()[0]).result()  # warm-up
    # Batch 32, side by side: in-process, HTTP, handle, in-process again (the machine's speed drifts).
    local_first = _local_batched(policy, requests)
    batches = [handle.info.remote().result()["batches"]]
    http_batched = asyncio.run(_http_concurrent(url))
    batches.append(handle.info.remote().result()["batches"])
    handle_batched = _handle_concurrent(handle)
    batches.append(handle.info.remote().result()["batches"])
    local_batched = (local_first + _local_batched(policy, requests)) / 2
    ratios, http_sequential = _paired_batch_one(policy, requests, url)
    info = handle.info.remote().result()
    serve.delete(config.app_name)
    print(f"\n[bench_serving] {MODEL}, {NEW_TOKENS} new tokens, {N_REQUESTS} requests, {THREADS} torch threads, CPU")
    print(
        f"  in-process  : batch {N_REQUESTS} {local_batched:.1f} tok/s (mean of the runs before and after HTTP, handle)"
    )
    print(
        f"  HTTP        : sequential {http_sequential:.1f} tok/s, {N_REQUESTS} concurrent {http_batched:.1f} tok/s "
        f"({batches[1] - batches[0]} batches)"
    )
    print(f"  handle      : {N_REQUESTS} concurrent {handle_batched:.1f} tok/s ({batches[2] - batches[1]} batches)")
    print(f"  batching gain (HTTP concurrent / sequential): {http_batched / http_sequential:.2f}x (target >= 4)")
    print(
        f"  service overhead, batch {N_REQUESTS}: HTTP {http_batched / local_batched:.2f}, "
        f"handle {handle_batched / local_batched:.2f} (target >= 0.85)"
    )
    print(
        f"  service overhead, batch 1, {N_PAIRS} paired requests: HTTP median {statistics.median(ratios):.2f} "
        f"(min {min(ratios):.2f}, max {max(ratios):.2f}) (target >= 0.85)"
    )
    print(f"  memory, 1 replica: resident {info['rss_mb']:.0f} MiB, private (USS) {info['private_mb']:.0f} MiB")
    assert http_batched > 0 and http_sequential > 0


@pytest.mark.timeout(1800)
def test_weight_swap_two_replicas(root):
    config = ServingConfig(
        model=MODEL, app_name="swap", route_prefix="/swap", num_replicas=2, num_cpus_per_replica=1, torch_threads=1
    )
    handle = serve.run(build_app(config), name=config.app_name, route_prefix=config.route_prefix)
    weights = {name: tensor.clone() for name, tensor in load_policy(MODEL).model.state_dict().items()}
    size_gb = sum(t.numel() * t.element_size() for t in weights.values()) / 1e9
    first = _swap(handle, weights, 1)
    second = _swap(handle, weights, 2)
    infos = handle.broadcast("info").results()
    serve.delete(config.app_name)
    print(f"\n[bench_serving] weight swap, 2 replicas, {size_gb:.2f} GB state dict (fp32)")
    for label, timing in (("first", first), ("second", second)):
        print(
            f"  {label} swap: {timing.served_s:.2f} s until both serve the new version "
            f"({2 * size_gb / timing.served_s:.2f} GB/s into 2 replicas); broadcast returned after "
            f"{timing.returned_s:.2f} s (incl. publishing to the registry); in-place copy {timing.copy_s:.2f} s"
        )
    memory = ", ".join(f"resident {info['rss_mb']:.0f} MiB / private {info['private_mb']:.0f} MiB" for info in infos)
    print(f"  memory per replica after the swaps (resident counts shared object-store pages): {memory}")
    assert {info["version"] for info in infos} == {2}


def test_sampling_step_time():
    torch.set_num_threads(THREADS)
    logits = 4 * torch.randn(SAMPLE_BATCH, SAMPLE_VOCAB, generator=torch.Generator().manual_seed(0))  # (B, V)
    print(f"\n[bench_serving] sample_tokens, batch {SAMPLE_BATCH}, vocabulary {SAMPLE_VOCAB}, {THREADS} torch thread")
    for temperature, top_p in ((1.0, 1.0), (0.2, 1.0), (0.7, 0.9)):
        seeds = torch.arange(SAMPLE_BATCH)  # (B,) int64
        temperatures, top_ps = torch.full((SAMPLE_BATCH,), temperature), torch.full((SAMPLE_BATCH,), top_p)
        seconds = []
        for step in range(SAMPLE_STEPS + 1):  # the first call warms up
            start = time.perf_counter()
            sample_tokens(logits, temperatures, top_ps, seeds=seeds, step=step)
            seconds.append(time.perf_counter() - start)
        step_ms = 1e3 * statistics.median(seconds[1:])
        print(f"  temperature {temperature}, top_p {top_p}: {step_ms:.1f} ms per step (median of {SAMPLE_STEPS})")
        assert step_ms > 0
