"""Rollout workers: K environments played concurrently against the policy server.

A `RolloutWorker` is a plain class (it tests without Ray); `fleet.py` launches it as a Ray actor.
It holds up to `envs_per_actor` environment instances per variant and plays one episode per
instance at a time with asyncio (design.md, "Data flow", step 2). Each turn the observation's chat
messages (plus the env's current picture, for VL tasks) go to the policy through a Ray Serve
`DeploymentHandle`, typed by the serving contract (`serving.schemas`, the `/v1/generate` body):

    request = GenerateRequest(messages=..., images=[png_b64], temperature=..., seed=...)
    reply = GenerateResponse.model_validate(await policy.generate.remote(request.model_dump()))

The reply's `prompt_token_ids`, `output_token_ids`, `logprobs` and `policy_version` are kept as
they are (token in, token out); its `text` goes to `env.step`, whose feedback becomes the next user
turn (sequential revision). Episodes come back as `Episode` records.

What the policy saw is what the learner trains on: each `Turn` carries the picture sent with its
request (V-IRL draws a new one at every rail point; the PNG is re-encoded only when the env hands
over a new array) and the temperature it was sampled at. An `EpisodeRequest.sampling_seed` makes
the sampled replies reproducible: turn t's request seed is `turn_seed(sampling_seed, t)`.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from cluster.config import EnvConfig, SamplingConfig
from serving.schemas import GenerateRequest, GenerateResponse

if TYPE_CHECKING:
    from envs.splits import Split

SEED_SPACE = 2**63
"""Request seeds lie in [0, SEED_SPACE), the server's range (`serving.schemas.SamplingParams.seed`)."""


@dataclass(frozen=True)
class EpisodeRequest:
    """One episode to play: which seed, which GRPO group, which variant and split, which sampling noise.

    `split` is the envs' held-out split the episode's env deals (envs.splits): the trainer sends
    "train" for training, the evaluation harness "eval"; "all" (the envs' default) is no split.

    `sampling_seed` (>= 0; the trainer derives it from the run seed, iteration and episode index)
    seeds every sampled turn (`turn_seed`), so a replayed request replays the same replies. None:
    the server draws fresh noise. Greedy requests (temperature 0) never carry a seed.
    """

    seed: int
    group: int
    variant: str
    sampling_seed: int | None = None
    split: Split = "all"

    def __post_init__(self) -> None:
        if self.sampling_seed is not None and self.sampling_seed < 0:
            raise ValueError(
                f"sampling_seed={self.sampling_seed} is negative; give a seed >= 0 (or None for unseeded sampling)"
            )


def turn_seed(sampling_seed: int, turn: int) -> int:
    """Turn `turn`'s request seed: numpy's SeedSequence mix of (sampling_seed, turn), in [0, 2**63).

    Stable across processes and Python versions (unlike `hash`), and distinct turns of one episode
    (or the same turn of neighbouring episodes) get unrelated seeds.
    """
    (word,) = np.random.SeedSequence([sampling_seed, turn]).generate_state(1, dtype=np.uint64)
    return int(word) % SEED_SPACE


@dataclass
class Turn:
    """One policy call: what the policy saw and produced (ids exactly as generated)."""

    prompt_ids: list[int]
    output_ids: list[int]
    logprobs: list[float]
    reward: float
    policy_version: int
    text: str
    finish_reason: str
    queue_s: float = 0.0
    """Server-side time the request waited for a batch (serving reply `timing`)."""
    generate_s: float = 0.0
    """Server-side time of the batch that generated this reply."""
    temperature: float = 1.0
    """The temperature of the request that produced this turn (0 = greedy); `logprobs` are under it."""
    image: np.ndarray | None = None
    """The picture sent with this turn's request (VL tasks), (H, W, 3) uint8; None for text tasks."""

    @classmethod
    def from_reply(
        cls, reply: GenerateResponse, *, reward: float, temperature: float, image: np.ndarray | None
    ) -> Turn:
        """The turn of one reply, its ids exactly as generated."""
        return cls(
            prompt_ids=list(reply.prompt_token_ids),
            output_ids=list(reply.output_token_ids),
            logprobs=list(reply.logprobs),
            reward=float(reward),
            policy_version=reply.policy_version,
            text=reply.text,
            finish_reason=reply.finish_reason,
            queue_s=reply.timing.queue_s,
            generate_s=reply.timing.generate_s,
            temperature=temperature,
            image=image,
        )


@dataclass
class Episode:
    """A finished episode; each turn carries the picture its policy call saw (VL tasks)."""

    seed: int
    group: int
    variant: str
    success: bool
    turns: list[Turn]
    final_info: dict[str, Any] = field(default_factory=dict)

    @property
    def total_reward(self) -> float:
        """Sum of the turns' rewards."""
        return float(sum(t.reward for t in self.turns))


@dataclass
class RolloutBatch:
    """What one `run_episodes` call returns; `env_s` is time spent in env code and image encoding."""

    episodes: list[Episode]
    wall_s: float
    env_s: float


