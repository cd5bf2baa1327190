"""Unit tests of batched generation, request preparation, weight versions and the runtime, on `tiny` (no Ray)."""

import asyncio
import math
import threading

import pytest
import torch
from scipy.stats import chi2

from learner.models import load_policy
from learner.prompt_encoding import encode_prompt
from serving import generation
from serving.config import ServingConfig, ServingLimits
from serving.generation import (
    NOISE_BLOCK,
    GenerationRequest,
    _gumbel_noise,
    _two_stage_gumbel_max,
    _uniform_noise,
    generate_batch,
    sample_tokens,
)
from serving.limits import RequestError
from serving.prepare import PolicyLimits, prepare
from serving.runtime import PolicyRuntime
from serving.schemas import GenerateRequest
from serving.transformers_engine import TransformersEngine, _Pending
from serving.weights import StaleVersionError, VersionedWeights


@pytest.fixture(scope="module")
def tiny():
    return load_policy("tiny")


def _ids(policy, text):
    return encode_prompt(policy, [{"role": "user", "content": text}]).input_ids


def _teacher_forced_logprobs(policy, prompt, output, temperature):
    ids = torch.tensor([prompt + output])  # (1, T)
    with torch.no_grad():
        logits = policy.model(input_ids=ids).logits[0, len(prompt) - 1 : -1]  # (n_out, V)
    logp = torch.log_softmax(logits / temperature, dim=-1)  # (n_out, V)
    return logp.gather(-1, torch.tensor(output)[:, None]).squeeze(-1)  # (n_out,)


def test_logprobs_match_a_teacher_forced_pass_despite_padding_and_early_finish(tiny):
    prompts = [_ids(tiny, "hi"), _ids(tiny, "a much longer prompt than the first one, padded on the left")]
    requests = [
        GenerationRequest(prompts[0], 3, temperature=0.7, seed=1),
        GenerationRequest(prompts[1], 9, temperature=1.3, seed=2),
    ]
    results = generate_batch(tiny, requests)
    assert [len(r.output_ids) for r in results] == [3, 9]
    assert all(r.finish_reason == "length" for r in results)
    for request, result in zip(requests, results, strict=True):
        expected = _teacher_forced_logprobs(tiny, request.prompt_ids, result.output_ids, request.temperature)
        torch.testing.assert_close(torch.tensor(result.logprobs), expected, atol=2e-4, rtol=1e-4)


def test_a_seeded_request_samples_the_same_alone_or_in_a_batch(tiny):
    request = GenerationRequest(_ids(tiny, "seeded"), 8, temperature=1.0, seed=42)
    alone = generate_batch(tiny, [request])[0]
    mates = [GenerationRequest(_ids(tiny, f"mate {i} " * (i + 1)), 5, temperature=0.9) for i in range(3)]
    together = generate_batch(tiny, mates[:1] + [request] + mates[1:])[1]
    assert together.output_ids == alone.output_ids
    other_seed = generate_batch(tiny, [GenerationRequest(request.prompt_ids, 8, seed=43)])[0]
    assert other_seed.output_ids != alone.output_ids


