"""Request and response bodies of the policy endpoint (pydantic v2).

`GenerateRequest`/`GenerateResponse` are the token-level API (`POST /v1/generate`, and the dict
that `handle.generate.remote(...)` takes and returns). The `Chat*` models follow the OpenAI chat
completions API closely enough that the official `openai` client works against
`POST /v1/chat/completions`; unknown OpenAI fields are ignored there, while `/v1/generate`
forbids unknown fields so typos fail with a 422 instead of being silently dropped. `ErrorResponse`
is the body of every error the endpoint sends (`ValidationErrorResponse` for a 422).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

Role = Literal["system", "user", "assistant"]
# A temperature above 0 and below this is refused: logits / temperature can overflow float32 (at 1e-40 every
# log-prob is NaN, which a JSON reply cannot carry); at 1e-6 only logits beyond 3e32 would.
MIN_TEMPERATURE = 1e-6


def _nonzero_temperature_at_least_min(temperature: float) -> float:
    if 0 < temperature < MIN_TEMPERATURE:
        raise ValueError(
            f"temperature {temperature} is below {MIN_TEMPERATURE}; "
            f"send 0 for greedy decoding or at least {MIN_TEMPERATURE}"
        )
    return temperature


Temperature = Annotated[
    float,
    Field(ge=0.0, le=100.0, json_schema_extra={"not": {"exclusiveMinimum": 0, "exclusiveMaximum": MIN_TEMPERATURE}}),
    AfterValidator(_nonzero_temperature_at_least_min),
]


class TextPart(BaseModel):
    """A text piece of a multimodal message."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ImagePart(BaseModel):
    """An image placeholder; the pixels come from the request's `images` list, in order."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["image"]


class Message(BaseModel):
    """One HF-chat-template message (the envs' observation format)."""

    model_config = ConfigDict(extra="forbid")
    role: Role
    content: str | list[Annotated[TextPart | ImagePart, Field(discriminator="type")]]


class SamplingParams(BaseModel):
    """Per-request sampling; each request in a batch keeps its own."""

    model_config = ConfigDict(extra="forbid")
    temperature: Temperature = Field(1.0, description=f"0 = greedy; otherwise {MIN_TEMPERATURE} to 100.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int | None = Field(None, ge=1, description="None = the server's default_max_new_tokens.")
    seed: int | None = Field(None, ge=0, lt=2**63)
    stop: list[str] = Field(default_factory=list)


class GenerateRequest(SamplingParams):
    """`POST /v1/generate` body: exactly one of `messages` or `prompt_token_ids`."""

    model_config = ConfigDict(  # the published schema states what `_one_prompt` checks (pydantic cannot derive it)
        json_schema_extra={
            "oneOf": [
                {"required": ["messages"], "properties": {"messages": {"type": "array", "minItems": 1}}},
                {
                    "required": ["prompt_token_ids"],
                    "properties": {"prompt_token_ids": {"type": "array", "minItems": 1}},
                },
            ]
        }
    )
    messages: list[Message] | None = None
    prompt_token_ids: list[Annotated[int, Field(ge=0)]] | None = None
    images: list[str] = Field(default_factory=list, description="base64 PNG/JPEG or data URLs, in placeholder order.")

    @model_validator(mode="after")
    def _one_prompt(self) -> GenerateRequest:
        if (self.messages is None) == (self.prompt_token_ids is None):
            raise ValueError("give exactly one of `messages` or `prompt_token_ids`")
        if self.prompt_token_ids is not None and not self.prompt_token_ids:
            raise ValueError("`prompt_token_ids` is empty; give at least one token id")
        if self.messages is not None and not self.messages:
            raise ValueError("`messages` is empty; give at least one message")
        return self


class Timing(BaseModel):
    """Server-side seconds: waiting for a batch, and the batch that generated the reply."""

    queue_s: float
    generate_s: float


class GenerateResponse(BaseModel):
    """`POST /v1/generate` reply; `logprobs` has one entry per output token, under the sampling temperature."""

    text: str
    prompt_token_ids: list[int]
    output_token_ids: list[int]
    logprobs: list[float]
    finish_reason: Literal["stop", "length"]
    policy_version: int
    timing: Timing


# ---------------------------------------------------------------- OpenAI chat completions


class ImageURL(BaseModel):
    """An OpenAI `image_url`: a base64 `data:` URL (remote URLs are refused)."""

    url: str
    detail: str | None = None


class ChatTextPart(BaseModel):
    """A text part of an OpenAI chat message."""

    type: Literal["text"]
    text: str


class ChatImagePart(BaseModel):
    """An image part of an OpenAI chat message."""

    type: Literal["image_url"]
    image_url: ImageURL


class ChatMessage(BaseModel):
    """One OpenAI chat message (string or list-of-parts content)."""

    role: Role
    content: str | list[Annotated[ChatTextPart | ChatImagePart, Field(discriminator="type")]]


class ChatCompletionRequest(BaseModel):
    """The subset of OpenAI's request we honour; other OpenAI fields are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: Temperature = Field(1.0, description=f"0 = greedy; otherwise {MIN_TEMPERATURE} to 100.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, lt=2**63)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=0, description="Only 0 is supported.")
    stream: Literal[False] = False


class TokenLogprob(BaseModel):
    """One generated token and its log-prob (OpenAI `logprobs.content[i]`)."""

    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list[dict] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    """The per-token log-probs of one choice."""

    content: list[TokenLogprob]


class AssistantMessage(BaseModel):
    """The assistant reply of one choice."""

    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    """One completion of an OpenAI chat request."""

    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: ChoiceLogprobs | None = None


class Usage(BaseModel):
    """Token counts of a chat completion (prompt counted once for all choices)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletionResponse(BaseModel):
    """The OpenAI `chat.completion` object, plus the weights' `policy_version`."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    policy_version: int


class ModelCard(BaseModel):
    """One entry of `GET /v1/models`."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "sftrl"


class ModelList(BaseModel):
    """`GET /v1/models`: the OpenAI model list."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class PolicyInfo(BaseModel):
    """`GET /v1/policy`: what this replica serves."""

    model: str
    engine: str  # "transformers" or "vllm"
    version: int
    device: str
    replica: str
    is_vlm: bool
    batches: int
    requests: int
    largest_batch: int
    rss_mb: float  # resident, the replica and its child processes (vLLM's), shared object-store pages included
    private_mb: float  # unique set size: memory only this replica and its child processes hold


# ---------------------------------------------------------------- errors


class ErrorInfo(BaseModel):
    """The `error` object of an error reply (OpenAI's shape); `code` names the limit or check that refused."""

    message: str
    type: Literal["invalid_request_error", "authentication_error", "server_busy"]
    param: str | None
    code: str


class ErrorResponse(BaseModel):
    """Body of every error reply the endpoint sends (4xx, and 503 for a full queue): `RequestError.body()`."""

    error: ErrorInfo


class ValidationProblem(BaseModel):
    """One reason a body failed validation: where (`loc`), what (`msg`), pydantic's error `type`."""

    type: str
    loc: list[str | int]
    msg: str


class ValidationErrorResponse(ErrorResponse):
    """Body of a 422 (malformed JSON, or a body that does not match the request schema)."""

    detail: list[ValidationProblem]
