"""Batched sampling on a `LoadedPolicy`, with per-request sampling parameters and log-probs.

`generate_batch(policy, requests)` left-pads the prompts into one batch, runs one prefill and then
one decode step per token with a KV cache, and drops finished rows from the batch as they end.
Each request keeps its own temperature, top_p, seed, stop strings and max_new_tokens:

- sampling is Gumbel-max on `log_softmax(logits / temperature)` restricted to the request's top-p
  nucleus, in two stages (a block of `NOISE_BLOCK` tokens by its mass, then a token inside it): the
  same distribution from V / 256 + 256 noise values per row and step instead of V (448 instead of
  49,152 for SmolLM2); noise value j of a row at decode step t is a stateless SplitMix64 hash of
  (seed, t, j), computed for the whole batch at once on the logits' device (`_uniform_noise`; the
  seed is the request's `seed`, else 63 random bits from the OS), so a seeded request draws the same
  noise whatever else shares its batch, from bit-identical uniforms on every device;
- `logprobs[i]` is `log_softmax(logits / temperature)[token]` of the token actually emitted, before
  top-p truncation, i.e. what the learner recomputes from the same prompt and output ids;
  `temperature == 0` is greedy, and its log-probs are under temperature 1;
- the eos token ends a request with `finish_reason="stop"` and is kept in `output_ids` (the learner
  must see it); a stop string also ends it with "stop": `output_ids` keep every generated token up
  to the one that completed the string, `text` is cut before the string (OpenAI semantics);
  reaching `max_new_tokens` gives "length".

No Ray here: the Serve replica calls it, and so do the unit tests and the in-process benchmark.

    .venv/bin/python -m serving.generation tiny "Say hi."
"""

from __future__ import annotations

import secrets
import sys
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch

from learner.models import LoadedPolicy
from learner.prompt_encoding import CROSS_ATTENTION_MASK, ImageInputs, batch_image_inputs, uses_cross_attention

NOISE_BLOCK = 256  # tokens per block of the two-stage Gumbel-max (about sqrt(V): fewest noise values per row)
# In its block's mass a token counts for at least e^-87 (about float32's smallest normal number): exp then
# stays off the CPU's slow subnormal path (~15x slower at temperature 0.2), and no token's chance moves by
# more than V * e^-87 (~1e-33).
LOGP_FLOOR = -87.0


@dataclass
class GenerationRequest:
    """One prompt (already encoded) and how to sample its continuation."""

    prompt_ids: list[int]
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None  # in [0, 2**63), as `serving.schemas` validates; None: 63 fresh random bits
    stop: list[str] = field(default_factory=list)
    image_inputs: ImageInputs | None = None  # `encode_prompt`'s, VLMs only


@dataclass
class GenerationResult:
    """What was generated for one request."""

    text: str
    output_ids: list[int]
    logprobs: list[float]
    finish_reason: Literal["stop", "length"]


class Sampled(NamedTuple):
    """One sampled token per row and its log-prob under the row's temperature."""

    tokens: torch.Tensor  # (B,)
    logprobs: torch.Tensor  # (B,)


@dataclass
class _Row:
    """Decode state of one request while it is in the batch."""

    index: int
    request: GenerationRequest
    output_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    stop_at: int | None = None  # char offset where a stop string begins in the decoded text


