"""OpenAI chat completions on top of the token-level generate path.

`chat_to_generate` turns a chat request into the `/v1/generate` request it means (`image_url` data
URLs become images, `max_completion_tokens`/`max_tokens` become `max_new_tokens`);
`chat_response` turns the `n` generate replies back into an OpenAI `chat.completion` object with
`usage` and, when asked, per-token `logprobs`.
"""

from __future__ import annotations

import time
import uuid

from serving.schemas import (
    AssistantMessage,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatImagePart,
    Choice,
    ChoiceLogprobs,
    GenerateRequest,
    GenerateResponse,
    TokenLogprob,
    Usage,
)


def chat_to_generate(chat: ChatCompletionRequest) -> GenerateRequest:
    """The `/v1/generate` request behind an OpenAI chat request (image_url parts become images)."""
    images: list[str] = []
    messages = []
    for message in chat.messages:
        content = message.content
        if isinstance(content, list):
            parts = []
            for part in content:
                if isinstance(part, ChatImagePart):
                    images.append(part.image_url.url)
                    parts.append({"type": "image"})
                else:
                    parts.append({"type": "text", "text": part.text})
            content = parts
        messages.append({"role": message.role, "content": content})
    stop = [chat.stop] if isinstance(chat.stop, str) else list(chat.stop or [])
    return GenerateRequest(
        messages=messages,
        images=images,
        temperature=chat.temperature,
        top_p=chat.top_p,
        max_new_tokens=chat.max_completion_tokens or chat.max_tokens,
        seed=chat.seed,
        stop=stop,
    )


def _token_logprobs(reply: GenerateResponse, tokenizer) -> ChoiceLogprobs:
    entries = []
    for token_id, logprob in zip(reply.output_token_ids, reply.logprobs, strict=True):
        token = tokenizer.decode([token_id])
        entries.append(TokenLogprob(token=token, logprob=logprob, bytes=list(token.encode("utf-8"))))
    return ChoiceLogprobs(content=entries)


def chat_response(
    chat: ChatCompletionRequest, replies: list[GenerateResponse], *, model: str, tokenizer
) -> ChatCompletionResponse:
    """The OpenAI `chat.completion` for `replies` (one per choice, all of the same prompt)."""
    choices = [
        Choice(
            index=i,
            message=AssistantMessage(content=reply.text),
            finish_reason=reply.finish_reason,
            logprobs=_token_logprobs(reply, tokenizer) if chat.logprobs else None,
        )
        for i, reply in enumerate(replies)
    ]
    prompt_tokens = len(replies[0].prompt_token_ids)
    completion_tokens = sum(len(reply.output_token_ids) for reply in replies)
    return ChatCompletionResponse(
        id=f"chatcmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=model,
        choices=choices,
        usage=Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        ),
        policy_version=min(reply.policy_version for reply in replies),
    )