class RolloutWorker:
    """Plays episodes of one task against a policy handle with `generate.remote(request) -> reply`.

    `policy` is a Serve DeploymentHandle (or any object with the same `generate.remote` awaitable).
    `make_env(variant, split)` builds one environment; the default is `EnvConfig.make` for the task.
    """

    def __init__(
        self,
        env_config: EnvConfig,
        policy: Any,
        *,
        envs_per_actor: int,
        make_env: Callable[[str, Split], Any] | None = None,
    ):
        self._policy = policy
        self._envs_per_actor = envs_per_actor
        self._make_env = make_env or env_config.make
        self._envs: dict[tuple[str, Split], list[Any]] = {}

    def ping(self) -> str:
        """Health check for RLlib's FaultTolerantActorManager."""
        return "pong"

    async def apply(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `func(self, ...)` (awaiting it if it is a coroutine): the manager's call protocol."""
        result = func(self, *args, **kwargs)
        return await result if inspect.isawaitable(result) else result

    async def run_episodes(self, requests: list[EpisodeRequest], sampling: SamplingConfig) -> RolloutBatch:
        """Play every request (at most envs_per_actor at once per variant and split) and return the episodes."""
        start = time.perf_counter()
        env_clock = _Clock()
        pools = {key: self._pool(*key) for key in {(r.variant, r.split) for r in requests}}
        episodes = await asyncio.gather(
            *(self._play(pools[r.variant, r.split], r, sampling=sampling, env_clock=env_clock) for r in requests)
        )
        return RolloutBatch(episodes=list(episodes), wall_s=time.perf_counter() - start, env_s=env_clock.total_s)

    def _pool(self, variant: str, split: Split) -> asyncio.Queue:
        """A queue of this variant's idle envs dealing `split` (built once, reused by every call)."""
        if (variant, split) not in self._envs:
            self._envs[variant, split] = [self._make_env(variant, split) for _ in range(self._envs_per_actor)]
        pool: asyncio.Queue = asyncio.Queue()
        for env in self._envs[variant, split]:
            pool.put_nowait(env)
        return pool

    async def _play(
        self, pool: asyncio.Queue, request: EpisodeRequest, *, sampling: SamplingConfig, env_clock: _Clock
    ) -> Episode:
        env = await pool.get()
        try:
            return await self._play_on(env, request, sampling=sampling, env_clock=env_clock)
        finally:
            pool.put_nowait(env)

    async def _play_on(
        self, env: Any, request: EpisodeRequest, *, sampling: SamplingConfig, env_clock: _Clock
    ) -> Episode:
        """One episode with sequential revision: reply -> env.step -> feedback turn -> reply ..."""
        with env_clock:
            obs, info = env.reset(seed=request.seed)
        pictures = _PictureEncoder()
        turns: list[Turn] = []
        # The env bounds the episode: it truncates after its attempt budget, and its registration's
        # max_episode_steps (gymnasium's TimeLimit) is the hard safety net.
        while True:
            image = obs.get("image")  # this turn's picture: V-IRL draws a new one at every rail point
            with env_clock:
                images = pictures.encoded(image)
            seed = None if request.sampling_seed is None else turn_seed(request.sampling_seed, len(turns))
            generate = generate_request(obs["messages"], images, sampling, seed=seed)
            # The handle takes and returns the `/v1/generate` JSON body (serving/app.py).
            reply = GenerateResponse.model_validate(await self._policy.generate.remote(generate.model_dump()))
            with env_clock:
                obs, reward, terminated, truncated, info = env.step(reply.text)
            turns.append(Turn.from_reply(reply, reward=reward, temperature=generate.temperature, image=image))
            if terminated or truncated:
                break
        return Episode(
            seed=request.seed,
            group=request.group,
            variant=request.variant,
            success=bool(info.get("success", False)),
            turns=turns,
            final_info=json_safe(info),
        )


def generate_request(
    messages: list[dict], images: list[str], sampling: SamplingConfig, *, seed: int | None
) -> GenerateRequest:
    """One turn's request (serving contract: `POST /v1/generate`); greedy (temperature 0) drops `seed`."""
    return GenerateRequest(
        messages=messages,
        images=images,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_new_tokens=sampling.max_new_tokens,
        seed=None if sampling.temperature == 0 else seed,
    )


class _PictureEncoder:
    """One episode's request images: the env's picture as base64 PNG, re-encoded only when it changes.

    The envs hand over the same array object while the picture stays (V-IRL between attempts at
    one rail point) and a new array for a new picture, so identity decides.
    """

    def __init__(self) -> None:
        self._image: np.ndarray | None = None
        self._encoded: list[str] = []

    def encoded(self, image: np.ndarray | None) -> list[str]:
        """`[png_b64]` of `image`, or `[]` for a text task (no picture)."""
        if image is None:
            return []
        if image is not self._image:
            self._image, self._encoded = image, [encode_png_base64(image)]
        return self._encoded


def encode_png_base64(image: np.ndarray) -> str:
    """(H, W, 3) uint8 -> base64 PNG string, the image format the serving API accepts."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def json_safe(info: dict[str, Any]) -> dict[str, Any]:
    """The part of an env `info` dict that JSON can hold (for episode logs and metrics)."""
    safe: dict[str, Any] = {}
    for key, value in info.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, (bool, int, float, str)) or value is None:
            safe[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (bool, int, float, str)) for v in value):
            safe[key] = list(value)
        elif isinstance(value, dict) and all(isinstance(v, (bool, int, float, str)) for v in value.values()):
            safe[key] = {str(k): v for k, v in value.items()}
    return safe


class _Clock:
    """Accumulates the time spent inside `with clock:` blocks (synchronous env code)."""

    def __init__(self) -> None:
        self.total_s = 0.0
        self._start = 0.0

    def __enter__(self) -> _Clock:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.total_s += time.perf_counter() - self._start
