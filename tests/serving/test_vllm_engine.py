"""The vLLM engine (real vLLM, `tiny` on CPU) keeps the engine contract; the learner scores its samples as it did.

One engine per dtype for the module (both start at once, ~40-50 s), each driven from a background
event loop as the Serve replica drives it. The parity tests feed vLLM's samples to a 1-rank ZeRO-3
`LearnerEngine` (gloo), which reports the largest difference between its log-probs and vLLM's as
`rl/logprob_diff_max`.
"""

import asyncio
import concurrent.futures
import threading

import pytest
import torch

from learner.batch import Sample
from learner.config import LearnerConfig
from learner.distributed import free_port, init_distributed
from learner.engine import LearnerEngine
from learner.export import write_weights_file
from learner.models import load_policy, load_prompt_codec
from learner.prompt_encoding import encode_prompt
from serving.config import ServingConfig
from serving.generation import GenerationRequest
from serving.runtime import start_runtime
from serving.weights import StaleVersionError
from tests.serving.test_serving_app import torch_randn_like

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TEMPERATURES = [0.0, 0.2, 0.7, 1.0]
FP32_DIFF_MAX = 1e-4
BF16_DIFF_MAX = 0.05  # as the transformers engine's bf16 parity (tests/learner/test_logprob_parity.py)
QUESTIONS = ["Cards: 3, 3, 8, 8. Make 24.", "Turn left or right?", "hi"]


class Loop:
    """An event loop in a thread: `run(coroutine)` waits for its result."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine, timeout=300):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _start(dtype: str) -> tuple[Loop, concurrent.futures.Future]:
    """A loop and the future of its engine: engines of both dtypes start at once (start-up is mostly imports)."""
    loop = Loop()
    config = ServingConfig(model="tiny", engine="vllm", dtype=dtype)
    return loop, asyncio.run_coroutine_threadsafe(start_runtime(config, device="cpu"), loop.loop)


@pytest.fixture(scope="module")
def engines():
    starting = {dtype: _start(dtype) for dtype in ("float32", "bfloat16")}
    started = {dtype: (loop, future.result(300).engine) for dtype, (loop, future) in starting.items()}
    yield started
    for loop, engine in started.values():
        engine.shutdown()
        loop.stop()


@pytest.fixture(scope="module")
def fp32(engines):
    return engines["float32"]


@pytest.fixture(scope="module")
def prompts():
    codec = load_prompt_codec("tiny")
    return [encode_prompt(codec, [{"role": "user", "content": q}]).input_ids for q in QUESTIONS]


@pytest.fixture(scope="module")
def group():
    init_distributed(0, 1, master_port=free_port())  # this process is the whole (1-rank) group


def _generate(loop, engine, requests):
    async def all_of():
        return await asyncio.gather(*(engine.generate(r) for r in requests))

    outcomes = loop.run(all_of())
    assert all(o.error is None for o in outcomes), [o.error for o in outcomes]
    return outcomes


def _samples(loop, engine, prompts, temperature):
    requests = [GenerationRequest(p, 12, temperature=temperature, seed=i) for i, p in enumerate(prompts)]
    outcomes = _generate(loop, engine, requests)
    return [
        Sample(request.prompt_ids, o.result.output_ids, logprobs=o.result.logprobs, temperature=temperature)
        for request, o in zip(requests, outcomes, strict=True)
    ]


# ---------------------------------------------------------------- the contract


def test_ids_logprobs_and_finish_reasons(fp32, prompts):
    loop, engine = fp32
    by_length, by_stop = _generate(
        loop,
        engine,
        [
            GenerationRequest(prompts[0], 7, temperature=0.0),
            GenerationRequest(prompts[0], 30, stop=["\n\n"], temperature=0.0),
        ],
    )
    assert by_length.result.finish_reason == "length" and len(by_length.result.output_ids) == 7
    assert len(by_length.result.logprobs) == 7 and all(lp <= 0 for lp in by_length.result.logprobs)
    stopped = by_stop.result
    tokenizer = load_prompt_codec("tiny").tokenizer
    assert stopped.finish_reason == "stop" and "\n\n" in tokenizer.decode(stopped.output_ids)  # `tiny` greedy: newlines
    assert "\n\n" not in stopped.text  # text cut before the stop string, ids kept up to the token completing it


def test_an_eos_token_ends_the_request_and_is_kept(fp32, prompts):
    loop, engine = fp32
    greedy = _generate(loop, engine, [GenerationRequest(prompts[1], 5, temperature=0.0)])[0].result
    first = greedy.output_ids[0]
    saved, engine.eos_token_ids = engine.eos_token_ids, [first]  # the token greedy decoding emits first
    try:
        ended = _generate(loop, engine, [GenerationRequest(prompts[1], 5, temperature=0.0)])[0].result
    finally:
        engine.eos_token_ids = saved
    assert ended.finish_reason == "stop" and ended.output_ids == [first]


def test_a_seeded_request_samples_the_same_alone_or_beside_others(fp32, prompts):
    loop, engine = fp32
    request = GenerationRequest(prompts[0], 10, temperature=1.0, seed=42)
    alone = _generate(loop, engine, [request])[0].result
    mates = [GenerationRequest(p, 6, temperature=0.9) for p in prompts]
    together = _generate(loop, engine, [mates[0], request, *mates[1:]])[1].result
    assert together.output_ids == alone.output_ids
    other = _generate(loop, engine, [GenerationRequest(prompts[0], 10, temperature=1.0, seed=43)])[0].result
    assert other.output_ids != alone.output_ids


def test_a_burst_of_seeded_requests_longer_than_a_step_keeps_the_engine_alive(fp32, prompts):
    """40 seeded prompts of ~300 tokens: more prompt tokens than vLLM's default step budget (2,048).

    vLLM 0.32's CPU engine died on this with chunked prefill ("CPU Generator does not use offset").
    """
    loop, engine = fp32
    distinct = [[1000 + i, *prompts[0] * 8] for i in range(40)]  # ~300 tokens each, no prefix shared
    outcomes = _generate(loop, engine, [GenerationRequest(ids, 4, seed=i) for i, ids in enumerate(distinct)])
    assert all(len(o.result.output_ids) == 4 for o in outcomes)
    engine.check_health()


# ---------------------------------------------------------------- parity with the learner


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_the_learner_scores_vllm_samples_as_vllm_did(fp32, prompts, group, temperature):
    loop, engine = fp32
    learner = _learner("float32")
    metrics = learner.rl_step(_samples(loop, engine, prompts, temperature))
    assert metrics["rl/logprob_diff_max"] <= FP32_DIFF_MAX, metrics


def test_bf16_parity(engines, prompts, group):
    loop, engine = engines["bfloat16"]
    learner = _learner("bfloat16")
    for temperature in TEMPERATURES:
        metrics = learner.rl_step(_samples(loop, engine, prompts, temperature))
        assert metrics["rl/logprob_diff_max"] <= BF16_DIFF_MAX, (temperature, metrics)


_LEARNERS = {}


def _learner(dtype: str) -> LearnerEngine:
    """A learner on `tiny` whose weights stay the server's (advantage 0: zero gradient), one per dtype."""
    if dtype not in _LEARNERS:
        _LEARNERS[dtype] = LearnerEngine(LearnerConfig(model="tiny", algo="grpo", dtype=dtype, lr=1e-9))
    return _LEARNERS[dtype]


