"""The learner engine without Ray (world size 1, gloo, CPU), on the `tiny` model.

One rank runs DeepSpeed stage 0 by default; it steps as ZeRO-3 does, clipping included.

SFT loss falls; PPO values, value loss, whitening and health metrics; KL to the frozen reference;
the LR schedule per optimizer step or per update; begin_rl's fresh optimizer, schedule and
reference, kept by checkpoints; exported weights equal the engine's; the HF export loads
(from_pretrained, load_policy) and generates the same tokens; GRPO raises the reward of a toy
one-word task (and would lower it with a flipped sign).
"""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from learner.advantages import group_normalised_advantages
from learner.batch import Sample
from learner.config import LearnerConfig
from learner.distributed import free_port, init_distributed
from learner.engine import LearnerEngine
from learner.export import export_hf, gather_policy_state_dict, write_policy_file
from learner.models import load_policy
from learner.partitions import local_partitions
from learner.prompt_encoding import encode_prompt

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny():
    init_distributed(0, 1, master_port=free_port())  # this process is the whole (1-rank) group
    return load_policy("tiny")


def chat_sample(policy, question, answer, **fields):
    prompt = encode_prompt(policy, [{"role": "user", "content": question}]).input_ids
    output = policy.tokenizer(answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
    return Sample(prompt, output, **fields)


@pytest.fixture
def sft_batch(tiny):
    return [chat_sample(tiny, f"Card {n}?", f'{{"formula": "{n}+{n}"}}') for n in range(4)]


def test_sft_loss_falls_on_a_fixed_batch(tiny, sft_batch):
    engine = LearnerEngine(LearnerConfig(model="tiny", algo="sft", lr=1e-2, micro_batch_tokens=64))
    losses = [engine.sft_step(sft_batch)["loss/sft"] for _ in range(6)]
    assert losses[-1] < losses[0] - 1.0, losses
    assert engine.step == 6 and engine.phase == "sft"


def test_one_rank_stage_0_steps_as_zero3_does_and_clips_the_same(tiny, sft_batch):
    # grad_clip far below the gradients' norm: the clip decides the second Adam step (m/sqrt(v) of clipped grads)
    configs = [
        LearnerConfig(model="tiny", algo="sft", lr=1e-2, dtype="float32", grad_clip=1e-3, zero_stage=s) for s in (0, 3)
    ]
    plain, zero3 = (LearnerEngine(config) for config in configs)
    assert (plain.engine.zero_optimization_stage(), zero3.engine.zero_optimization_stage()) == (0, 3)
    assert LearnerEngine(LearnerConfig(model="tiny")).zero_stage == 0  # the default on one rank
    for _ in range(3):
        first, second = plain.sft_step(sft_batch), zero3.sft_step(sft_batch)
        assert first["loss/sft"] == pytest.approx(second["loss/sft"], rel=1e-5)
        assert first["optim/grad_norm"] == pytest.approx(second["optim/grad_norm"], rel=1e-4)
        assert first["optim/grad_norm"] > 100 * 1e-3
    state = gather_policy_state_dict(plain.module, rank=0)
    for name, tensor in gather_policy_state_dict(zero3.module, rank=0).items():
        torch.testing.assert_close(state[name], tensor, rtol=0, atol=1e-5, msg=name)  # Adam steps of 1e-2


def test_gradient_checkpointing_gives_the_same_step(tiny, sft_batch):
    # share_prompts off on both: the plain layout's one pass per micro-batch, so layers run once forward
    configs = [
        LearnerConfig(
            model="tiny", algo="sft", lr=1e-2, dtype="float32", gradient_checkpointing=flag, share_prompts=False
        )
        for flag in (False, True)
    ]
    runs = [LearnerEngine(config) for config in configs]
    calls = [0, 0]
    for index, engine in enumerate(runs):
        mlp = engine.module.policy.model.layers[0].mlp
        mlp.register_forward_pre_hook(lambda *_, i=index: calls.__setitem__(i, calls[i] + 1))
        assert not mlp.training  # dropout stays off under checkpointing
    first, second = ([engine.sft_step(sft_batch) for _ in range(2)] for engine in runs)
    assert calls[1] == 2 * calls[0] > 0  # checkpointed layers run again in backward
    for plain, checkpointed in zip(first, second, strict=True):
        assert checkpointed["loss/sft"] == pytest.approx(plain["loss/sft"], rel=1e-5)
        assert checkpointed["optim/grad_norm"] == pytest.approx(plain["optim/grad_norm"], rel=1e-4)


def test_ppo_values_value_loss_whitening_and_health_metrics(tiny, sft_batch):
    engine = LearnerEngine(LearnerConfig(model="tiny", algo="ppo", lr=1e-3, is_cap=None, whiten_advantages=True))
    with pytest.raises(ValueError, match="return_"):
        engine.rl_step(sft_batch)
    assert len({len(s.output_ids) for s in sft_batch}) == 1  # equal lengths: token mean = row mean
    before = engine.values(sft_batch)
    assert len(before) == len(sft_batch)
    returns = np.array([1.0, -1.0, 0.5, 0.0])
    for sample, target, value, advantage in zip(sft_batch, returns, before, [2.0, 0.0, 1.0, 1.0], strict=True):
        sample.return_, sample.value, sample.logprobs = target, value, [0.0] * len(sample.output_ids)
        sample.advantage = advantage
    history = [engine.rl_step(sft_batch) for _ in range(8)]
    # the value head learns the returns (the clipped loss around the fixed old values barely moves)
    assert np.mean((np.array(engine.values(sft_batch)) - returns) ** 2) < 0.9 * np.mean((before - returns) ** 2)
    first = history[0]
    # ratio 1 on the first update: policy loss = -mean(A); whitened advantages have mean 0 (else -1)
    assert first["loss/policy"] == pytest.approx(0.0, abs=1e-6)
    assert first["rl/approx_kl"] == 0.0  # one update: pi_old is the forward itself
    assert first["rl/explained_variance"] == pytest.approx(1 - np.var(returns - before) / np.var(returns))
    assert first["rl/grad_norm_policy"] > 0 and first["rl/grad_norm_value"] > 0
    assert first["rl/logprob_diff_mean"] < 0 and first["rl/logprob_diff_max"] > 0  # log-probs against 0


def export_engine_hf(engine: LearnerEngine, state: dict, out_dir) -> None:
    """Write `state` (gathered from `engine`) as a HF directory with the engine's configs and tokenizer."""
    policy = engine.module.policy
    export_hf(state, out_dir, model_config=policy.config, generation_config=policy.generation_config,
              tokenizer=engine.tokenizer, processor=engine.processor)  # fmt: skip


def grpo_epochs_config(**overrides) -> LearnerConfig:
    """GRPO on `tiny` at lr 1e-2 with 2 epochs x 2 mini-batches (4 optimizer steps per rl_step), no TIS."""
    return LearnerConfig(model="tiny", algo="grpo", lr=1e-2, ppo_epochs=2, mini_batches=2, is_cap=None, **overrides)


def test_kl_to_the_frozen_reference_and_ppo_epochs_clip(tiny, sft_batch):
    engine = LearnerEngine(grpo_epochs_config(kl_mode="k3_loss", kl_coef=0.1, clip_low=0.01, clip_high=0.01))
    for sample, advantage in zip(sft_batch, [1.0, -1.0, 1.0, -1.0], strict=True):
        sample.advantage, sample.logprobs = advantage, [-1.0] * len(sample.output_ids)
    first = engine.rl_step(sft_batch)
    second = engine.rl_step(sft_batch)
    for metrics in (first, second):  # the policy moved away from the frozen reference
        assert metrics["loss/kl"] > 1e-4
        assert metrics["loss/total"] == pytest.approx(metrics["loss/policy"] + 0.1 * metrics["loss/kl"], rel=1e-4)
    assert engine.step == 8  # ppo_epochs x mini_batches optimizer steps per rl_step
    assert first["rl/clip_fraction"] > 0  # later updates move pi away from the recorded pi_old
    assert first["rl/approx_kl"] > 0


def test_exported_weights_equal_the_engines_and_the_hf_export_generates_the_same(tiny, sft_batch, tmp_path):
    engine = LearnerEngine(LearnerConfig(model="tiny", algo="ppo", lr=1e-2, dtype="float32"))
    engine.sft_step(sft_batch)
    state = gather_policy_state_dict(engine.module, rank=0)
    assert "value_head.net.0.weight" not in state and set(state) == set(tiny.model.state_dict())
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(engine.module.policy.parameters())):
        for name, param in engine.module.policy.named_parameters():
            assert torch.equal(state[name], param.detach().cpu()), name
        assert not torch.equal(state["model.norm.weight"], tiny.model.model.norm.weight)
    # the sync's file, written tensor by tensor without a state dict: the same tensors, tied ones once
    written = load_file(write_policy_file(engine.module, tmp_path / "sync.safetensors", rank=0))
    assert all(torch.equal(tensor, state[name]) for name, tensor in written.items())
    assert {state[name].data_ptr() for name in written} == {tensor.data_ptr() for tensor in state.values()}
    export_engine_hf(engine, state, tmp_path)
    from transformers import AutoModelForCausalLM

    prompt = torch.tensor([sft_batch[0].prompt_ids])  # (1, T)
    with torch.no_grad():
        expected = engine.module.policy.generate(prompt.to(engine.device), max_new_tokens=12, do_sample=False).cpu()
        for model in (AutoModelForCausalLM.from_pretrained(tmp_path), load_policy(str(tmp_path)).model):
            assert torch.equal(model.generate(prompt, max_new_tokens=12, do_sample=False), expected)


