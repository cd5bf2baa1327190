"""Batched sampling on a `LoadedPolicy`, with per-request sampling parameters and log-probs.

`generate_batch(policy, requests)` left-pads the prompts into one batch, runs one prefill and then
one decode step per token with a KV cache, and drops finished rows from the batch as they end.
Each request keeps its own temperature, top_p, seed, stop strings and max_new_tokens:

- sampling is Gumbel-max on `log_softmax(logits / temperature)` restricted to the request's top-p
  nucleus, in two stages (a block of `NOISE_BLOCK` tokens by its mass, then a token inside it): the
  same distribution from V / 256 + 256 noise values per row and step instead of V (448 instead of
  49,152 for SmolLM2); the noise comes from the request's own `torch.Generator` (seeded from `seed`,
  else from the OS), so a seeded request draws the same noise whatever else shares its batch;
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
    seed: int | None = None
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
    generator: torch.Generator
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
    logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, *, generators: list[torch.Generator]
) -> Sampled:
    """Sample one token per row, with its log-prob under the row's temperature.

    `temperature == 0` rows are greedy (log-probs under temperature 1). Top-p keeps the smallest
    set of most likely tokens whose probability reaches `top_p` (always at least one).
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
    tokens = _two_stage_gumbel_max(filtered, generators)  # (B,)
    if bool(greedy.any()):  # host sync on a GPU, like the two above; spares a (B, V) argmax when no row is greedy
        tokens = torch.where(greedy, logp.argmax(-1), tokens)  # (B,)
    return Sampled(tokens, logp.gather(-1, tokens[:, None]).squeeze(-1))


def _two_stage_gumbel_max(logp: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """One token per row of `logp` (B, V), drawn from `exp(logp)` with noise from the row's generator.

    Gumbel-max in two stages: the vocabulary is cut into blocks of `NOISE_BLOCK` tokens; a block is
    picked by Gumbel-max over the blocks' log-masses, then a token inside it by Gumbel-max over the
    block's log-probs. That is exactly one Gumbel-max over all tokens (the largest perturbed score in
    a block is Gumbel-distributed around the block's log-mass, and which token holds it is
    independent of its value), so the token is distributed as `exp(logp)` (up to `LOGP_FLOOR`), and
    each stage keeps Gumbel-max's stability: a tiny change of the logits (e.g. from different batch
    mates) almost never changes the draw. A row draws `n_blocks + NOISE_BLOCK` noise values per step
    (448 for V = 49,152) instead of V, always the same count, so its draws depend on its seed and
    step only. A block with no token left (all outside the nucleus) is never picked.
    """
    rows, vocab = logp.shape
    blocks = -(-vocab // NOISE_BLOCK)
    if blocks * NOISE_BLOCK != vocab:
        logp = torch.nn.functional.pad(logp, (0, blocks * NOISE_BLOCK - vocab), value=float("-inf"))  # (B, K*S)
    by_block = logp.view(rows, blocks, NOISE_BLOCK)  # (B, K, S)
    noise = _gumbel_noise(generators, blocks + NOISE_BLOCK).to(logp.device)  # (B, K + S)
    mass = by_block.clamp_min(LOGP_FLOOR).exp_().sum(-1)  # (B, K)
    block_logmass = torch.where(by_block.amax(-1) > float("-inf"), mass.log(), float("-inf"))  # (B, K)
    block = (block_logmass + noise[:, :blocks]).argmax(-1)  # (B,)
    inside = by_block[torch.arange(rows, device=logp.device), block]  # (B, S)
    return block * NOISE_BLOCK + (inside + noise[:, blocks:]).argmax(-1)  # (B,)


def _gumbel_noise(generators: list[torch.Generator], count: int) -> torch.Tensor:
    """`count` standard Gumbel values per generator, drawn on the CPU (so seeds match across devices)."""
    uniform = torch.stack([torch.rand(count, generator=g) for g in generators])  # (B, count)
    return -torch.log(-torch.log(uniform.clamp_min(1e-20)))  # (B, count)


def _generator(seed: int | None) -> torch.Generator:
    generator = torch.Generator()  # CPU: the noise is drawn on the CPU so seeds match across devices
    generator.manual_seed(secrets.randbits(63) if seed is None else seed)
    return generator


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
    rows = [_Row(i, r, _generator(r.seed)) for i, r in enumerate(requests)]
    results: list[GenerationResult | None] = [None] * len(requests)
    while True:
        temperature = torch.tensor([r.request.temperature for r in rows], device=device)  # (b,)
        top_p = torch.tensor([r.request.top_p for r in rows], device=device)  # (b,)
        tokens, logprobs = sample_tokens(out.logits[:, -1], temperature, top_p, generators=[r.generator for r in rows])
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
        next_pos = next_pos + 1
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