# ---------------------------------------------------------------- weight swaps


def _shifted(seed: int) -> dict[str, torch.Tensor]:
    state = load_policy("tiny").model.state_dict()
    return {name: t + 0.05 * torch_randn_like(t, seed=seed + i) for i, (name, t) in enumerate(state.items())}


def test_a_swap_changes_the_outputs_between_requests_never_inside_one(fp32, prompts):
    loop, engine = fp32
    probe = GenerationRequest(prompts[0], 8, temperature=0.0)
    before = _generate(loop, engine, [probe])[0]
    version = engine.version + 1
    long = GenerationRequest(prompts[2], 200, temperature=1.0, seed=5)

    async def swap_during_a_request():
        running = asyncio.ensure_future(engine.generate(long))
        while not engine.gate.running:  # admitted and generating
            await asyncio.sleep(0.01)
        swap = asyncio.ensure_future(engine.load_weights(_shifted(0), version))
        while not engine.gate.swap_pending:  # the state dict is written to a file first
            await asyncio.sleep(0.01)
        late = asyncio.ensure_future(engine.generate(probe))  # arrives while the swap waits
        return await running, await swap, await late

    early, report, late = loop.run(swap_during_a_request())
    assert early.version == version - 1 and len(early.result.output_ids) == 200  # finished on the old weights
    assert report.swapped and report.version == version and late.version == version
    assert late.result.output_ids != before.result.output_ids or late.result.logprobs != before.result.logprobs
    snapshot_version, snapshot = loop.run(engine.snapshot())
    assert snapshot_version == version
    torch.testing.assert_close(snapshot["model.norm.weight"], _shifted(0)["model.norm.weight"])


def test_a_weights_file_is_loaded_from_where_it_lies(fp32, prompts, tmp_path):
    loop, engine = fp32
    probe = GenerationRequest(prompts[0], 8, temperature=0.0)
    version = engine.version + 1
    path = write_weights_file(_shifted(7), tmp_path / "v.safetensors")
    assert loop.run(engine.load_weights(str(path), version)).swapped
    by_file = _generate(loop, engine, [probe])[0]
    assert loop.run(engine.load_weights(_shifted(7), version + 1)).swapped  # the same weights as a state dict
    by_dict = _generate(loop, engine, [probe])[0]
    assert by_file.version == version and by_file.result.output_ids == by_dict.result.output_ids
    assert path.exists()  # the writer's file: the engine never deletes it


def test_stale_and_malformed_weights_are_refused_and_change_nothing(fp32, prompts):
    loop, engine = fp32
    probe = GenerationRequest(prompts[0], 8, temperature=0.0)
    before, version = _generate(loop, engine, [probe])[0], engine.version
    with pytest.raises(StaleVersionError):
        loop.run(engine.load_weights(_shifted(1), version - 1))
    assert not loop.run(engine.load_weights(_shifted(1), version)).swapped  # the served version: a no-op
    bad = _shifted(1)
    bad["model.norm.weight"] = torch.ones(3)
    with pytest.raises(ValueError, match="wrong shape"):
        loop.run(engine.load_weights(bad, version + 1))
    after = _generate(loop, engine, [probe])[0]
    assert after.version == version and after.result.output_ids == before.result.output_ids