def test_two_stage_sampling_draws_the_softmax_distribution_within_the_nucleus():
    vocab = 2 * NOISE_BLOCK + 37  # three blocks, the last one padded
    heavy = [3, NOISE_BLOCK + 100, 2 * NOISE_BLOCK + 36]  # one likely token in each block
    logits = torch.full((vocab,), -3.0)
    logits[heavy] = torch.tensor([2.0, 1.5, 1.0])
    rows = 6000
    temperature = torch.full((rows,), 0.7)
    top_p = torch.where(torch.arange(rows) % 2 == 0, 1.0, 0.3)  # odd rows: only the top token (p = 0.46) is left
    seeds = torch.arange(rows)  # (B,) int64
    tokens, logprobs = sample_tokens(logits.expand(rows, vocab), temperature, top_p, seeds=seeds, step=0)
    logp = torch.log_softmax(logits / 0.7, dim=-1)  # (V,)
    torch.testing.assert_close(logprobs, logp[tokens])
    assert (tokens[1::2] == heavy[0]).all()
    frequency = torch.bincount(tokens[0::2], minlength=vocab).float() / (rows // 2)  # (V,)
    expected = logp.exp()  # (V,)
    sigma = (expected * (1 - expected) / (rows // 2)).sqrt()  # (V,)
    assert ((frequency[heavy] - expected[heavy]).abs() < 4 * sigma[heavy]).all(), (frequency[heavy], expected[heavy])
    light = torch.ones(vocab, dtype=torch.bool)
    light[heavy] = False
    assert abs(frequency[light].sum() - expected[light].sum()) < 4 * (expected[light].sum() / (rows // 2)).sqrt()


def test_one_seed_over_many_steps_and_many_seeds_draw_the_softmax_distribution():
    # chi-square over 128 seeds x 64 decode steps: fails for noise that is not Gumbel (e.g. the
    # uniforms themselves, or -log(u)), for noise that ignores the step or the seed (repeated draws)
    vocab = NOISE_BLOCK + 8  # two blocks, the second one padded
    heavy = [0, 1, 100, NOISE_BLOCK, NOISE_BLOCK + 7]
    logits = torch.full((vocab,), -4.0)
    logits[heavy] = torch.tensor([1.0, 0.5, 0.0, 0.8, -0.5])  # the other 259 tokens hold 37% together
    seeds, steps = torch.arange(128) * 7919 + 2**62, 64  # (B,) int64, large seeds too
    counts = torch.zeros(vocab)
    for step in range(steps):
        ones = torch.ones(len(seeds))
        tokens = sample_tokens(logits.expand(len(seeds), vocab), ones, ones, seeds=seeds, step=step).tokens
        counts += torch.bincount(tokens, minlength=vocab)
    expected = torch.softmax(logits.double(), -1) * len(seeds) * steps  # (V,)
    light = torch.ones(vocab, dtype=torch.bool)
    light[heavy] = False
    observed = torch.cat([counts[heavy], counts[light].sum()[None]]).double()  # (6,)
    binned = torch.cat([expected[heavy], expected[light].sum()[None]])  # (6,) every bin expects over 350
    statistic = float(((observed - binned) ** 2 / binned).sum())
    assert statistic < chi2.ppf(1 - 1e-3, df=len(binned) - 1), (observed, binned)


def test_noise_is_a_splitmix64_hash_of_seed_step_and_position_alone():
    mask = 2**64 - 1

    def mix(x):  # SplitMix64's finaliser on Python ints, as the reference
        x ^= x >> 30
        x = (x * 0xBF58476D1CE4E5B9) & mask
        x ^= x >> 27
        x = (x * 0x94D049BB133111EB) & mask
        return x ^ (x >> 31)

    def uniform(seed, step, position):
        key = mix((seed + (step + 1) * 0x9E3779B97F4A7C15) & mask)
        return ((mix((key + (position + 1) * 0x9E3779B97F4A7C15) & mask) >> 11) | 1) * 2.0**-53

    seeds, count = [0, 1, 42, 2**62 + 12345, 2**63 - 1], 7
    for step in (0, 5, 10**9):
        batch = _uniform_noise(torch.tensor(seeds), step, count)  # (5, 7) float64
        reference = torch.tensor([[uniform(s, step, j) for j in range(count)] for s in seeds], dtype=torch.float64)
        assert torch.equal(batch, reference)  # bit for bit: no rounding anywhere
        assert torch.equal(_uniform_noise(torch.tensor(seeds[3:4]), step, count), batch[3:4])  # alone or batched
        gumbel = torch.tensor([[-math.log(-math.log(u)) for u in row] for row in reference.tolist()])
        torch.testing.assert_close(_gumbel_noise(torch.tensor(seeds), step, count), gumbel)
    assert not torch.equal(_uniform_noise(torch.tensor(seeds), 0, count), _uniform_noise(torch.tensor(seeds), 1, count))


def test_each_step_samples_with_its_index_and_the_seeds_of_the_rows_still_in_the_batch(tiny, monkeypatch):
    calls = []

    def recording(logits, temperature, top_p, *, seeds, step):
        calls.append((seeds.tolist(), step))
        return sample_tokens(logits, temperature, top_p, seeds=seeds, step=step)

    monkeypatch.setattr(generation, "sample_tokens", recording)
    prompt = _ids(tiny, "steps")
    requests = [
        GenerationRequest(prompt, 2, seed=11),
        GenerationRequest(prompt, 4),
        GenerationRequest(prompt, 3, seed=33),
    ]
    generate_batch(tiny, requests)
    unseeded = calls[0][0][1]
    assert 0 <= unseeded < 2**63
    assert calls == [([11, unseeded, 33], 0), ([11, unseeded, 33], 1), ([unseeded, 33], 2), ([unseeded], 3)]


def test_a_block_left_out_of_the_nucleus_is_never_picked_even_beside_negligible_tokens():
    logp = torch.full((200, 2 * NOISE_BLOCK), float("-inf"))
    logp[:, NOISE_BLOCK:] = -100.0  # below the floor of a block's mass: both blocks would weigh the same
    tokens = _two_stage_gumbel_max(logp, torch.arange(200), step=3)
    assert (tokens >= NOISE_BLOCK).all()


def test_tiny_top_p_is_greedy(tiny):
    prompt = _ids(tiny, "nucleus")
    greedy, nucleus = generate_batch(
        tiny,
        [
            GenerationRequest(prompt, 6, temperature=0.0),
            GenerationRequest(prompt, 6, temperature=1.0, top_p=1e-6, seed=5),
        ],
    )
    assert nucleus.output_ids == greedy.output_ids
    torch.testing.assert_close(torch.tensor(nucleus.logprobs), torch.tensor(greedy.logprobs))


def test_stop_string_cuts_the_text_and_ends_with_stop(tiny):
    prompt = _ids(tiny, "stop me")
    free = generate_batch(tiny, [GenerationRequest(prompt, 12, temperature=1.0, seed=7)])[0]
    stop = free.text[6:9]
    stopped = generate_batch(tiny, [GenerationRequest(prompt, 12, temperature=1.0, seed=7, stop=[stop])])[0]
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[: free.text.find(stop)]
    assert stopped.output_ids == free.output_ids[: len(stopped.output_ids)]
    assert len(stopped.logprobs) == len(stopped.output_ids) < 12


def test_eos_ends_with_stop_and_is_kept(tiny, monkeypatch):
    eos = tiny.eos_token_ids[0]
    prompt = _ids(tiny, "end")
    first = generate_batch(tiny, [GenerationRequest(prompt, 5, temperature=0.0)])[0].output_ids[0]
    monkeypatch.setattr(type(tiny), "eos_token_ids", property(lambda self: [eos, first]))
    result = generate_batch(tiny, [GenerationRequest(prompt, 5, temperature=0.0)])[0]
    assert (result.output_ids, result.finish_reason) == ([first], "stop")


# ---------------------------------------------------------------- prepare


def _config(**kwargs):
    return ServingConfig(model="tiny", **kwargs)


def test_prepare_checks_every_limit(tiny):
    limits = PolicyLimits.of(tiny.model.config)
    ok = prepare(tiny, limits, GenerateRequest(prompt_token_ids=[1, 2], max_new_tokens=4), config=_config())
    assert ok.prompt_ids == [1, 2] and ok.max_new_tokens == 4
    cases = [
        (GenerateRequest(prompt_token_ids=[1], max_new_tokens=2000), "max_new_tokens_limit"),
        (GenerateRequest(prompt_token_ids=[1] * limits.context_tokens, max_new_tokens=1), "context_length"),
        (GenerateRequest(prompt_token_ids=[limits.vocab_size]), "vocab_size"),
        (GenerateRequest(prompt_token_ids=[1], stop=["x"] * 9), "max_stop_strings"),
        (GenerateRequest(messages=[{"role": "user", "content": [{"type": "image"}]}]), "images"),
    ]
    for request, code in cases:
        with pytest.raises(RequestError) as error:
            prepare(tiny, limits, request, config=_config())
        assert error.value.code == code and error.value.status == 400


def test_prepare_joins_text_parts_for_a_text_only_template(tiny):
    request = GenerateRequest(messages=[{"role": "user", "content": [{"type": "text", "text": "hello"}]}])
    prepared = prepare(tiny, PolicyLimits.of(tiny.model.config), request, config=_config())
    assert prepared.prompt_ids == _ids(tiny, "hello")
    assert prepared.max_new_tokens == _config().default_max_new_tokens


# ---------------------------------------------------------------- weights


def _shifted(policy, delta):
    return {name: tensor + delta for name, tensor in policy.model.state_dict().items()}


def test_versions_only_go_up_and_bad_weights_change_nothing():
    policy = load_policy("tiny")
    weights = VersionedWeights(policy.model)
    before = policy.model.model.norm.weight.clone()
    assert weights.swap(_shifted(policy, 1.0), 2).swapped
    assert weights.version == 2
    torch.testing.assert_close(policy.model.model.norm.weight, before + 1.0)
    assert not weights.swap(_shifted(policy, 1.0), 2).swapped  # same version: no-op
    with pytest.raises(StaleVersionError):
        weights.swap(_shifted(policy, 1.0), 1)
    bad = {"not.a.param": torch.zeros(1), **_shifted(policy, 5.0)}
    with pytest.raises(ValueError, match="not.a.param"):
        weights.swap(bad, 3)
    assert weights.version == 2
    torch.testing.assert_close(policy.model.model.norm.weight, before + 1.0)


def test_a_swap_waits_for_the_running_batch():
    policy = load_policy("tiny")
    weights = VersionedWeights(policy.model)
    new = _shifted(policy, 1.0)
    with weights.reading() as version:
        swapper = threading.Thread(target=weights.swap, args=(new, 1))
        swapper.start()
        swapper.join(0.3)
        assert swapper.is_alive() and weights.version == version == 0
    swapper.join()
    assert weights.version == 1


# ---------------------------------------------------------------- runtime


def _runtime(policy, config):
    return PolicyRuntime(policy, PolicyLimits.of(policy.model.config), config, TransformersEngine(policy, config))


def test_runtime_batches_concurrent_requests_with_their_own_params(tiny):
    runtime = _runtime(tiny, _config(max_batch_size=8, batch_wait_timeout_s=0.2))
    requests = [
        GenerateRequest(prompt_token_ids=[1, 2 + i], max_new_tokens=2 + i, temperature=0.5 + 0.25 * i, seed=i)
        for i in range(6)
    ]

    async def main():
        return await asyncio.gather(*(runtime.generate(r) for r in requests))

    replies = asyncio.run(main())
    assert [len(r.output_token_ids) for r in replies] == [2 + i for i in range(6)]
    assert [r.prompt_token_ids for r in replies] == [[1, 2 + i] for i in range(6)]
    assert runtime.engine.stats.largest_batch > 1 and runtime.engine.stats.requests == 6
    assert runtime.gate.in_flight == 0


def test_runtime_refuses_past_its_queue_and_recovers(tiny):
    runtime = _runtime(tiny, _config(limits=ServingLimits(max_queued_requests=2)))
    request = GenerateRequest(prompt_token_ids=[1, 2], max_new_tokens=3)

    async def main():
        return await asyncio.gather(*(runtime.generate(request) for _ in range(5)), return_exceptions=True)

    outcomes = asyncio.run(main())
    refused = [o for o in outcomes if isinstance(o, RequestError)]
    assert len(refused) == 3 and all(o.status == 503 and o.retry_after_s == 1 for o in refused)
    assert asyncio.run(runtime.generate(request)).finish_reason == "length"


def test_a_failing_request_does_not_fail_its_batch_mates(tiny):
    engine = TransformersEngine(tiny, _config())
    good = GenerationRequest([1, 2], 2)
    poison = GenerationRequest([1, 10**7], 2)  # out-of-vocabulary id slipped past validation
    outcomes = engine._run_batch([_Pending(good, 0.0), _Pending(poison, 0.0)])
    assert outcomes[0].error is None and len(outcomes[0].result.output_ids) == 2
    assert outcomes[1].error is not None and outcomes[1].result is None


def test_the_transformers_engine_loads_a_weights_file_and_checks_the_version_first(tmp_path):
    from learner.export import write_weights_file

    tiny = load_policy("tiny")  # its own copy: the swap changes the model in place
    engine = TransformersEngine(tiny, _config())
    request = GenerationRequest([1, 2, 3], 4, temperature=0.0)
    before = asyncio.run(engine.generate(request)).result.logprobs
    shifted = {name: t + 0.05 for name, t in tiny.model.state_dict().items()}
    report = asyncio.run(engine.load_weights(str(write_weights_file(shifted, tmp_path / "v1.safetensors")), 1))
    after = asyncio.run(engine.generate(request))
    assert report.swapped and after.version == 1 and after.result.logprobs != before
    assert not asyncio.run(engine.load_weights(str(tmp_path / "never-read.safetensors"), 1)).swapped
    with pytest.raises(StaleVersionError):
        asyncio.run(engine.load_weights(str(tmp_path / "never-read.safetensors"), 0))
    with pytest.raises(FileNotFoundError, match="storage every node shares"):
        asyncio.run(engine.load_weights(str(tmp_path / "elsewhere.safetensors"), 2))
