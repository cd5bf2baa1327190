"""The learner scores the server's samples as the server did, at every sampling temperature.

The server's own generation (`serving.generation.generate_batch`, fp32 `tiny`) samples at T; a
1-rank ZeRO-3 `LearnerEngine` (gloo, CPU, fp32) recomputes the log-probs of the same tokens inside
rl_step, which reports the largest difference as `rl/logprob_diff_max`. T = 0 is greedy, scored at
1 by both. Mislabelling the samples as T = 1 (the learner before issue 11) breaks the parity.
In bf16 (server weights and learner both bfloat16) the parity holds to BF16_DIFF_MAX instead of 1e-4.
"""

import pytest
import torch

from learner.batch import Sample
from learner.config import LearnerConfig
from learner.distributed import free_port, init_distributed
from learner.engine import LearnerEngine
from learner.models import load_policy
from learner.prompt_encoding import encode_prompt
from serving.generation import GenerationRequest, generate_batch

pytestmark = pytest.mark.integration
TEMPERATURES = [0.0, 0.2, 0.7, 1.0]
BF16_DIFF_MAX = 0.05  # measured <= 0.010 on `tiny` (fp32: 1e-4); PPO clips |log ratio| at ~0.18
QUESTIONS = ["Cards: 3, 3, 8, 8. Make 24.", "Turn left or right?", "hi"]


def serve_samples(dtype: torch.dtype) -> dict[float, list[Sample]]:
    """The server's samples of QUESTIONS at each temperature (different prompt lengths, one batch each)."""
    policy = load_policy("tiny", dtype=dtype)
    prompts = [encode_prompt(policy, [{"role": "user", "content": q}]).input_ids for q in QUESTIONS]
    samples = {}
    for temperature in TEMPERATURES:
        requests = [GenerationRequest(p, 12, temperature=temperature, seed=i) for i, p in enumerate(prompts)]
        results = generate_batch(policy, requests)
        samples[temperature] = [
            Sample(request.prompt_ids, result.output_ids, logprobs=result.logprobs, temperature=temperature)
            for request, result in zip(requests, results, strict=True)
        ]
    return samples


@pytest.fixture(scope="module")
def served():
    return serve_samples(torch.float32)


@pytest.fixture(scope="module")
def group():
    init_distributed(0, 1, master_port=free_port())  # this process is the whole (1-rank) group


@pytest.fixture(scope="module")
def engine(group):
    # advantage 0 gives a zero gradient, so the weights stay the server's across rl_steps
    return LearnerEngine(LearnerConfig(model="tiny", algo="grpo", dtype="float32", lr=1e-9))


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_learner_logprobs_match_the_servers_at_its_temperature(served, engine, temperature):
    metrics = engine.rl_step(served[temperature])
    assert metrics["rl/logprob_diff_max"] <= 1e-4, metrics
    assert abs(metrics["rl/logprob_diff_mean"]) <= 1e-4


@pytest.mark.parametrize("temperature", [0.2, 0.7])
def test_scoring_at_temperature_one_breaks_the_parity(served, engine, temperature):
    mislabelled = [
        Sample(s.prompt_ids, s.output_ids, logprobs=s.logprobs, temperature=1.0) for s in served[temperature]
    ]
    assert engine.rl_step(mislabelled)["rl/logprob_diff_max"] > 0.05  # 1.8 at T = 0.2, 0.14 at T = 0.7


def test_bf16_learner_logprobs_match_a_bf16_servers(group):
    """serving.dtype=bfloat16 with learner.dtype=bfloat16: both round to bf16, so parity is looser (not 1e-4)."""
    served = serve_samples(torch.bfloat16)
    engine = LearnerEngine(LearnerConfig(model="tiny", algo="grpo", dtype="bfloat16", lr=1e-9))
    for temperature in TEMPERATURES:
        metrics = engine.rl_step(served[temperature])
        assert metrics["rl/logprob_diff_max"] <= BF16_DIFF_MAX, (temperature, metrics)
    # the tolerance still catches a real mismatch: scoring T = 0.2 samples at T = 1
    mislabelled = [Sample(s.prompt_ids, s.output_ids, logprobs=s.logprobs, temperature=1.0) for s in served[0.2]]
    assert engine.rl_step(mislabelled)["rl/logprob_diff_max"] > BF16_DIFF_MAX