def test_grpo_raises_the_reward_of_a_one_word_task(tiny):
    """Reward 1 for answering ' yes' among 8 one-token words.

    Sampling is restricted to them, like a grammar; the learner sees full-vocabulary log-probs. A
    flipped sign drives the probability of ' yes' to 0 instead.
    """
    words = [" yes", " no", " cat", " dog", " red", " blue", " green", " maybe"]
    ids = torch.tensor([tiny.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words])
    prompt = encode_prompt(tiny, [{"role": "user", "content": "Answer with one word: yes"}])
    engine = LearnerEngine(LearnerConfig(model="tiny", algo="grpo", lr=1e-2, is_cap=None))
    sampler = load_policy("tiny").model
    generator = torch.Generator().manual_seed(0)

    def word_probs():
        sampler.load_state_dict(gather_policy_state_dict(engine.module, rank=0))
        with torch.no_grad():
            logits = sampler(torch.tensor([prompt.input_ids])).logits[0, -1]  # (V,)
        return torch.softmax(logits[ids], -1)  # (8,)

    start = word_probs()[0].item()
    for _ in range(8):
        probs = word_probs()
        actions = torch.multinomial(probs, 32, replacement=True, generator=generator)
        rewards = (actions == 0).float().tolist()
        advantages = group_normalised_advantages(rewards, [i // 16 for i in range(32)])
        engine.rl_step(
            [
                Sample(prompt.input_ids, [int(ids[a])], logprobs=[probs[a].log().item()], advantage=adv)
                for a, adv in zip(actions, advantages, strict=True)
            ]
        )
    end = word_probs()[0].item()
    assert start < 0.2 and end > 0.6, (start, end)


def test_vlm_sft_on_images_and_export_round_trip(tiny, tmp_path):
    """tiny-vlm: pixel values reach the vision tower, loss falls, the export loads."""
    vlm = load_policy("tiny-vlm")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (128, 128, 3), dtype=np.uint8) for _ in range(2)]
    messages = [
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}]
        for q in ("Which card?", "Which road?")
    ]
    answer = vlm.tokenizer('{"action": "left"}<|im_end|>', add_special_tokens=False)["input_ids"]
    samples = [
        Sample(encode_prompt(vlm, m, [im]).input_ids, answer, images=[im])
        for m, im in zip(messages, images, strict=True)
    ]
    engine = LearnerEngine(LearnerConfig(model="tiny-vlm", algo="sft", lr=3e-3, dtype="float32"), policy=vlm)
    losses = [engine.sft_step(samples)["loss/sft"] for _ in range(5)]
    assert losses[-1] < losses[0] - 0.5, losses
    state = gather_policy_state_dict(engine.module, rank=0)
    export_engine_hf(engine, state, tmp_path)
    exported = load_policy(str(tmp_path))
    prompt = encode_prompt(exported, messages[0], [images[0]])
    ids = torch.tensor([prompt.input_ids])  # (1, T)
    with torch.no_grad():
        ours = engine.module.policy(
            input_ids=ids.to(engine.device), pixel_values=prompt.pixel_values.to(engine.device)
        ).logits.cpu()
        theirs = exported.model(input_ids=ids, pixel_values=prompt.pixel_values).logits
        blank = exported.model(input_ids=ids, pixel_values=torch.zeros_like(prompt.pixel_values)).logits
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert not torch.allclose(theirs, blank, atol=1e-3)  # the image matters to the logits


