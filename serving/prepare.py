"""Validated request -> `GenerationRequest`: message normalisation, images, encoding, limits.

Everything a request can get wrong is checked here, before it joins a batch, so a bad request is
refused alone (400/413 `RequestError`) and never fails the batch it would have shared.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PretrainedConfig

from learner.models import LoadedPolicy, PromptCodec
from learner.prompt_encoding import encode_prompt
from serving.config import ServingConfig
from serving.generation import GenerationRequest
from serving.images import decode_images
from serving.limits import RequestError, check_at_most, check_context, check_max_new_tokens, check_token_ids
from serving.schemas import GenerateRequest, Message


@dataclass
class PolicyLimits:
    """Model-dependent bounds, read once from the served model's config."""

    context_tokens: int
    vocab_size: int
    image_token_id: int | None

    @classmethod
    def of(cls, config: PretrainedConfig) -> PolicyLimits:
        """The bounds of a model with HF `config`: context length, vocabulary size, image token (VLMs).

        The vocabulary is the config's, not the embedding's rows: Mllama's embedding has 8 rows
        past its vocabulary that no tokenizer id reaches.
        """
        text = config.get_text_config()
        return cls(
            context_tokens=text.max_position_embeddings,
            vocab_size=text.vocab_size,
            image_token_id=getattr(config, "image_token_id", getattr(config, "image_token_index", None)),
        )


def _hf_messages(messages: list[Message], *, is_vlm: bool) -> list[dict]:
    """Plain dicts for the chat template; text-only templates get string contents."""
    out = []
    for message in messages:
        content = message.content
        if isinstance(content, list):
            parts = [part.model_dump() for part in content]
            if not is_vlm:
                if any(p["type"] == "image" for p in parts):
                    raise RequestError(400, "this policy is text-only; drop the image parts or serve a VLM", "images")
                content = "\n".join(p["text"] for p in parts)
            else:
                content = parts
        out.append({"role": message.role, "content": content})
    return out


def prepare(
    policy: LoadedPolicy | PromptCodec, limits: PolicyLimits, request: GenerateRequest, *, config: ServingConfig
) -> GenerationRequest:
    """Encode `request` and check it against every limit; raises `RequestError` (400/413)."""
    bounds = config.limits
    max_new_tokens = request.max_new_tokens or config.default_max_new_tokens
    check_max_new_tokens(max_new_tokens, config.max_new_tokens_limit)
    check_at_most(len(request.stop), bounds.max_stop_strings, what="number of stop strings", code="max_stop_strings")
    image_inputs = None
    if request.prompt_token_ids is not None:
        if request.images:
            raise RequestError(400, "images need `messages` (with image parts), not `prompt_token_ids`", "images")
        ids = list(request.prompt_token_ids)
        check_token_ids(ids, limits.vocab_size)
        if limits.image_token_id is not None and limits.image_token_id in ids:
            raise RequestError(
                400,
                f"prompt_token_ids contain the image token {limits.image_token_id}; send images with `messages`",
                "images",
            )
    else:
        check_at_most(len(request.messages), bounds.max_messages, what="number of messages", code="max_messages")
        images = decode_images(
            request.images,
            max_images=bounds.max_images,
            max_bytes=bounds.max_image_bytes,
            max_pixels=bounds.max_image_pixels,
        )
        try:
            encoded = encode_prompt(policy, _hf_messages(request.messages, is_vlm=policy.is_vlm), images)
        except ValueError as error:  # image count mismatch, images for a text-only policy
            raise RequestError(400, str(error), "images") from None
        ids, image_inputs = encoded.input_ids, encoded.image_inputs
    check_context(len(ids), max_new_tokens, limits.context_tokens)
    return GenerationRequest(
        ids,
        max_new_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        seed=request.seed,
        stop=list(request.stop),
        image_inputs=image_inputs,
    )