def _left_pad(requests: list[GenerationRequest], pad_id: int, device: torch.device):
    lengths = [len(r.prompt_ids) for r in requests]
    width = max(lengths)
    input_ids = torch.full((len(requests), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(requests), width), dtype=torch.long)  # (B, T)
    for i, request in enumerate(requests):
        input_ids[i, width - lengths[i] :] = torch.tensor(request.prompt_ids, dtype=torch.long)
        mask[i, width - lengths[i] :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
    return input_ids.to(device), mask.to(device), positions.to(device)


def sample_tokens(
    logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, *, seeds: torch.Tensor, step: int
) -> Sampled:
    """Sample one token per row, with its log-prob under the row's temperature.

    `temperature == 0` rows are greedy (log-probs under temperature 1). Top-p keeps the smallest
    set of most likely tokens whose probability reaches `top_p` (always at least one). The noise of
    row b is a function of (`seeds[b]`, `step`) only (`_uniform_noise`): `seeds` is int64 (B,) on
    the logits' device, `step` the decode step (0 for the token after the prompt).
    """
    greedy = temperature == 0  # (B,)
    scale = torch.where(greedy, torch.ones_like(temperature), temperature)  # (B,)
    logp = torch.log_softmax(logits.float() / scale[:, None], dim=-1)  # (B, V)
    if bool(greedy.all()):  # evaluation batches: no noise to draw (a row's draws never affect another's)
        tokens = logp.argmax(-1)  # (B,)
        return Sampled(tokens, logp.gather(-1, tokens[:, None]).squeeze(-1))
    filtered = logp
    if bool((top_p < 1).any()):
        sorted_logp, order = logp.sort(dim=-1, descending=True)  # (B, V)
        before = sorted_logp.exp().cumsum(-1) - sorted_logp.exp()  # (B, V) mass of better tokens
        drop_sorted = before >= top_p[:, None]  # (B, V); the first token always stays
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # (B, V)
        filtered = logp.masked_fill(drop, float("-inf"))
    tokens = _two_stage_gumbel_max(filtered, seeds, step)  # (B,)
    if bool(greedy.any()):  # host sync on a GPU, like the two above; spares a (B, V) argmax when no row is greedy
        tokens = torch.where(greedy, logp.argmax(-1), tokens)  # (B,)
    return Sampled(tokens, logp.gather(-1, tokens[:, None]).squeeze(-1))


def _two_stage_gumbel_max(logp: torch.Tensor, seeds: torch.Tensor, step: int) -> torch.Tensor:
    """One token per row of `logp` (B, V), drawn from `exp(logp)` with noise from (`seeds[b]`, `step`).

    Gumbel-max in two stages: the vocabulary is cut into blocks of `NOISE_BLOCK` tokens; a block is
    picked by Gumbel-max over the blocks' log-masses, then a token inside it by Gumbel-max over the
    block's log-probs. That is exactly one Gumbel-max over all tokens (the largest perturbed score in
    a block is Gumbel-distributed around the block's log-mass, and which token holds it is
    independent of its value), so the token is distributed as `exp(logp)` (up to `LOGP_FLOOR`), and
    each stage keeps Gumbel-max's stability: a tiny change of the logits (e.g. from different batch
    mates) almost never changes the draw. A row draws `n_blocks + NOISE_BLOCK` noise values per step
    (448 for V = 49,152) instead of V, always the same count, so its draws depend on its seed and
    step only (`_gumbel_noise`). A block with no token left (all outside the nucleus) is never picked.
    """
    rows, vocab = logp.shape
    blocks = -(-vocab // NOISE_BLOCK)
    if blocks * NOISE_BLOCK != vocab:
        logp = torch.nn.functional.pad(logp, (0, blocks * NOISE_BLOCK - vocab), value=float("-inf"))  # (B, K*S)
    by_block = logp.view(rows, blocks, NOISE_BLOCK)  # (B, K, S)
    noise = _gumbel_noise(seeds, step, blocks + NOISE_BLOCK)  # (B, K + S)
    mass = by_block.clamp_min(LOGP_FLOOR).exp_().sum(-1)  # (B, K)
    block_logmass = torch.where(by_block.amax(-1) > float("-inf"), mass.log(), float("-inf"))  # (B, K)
    block = (block_logmass + noise[:, :blocks]).argmax(-1)  # (B,)
    inside = by_block[torch.arange(rows, device=logp.device), block]  # (B, S)
    return block * NOISE_BLOCK + (inside + noise[:, blocks:]).argmax(-1)  # (B,)


def _gumbel_noise(seeds: torch.Tensor, step: int, count: int) -> torch.Tensor:
    """`count` standard Gumbel values per row, float32 (B, count), on `seeds`' device: `-log(-log(u))`.

    Computed in float64 from `_uniform_noise`'s exact uniforms, then rounded to float32: float64's
    log may differ by an ulp between devices, which changes the float32 value only where it lies
    within an ulp of a rounding boundary (about 2**-28 of values). The tails reach -3.6 and 36.7.
    """
    uniform = _uniform_noise(seeds, step, count)  # (B, count) float64
    return uniform.log_().neg_().log_().neg_().float()  # (B, count)


def _uniform_noise(seeds: torch.Tensor, step: int, count: int) -> torch.Tensor:
    """`count` uniforms in (0, 1) per row, float64 (B, count): a stateless hash of (seed, step, position).

    Value j of row b is `mix(mix(seeds[b] + (step + 1) * GAMMA) + (j + 1) * GAMMA)` modulo 2**64
    (`_splitmix64_mix`): output j + 1 of SplitMix64 seeded with output step + 1 of SplitMix64
    seeded with the row's seed. Its top 53 bits, the lowest of them set to 1, are an odd integer
    below 2**53, which float64 holds exactly, times 2**-53: the midpoints of 2**52 equal cells of
    (0, 1), never 0 or 1. The integers are the same on every device (int64 + and * wrap modulo
    2**64 on CPU and CUDA alike) and so are the floats (exact conversion, power-of-two scaling). A
    row's values depend on its seed, the step and the count only, never on its batch mates.
    """
    keys = _splitmix64_mix(seeds + _int64((step + 1) * _GAMMA))  # (B,)
    offsets = torch.arange(1, count + 1, dtype=torch.int64, device=seeds.device) * _GAMMA  # (count,) wraps
    bits = _splitmix64_mix(keys[:, None] + offsets)  # (B, count)
    odd = _shift_right(bits, 11).bitwise_or_(1)  # (B, count) in [1, 2**53)
    return odd.double().mul_(2.0**-53)  # (B, count)


# SplitMix64 (Steele, Lea & Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014;
# Vigna's finaliser constants) on int64 tensors holding uint64 bit patterns: + and * wrap modulo
# 2**64 (two's complement), xor is bitwise, and `_shift_right` masks torch's arithmetic int64
# shift into a logical one. Python ints are wrapped into int64 first (`_int64`): torch refuses
# scalars outside its range.
_UINT64_MAX = 2**64 - 1


def _int64(value: int) -> int:
    """The int64 with the bits of `value` modulo 2**64."""
    value &= _UINT64_MAX
    return value - 2**64 if value >= 2**63 else value


_GAMMA = _int64(0x9E3779B97F4A7C15)  # SplitMix64's increment: 2**64 / golden ratio, odd
_MIX_1, _MIX_2 = _int64(0xBF58476D1CE4E5B9), _int64(0x94D049BB133111EB)


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 `x` by 0 < `bits` < 64: the sign copies `>>` shifts in are masked off."""
    return (x >> bits).bitwise_and_((1 << (64 - bits)) - 1)


def _splitmix64_mix(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser, a bijection of 64-bit words, elementwise on int64 `x`."""
    x = x ^ _shift_right(x, 30)
    x = x.mul_(_MIX_1)
    x = x.bitwise_xor_(_shift_right(x, 27)).mul_(_MIX_2)
    return x.bitwise_xor_(_shift_right(x, 31))


def _row_seeds(requests: list[GenerationRequest], device: torch.device) -> torch.Tensor:
    """Each request's noise seed, int64 (B,) on `device`: its `seed`, else 63 random bits from the OS."""
    seeds = [secrets.randbits(63) if r.seed is None else r.seed for r in requests]
    return torch.tensor(seeds, dtype=torch.int64, device=device)  # (B,) one copy per batch, none per step


def _finished(row: _Row, token: int, eos_ids: set[int], tokenizer) -> str | None:
    """The finish reason once `token` was appended to the row, or None to go on."""
    if token in eos_ids:
        return "stop"
    if row.request.stop:
        text = tokenizer.decode(row.output_ids, skip_special_tokens=True)
        hits = [text.find(s) for s in row.request.stop if s and s in text]
        if hits:
            row.stop_at = min(hits)
            return "stop"
    if len(row.output_ids) >= row.request.max_new_tokens:
        return "length"
    return None


def _result(row: _Row, reason: str, tokenizer) -> GenerationResult:
    text = tokenizer.decode(row.output_ids, skip_special_tokens=True)
    if row.stop_at is not None:
        text = text[: row.stop_at]
    return GenerationResult(text, row.output_ids, row.logprobs, reason)


def _by_image_count(policy: LoadedPolicy, requests: list[GenerationRequest]) -> list[list[int]]:
    """Indices of `requests` grouped by image count for a cross-attention VLM, else one group of all.

    In transformers' Mllama, text positions that see no image (before the first `<|image|>`)
    attend evenly to every image slot of the batch, padded ones too: a request would sample from
    other logits beside a request with more images than the learner (`learner.batch.micro_batches`,
    which batches likewise) scores it with.
    """
    if policy.processor is None or not uses_cross_attention(policy.processor):
        return [list(range(len(requests)))]
    groups: dict[int, list[int]] = {}
    for index, request in enumerate(requests):
        images = request.image_inputs
        groups.setdefault(0 if images is None else images["pixel_values"].shape[1], []).append(index)
    return list(groups.values())


@torch.inference_mode()
def generate_batch(policy: LoadedPolicy, requests: list[GenerationRequest]) -> list[GenerationResult]:
    """Generate every request in one left-padded batch; results come back in request order.

    The caller has validated the requests (lengths within the context, max_new_tokens >= 1). A
    cross-attention VLM (Mllama) runs one batch per image count (`_by_image_count`).
    """
    groups = _by_image_count(policy, requests)
    if len(groups) > 1:
        results: list[GenerationResult | None] = [None] * len(requests)
        for indices in groups:
            for index, result in zip(indices, generate_batch(policy, [requests[i] for i in indices]), strict=True):
                results[index] = result
        return results
    model, tokenizer = policy.model, policy.tokenizer
    device = model.device
    eos_ids = set(policy.eos_token_ids)
    input_ids, mask, positions = _left_pad(requests, policy.pad_token_id, device)
    images = batch_image_inputs(
        [r.image_inputs for r in requests], lengths=[len(r.prompt_ids) for r in requests], width=input_ids.shape[1]
    )
    extra = {k: v.to(device, model.dtype if v.is_floating_point() else None) for k, v in (images or {}).items()}
    out = model(
        input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1, **extra
    )
    cache, next_pos = out.past_key_values, positions[:, -1] + 1  # (B,)
    # Mllama: the image states now sit in the cache; each new token sees the images the prompt's last
    # token sees (transformers' generate repeats that row of the mask and slices it to the new token)
    step_cross = extra[CROSS_ATTENTION_MASK][:, -1:] if CROSS_ATTENTION_MASK in extra else None  # (B, 1, N, tiles)
    rows, seeds, step = [_Row(i, r) for i, r in enumerate(requests)], _row_seeds(requests, device), 0
    results: list[GenerationResult | None] = [None] * len(requests)
    while True:
        temperature = torch.tensor([r.request.temperature for r in rows], device=device)  # (b,)
        top_p = torch.tensor([r.request.top_p for r in rows], device=device)  # (b,)
        tokens, logprobs = sample_tokens(out.logits[:, -1], temperature, top_p, seeds=seeds, step=step)
        token_list, logprob_list = tokens.tolist(), logprobs.tolist()  # device sync, once per step
        keep = []
        for b, row in enumerate(rows):
            row.output_ids.append(token_list[b])
            row.logprobs.append(logprob_list[b])
            reason = _finished(row, token_list[b], eos_ids, tokenizer)
            if reason is None:
                keep.append(b)
            else:
                results[row.index] = _result(row, reason, tokenizer)
        if not keep:
            break
        if len(keep) < len(rows):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            rows, tokens, mask, next_pos = [rows[b] for b in keep], tokens[index], mask[index], next_pos[index]
            seeds = seeds[index]
            step_cross = step_cross[index] if step_cross is not None else None
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)  # (b, T + t)
        step_extra = {CROSS_ATTENTION_MASK: step_cross} if step_cross is not None else {}
        out = model(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=next_pos[:, None],
            past_key_values=cache,
            use_cache=True,
            **step_extra,
        )
        next_pos, step = next_pos + 1, step + 1
    return results


def _main(argv: list[str]) -> None:
    from learner.models import load_policy
    from learner.prompt_encoding import encode_prompt

    policy = load_policy(argv[0] if argv else "tiny")
    ids = encode_prompt(policy, [{"role": "user", "content": argv[1] if len(argv) > 1 else "Say hi."}]).input_ids
    for result in generate_batch(
        policy, [GenerationRequest(ids, 48, temperature=0.0), GenerationRequest(ids, 48, temperature=0.7, seed=0)]
    ):
        print(result.finish_reason, repr(result.text))


if __name__ == "__main__":
    _main(sys.argv[1:])