def test_checkpoints_keep_the_last_k_and_restore_step_and_rng(tiny, sft_batch, tmp_path):
    from learner.checkpoint import load_checkpoint, save_checkpoint

    engine = LearnerEngine(LearnerConfig(model="tiny", algo="sft", lr=1e-2, dtype="float32", keep_checkpoints=2))
    for _ in range(3):
        engine.sft_step(sft_batch)
        save_checkpoint(engine, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_00000002", "step_00000003"]
    assert (tmp_path / "latest").read_text().strip() == "step_00000003"
    expected_draw = torch.rand(3)
    next_loss = engine.sft_step(sft_batch)["loss/sft"]
    state = load_checkpoint(engine, tmp_path)
    assert (state.step, state.phase) == (3, "sft")
    assert torch.equal(torch.rand(3), expected_draw)
    assert engine.sft_step(sft_batch)["loss/sft"] == pytest.approx(next_loss, rel=1e-6)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(engine, tmp_path / "missing")


def test_an_sft_warm_up_before_rl_leaves_the_rl_schedule_for_begin_rl(tiny, sft_batch):
    engine = LearnerEngine(grpo_epochs_config(lr_schedule="linear", total_steps=4, schedule_unit="update"))
    for _ in range(5):  # more SFT steps than the RL schedule is long
        engine.sft_step(sft_batch)
    assert engine.engine.get_lr()[0] == pytest.approx(1e-2)  # the warm-up runs at the peak lr
    engine.begin_rl()
    assert engine.engine.get_lr()[0] == pytest.approx(1e-2)  # and RL starts its schedule at step 0


@pytest.mark.parametrize("unit, lr_after", [("update", 0.75e-2), ("optimizer_step", 0.0)])
def test_the_lr_schedule_steps_per_optimizer_step_or_once_per_update(tiny, sft_batch, unit, lr_after):
    """Linear 1e-2 -> 0 over 4 schedule steps; one rl_step = 2 epochs x 2 mini-batches = 4 optimizer steps."""
    engine = LearnerEngine(grpo_epochs_config(lr_schedule="linear", total_steps=4, schedule_unit=unit))
    for sample in sft_batch:
        sample.advantage, sample.logprobs = 1.0, [-1.0] * len(sample.output_ids)
    metrics = engine.rl_step(sft_batch)
    assert engine.step == 4
    assert engine.engine.get_lr()[0] == pytest.approx(lr_after, abs=1e-12)
    if unit == "update":  # every optimizer step of the update ran at the update's lr
        assert metrics["optim/lr"] == pytest.approx(1e-2)


def adam_moments_ratio(engine) -> tuple[float, list[int]]:
    """Median exp_avg^2 / exp_avg_sq where the gradient was non-zero, and every state's step count."""
    ratios, steps = [], []
    for state in engine.engine.basic_optimizer.state.values():
        moving = state["exp_avg_sq"] > 1e-30
        ratios.append((state["exp_avg"][moving] ** 2 / state["exp_avg_sq"][moving]).median().item())
        steps.append(int(state["step"]))
    return float(np.median(ratios)), steps


def test_begin_rl_gives_a_fresh_optimizer_schedule_and_reference_and_checkpoints_keep_them(tiny, sft_batch, tmp_path):
    from learner.checkpoint import load_checkpoint, save_checkpoint

    config = LearnerConfig(
        model="tiny",
        algo="grpo",
        lr=1e-2,
        dtype="float32",
        lr_schedule="cosine",
        warmup_steps=2,
        total_steps=10,
        kl_mode="k3_loss",
        kl_coef=0.1,
        is_cap=None,
    )
    for sample, advantage in zip(sft_batch, [1.0, -1.0, 1.0, -1.0], strict=True):
        sample.advantage, sample.logprobs = advantage, [-1.0] * len(sample.output_ids)
    engine = LearnerEngine(config)
    for _ in range(4):
        engine.sft_step(sft_batch)
    assert engine.engine.get_lr()[0] < 0.9e-2  # warmed up and decaying
    assert engine.begin_rl() and engine.phase == "rl"
    assert engine.engine.basic_optimizer.state == {}  # no moments, no step counts: a fresh Adam
    assert engine.engine.get_lr()[0] == pytest.approx(0.5e-2)  # the schedule's first value (warm-up 1/2)
    policy, reference = local_partitions(engine.module.policy), local_partitions(engine.reference.module.policy)
    assert all(torch.equal(policy[name], reference[name]) for name in policy)  # the post-SFT policy
    first = engine.rl_step(sft_batch)
    assert first["loss/kl"] == pytest.approx(0.0, abs=1e-7)  # the reference is the policy it started from
    ratio, steps = adam_moments_ratio(engine)
    assert steps == [1] * len(steps)  # counted from 0 again, not from the 4 SFT steps
    assert ratio == pytest.approx((1 - 0.9) ** 2 / (1 - 0.999), rel=1e-3)  # m = 0.1 g, v = 0.001 g^2: from zero
    assert not engine.begin_rl()  # already in the RL phase: nothing is reset

    save_checkpoint(engine, tmp_path)
    lr, reference = engine.engine.get_lr()[0], local_partitions(engine.reference.module.policy)
    expected = engine.rl_step(sft_batch)
    resumed = LearnerEngine(config)
    assert load_checkpoint(resumed, tmp_path).phase == "rl" and resumed.phase == "rl"
    assert not resumed.begin_rl()  # resumed past the boundary: no second reset
    assert resumed.engine.get_lr()[0] == pytest.approx(lr)
    restored = local_partitions(resumed.reference.module.policy)
    assert all(torch.equal(restored[name], reference[name]) for name in reference)
    again = resumed.rl_step(sft_batch)
    for name in ("loss/policy", "loss/kl", "optim/lr"):
        assert again[name] == pytest.approx(expected[name], rel=1e-6), name


def test_update_summary_keeps_last_step_and_lr_and_peak_memory():
    from learner.rl_stats import summarise_updates

    history = [
        {"loss/policy": 1.0, "learner/step": 1.0, "optim/lr": 1e-5, "mem/peak_rank_gb": 3.0},
        {"loss/policy": 3.0, "learner/step": 2.0, "optim/lr": 2e-5, "mem/peak_rank_gb": 2.0},
    ]
    assert summarise_updates(history) == {
        "loss/policy": 2.0,
        "learner/step": 2.0,
        "optim/lr": 2e-5,
        "mem/peak_rank_gb": 3.0,
    }
