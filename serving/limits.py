"""Input limits of the policy endpoint, and the error type that carries them to HTTP.

Every check raises `RequestError` with the HTTP status (400 bad value, 413 too large, 503 full),
a message naming the limit that was hit and how to fix the request, and the limit's name as the
OpenAI-style error `code`. `app.py` turns it into a JSON body; handle callers receive the
exception itself. Nothing here touches the model, so a rejected request never reaches a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from serving.schemas import ErrorInfo, ErrorResponse


@dataclass
class RequestError(Exception):
    """A request the server refuses; `status` is the HTTP code, `code` the limit's name."""

    status: int
    message: str
    code: str
    retry_after_s: int | None = None

    def __reduce__(self):  # picklable, so handle callers receive it through Ray
        return (RequestError, (self.status, self.message, self.code, self.retry_after_s))

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"

    def body(self) -> dict:
        """The OpenAI-compatible JSON error body (an `ErrorResponse`)."""
        kind = {401: "authentication_error", 503: "server_busy"}.get(self.status, "invalid_request_error")
        return ErrorResponse(error=ErrorInfo(message=self.message, type=kind, param=None, code=self.code)).model_dump()


def check_at_most(value: int, limit: int, *, what: str, code: str, status: int = 400) -> None:
    """Refuse `value > limit`; `what` names the quantity in the message."""
    if value > limit:
        raise RequestError(status, f"{what} is {value}, above the limit {limit}; send at most {limit}", code)


def check_max_new_tokens(max_new_tokens: int, limit: int) -> None:
    """Refuse a max_new_tokens above the server's configured limit."""
    check_at_most(max_new_tokens, limit, what="max_new_tokens", code="max_new_tokens_limit")


def check_context(prompt_tokens: int, max_new_tokens: int, context_tokens: int) -> None:
    """Refuse a prompt that, with its max_new_tokens, does not fit in the model's context."""
    if prompt_tokens + max_new_tokens > context_tokens:
        raise RequestError(
            400,
            f"prompt of {prompt_tokens} tokens + max_new_tokens {max_new_tokens} exceeds the model's "
            f"context of {context_tokens} tokens; shorten the prompt or lower max_new_tokens",
            "context_length",
        )


def check_token_ids(token_ids: list[int], vocab_size: int) -> None:
    """Refuse prompt token ids outside the model's vocabulary."""
    bad = [t for t in token_ids if t >= vocab_size]
    if bad:
        raise RequestError(
            400, f"prompt_token_ids contains {bad[:5]} outside the vocabulary [0, {vocab_size})", "vocab_size"
        )


class QueueGate:
    """Counts generate requests admitted to a replica; refuses with 503 past `max_queued`.

    Used from the replica's event loop only (no lock needed): `enter()` on arrival, `leave()` when
    the reply is sent, success or not.
    """

    def __init__(self, max_queued: int, *, retry_after_s: int):
        self.max_queued = max_queued
        self.retry_after_s = retry_after_s
        self.in_flight = 0

    def enter(self, count: int = 1) -> None:
        """Admit `count` requests or raise a 503 `RequestError` with Retry-After."""
        if self.in_flight + count > self.max_queued:
            raise RequestError(
                503,
                f"queue full: {self.in_flight} requests in flight, limit max_queued_requests="
                f"{self.max_queued}; retry after {self.retry_after_s}s",
                "max_queued_requests",
                retry_after_s=self.retry_after_s,
            )
        self.in_flight += count

    def leave(self, count: int = 1) -> None:
        """Release `count` admitted requests."""
        self.in_flight -= count
        assert self.in_flight >= 0, "QueueGate.leave called more often than enter"
