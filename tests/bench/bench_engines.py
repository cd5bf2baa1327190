"""Engine benchmark: vLLM vs the transformers engine behind the same Serve endpoint (`make bench`).

SmolLM2-135M, fp32, 1 replica per engine, GeneralPoints prompts (the env's own first turn of
different hands), 64 new tokens, temperature 1, seeded:

- tokens/s over HTTP at 1 / 8 / 32 / 64 concurrent requests, the two engines alternating A B A B
  (ratios of the medians of ROUNDS rounds; both engines cap a batch at `max_batch_size` = 32);
- replica start-up (serve.run until ready) and resident memory (replica + vLLM's processes);
- weight swap with 2 replicas, a state dict through the object store vs a weights file's path
  (`cluster/weight_files.py`, what training runs push), alternating: seconds from the weights in
  the learner's memory until both replicas serve them (object store: `ray.put` + broadcast; file:
  write + broadcast), and each replica's private memory afterwards.

    .venv/bin/python -m pytest tests/bench/bench_engines.py -s -p no:cacheprovider
"""

import asyncio
import statistics
import time

import gymnasium as gym
import httpx
import pytest
import ray
from ray import serve

import envs  # noqa: F401 (registers the environments)
from cluster.weight_files import weights_path
from learner.export import write_weights_file
from learner.models import load_policy
from serving.app import build_app
from serving.config import ServingConfig
from tests.serve_fixtures import serve_http

MODEL, NEW_TOKENS, ROUNDS, SWAP_ROUNDS = "smollm2-135m", 64, 2, 3
SYNC_WAYS = ["object store", "weights file"]
CONCURRENCY = [1, 8, 32, 64]
ENGINES = ["transformers", "vllm"]


def _gp_messages(count: int) -> list[list[dict]]:
    env = gym.make("sftrl/GeneralPoints-v0")
    return [env.reset(seed=seed)[0]["messages"] for seed in range(count)]


def _config(engine: str, replicas: int) -> ServingConfig:
    return ServingConfig(
        model=MODEL,
        engine=engine,
        app_name=f"{engine}-{replicas}",
        route_prefix=f"/{engine}-{replicas}",
        num_replicas=replicas,
        limits={"max_queued_requests": 256},
    )


def _deploy(config: ServingConfig) -> float:
    start = time.perf_counter()
    serve.run(build_app(config), name=config.app_name, route_prefix=config.route_prefix)
    return time.perf_counter() - start


async def _burst(url: str, bodies: list[dict]) -> tuple[int, float]:
    async with httpx.AsyncClient(timeout=600) as client:
        start = time.perf_counter()
        replies = await asyncio.gather(*(client.post(f"{url}/v1/generate", json=b) for b in bodies))
        seconds = time.perf_counter() - start
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies if r.status_code != 200][:2]
    return sum(len(r.json()["output_token_ids"]) for r in replies), seconds


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_engines_side_by_side(tmp_path):
    messages = _gp_messages(max(CONCURRENCY))
    with serve_http(num_cpus=8) as root:
        startup, memory = {}, {}
        for engine in ENGINES:
            startup[engine] = _deploy(_config(engine, 1))
            info = serve.get_app_handle(f"{engine}-1").broadcast("info").results()[0]
            memory[engine] = info["rss_mb"], info["private_mb"]
        rates = {(e, c): [] for e in ENGINES for c in CONCURRENCY}
        for concurrency in CONCURRENCY:
            bodies = [
                {"messages": m, "max_new_tokens": NEW_TOKENS, "temperature": 1.0, "seed": i}
                for i, m in enumerate(messages[:concurrency])
            ]
            for engine in ENGINES:  # warm-up, untimed
                asyncio.run(_burst(f"{root}/{engine}-1", bodies[:2]))
            for _ in range(ROUNDS):
                for engine in ENGINES:
                    tokens, seconds = asyncio.run(_burst(f"{root}/{engine}-1", bodies))
                    rates[engine, concurrency].append(tokens / seconds)
        for engine in ENGINES:
            serve.delete(f"{engine}-1")

        swaps = {(e, way): [] for e in ENGINES for way in SYNC_WAYS}
        swap_memory = {}
        state = load_policy(MODEL).model.state_dict()
        for engine in ENGINES:
            _deploy(_config(engine, 2))
            handle = serve.get_app_handle(f"{engine}-2")
            for version in range(1, 2 * SWAP_ROUNDS + 1):
                way = SYNC_WAYS[version % 2]
                start = time.perf_counter()
                if way == "object store":  # the old sync: a state dict through Ray's object store
                    weights = ray.put(state)
                else:  # a training run's sync: rank 0 writes the file, the replicas read it
                    weights = str(write_weights_file(state, weights_path(tmp_path, version)))
                reports = handle.broadcast("load_weights", weights, version).results()
                swaps[engine, way].append(time.perf_counter() - start)
                assert all(r["swapped"] for r in reports)
            swap_memory[engine] = [info["private_mb"] for info in handle.broadcast("info").results()]
            serve.delete(f"{engine}-2")

    print(f"\nengine benchmark: {MODEL} fp32, GP prompts, {NEW_TOKENS} new tokens, medians of {ROUNDS} A B rounds")
    print("concurrent | transformers tok/s | vllm tok/s | vllm / transformers")
    for concurrency in CONCURRENCY:
        a, b = (statistics.median(rates[e, concurrency]) for e in ENGINES)
        print(f"{concurrency:10d} | {a:18.1f} | {b:10.1f} | {b / a:6.2f}x")
    for engine in ENGINES:
        rss, private = memory[engine]
        print(f"{engine}: start-up {startup[engine]:.1f} s, RSS {rss:.0f} MB (private {private:.0f} MB)")
        for way in SYNC_WAYS:
            seconds = swaps[engine, way]
            print(f"  swap, 2 replicas, {way}: median {statistics.median(seconds):.2f} s of {len(seconds)}")
        print(f"  private MB per replica after the swaps: {', '.join(f'{mb:.0f}' for mb in swap_memory[engine])}")
