"""Small fakes for the driver's unit tests: an env, a policy handle, a learner, a server.

FakeEnv: seed even -> the first answer "0" is right (one turn, +1). Seed odd -> "0" is wrong (-1,
feedback "wrong"), and the policy's second answer "1" is right (+1). FakePolicy answers "1" when
the last user message says "wrong", else "0" — so odd seeds take two turns. FakePolicy keeps the
serving handle's typed contract: the request body must validate as `GenerateRequest`, the reply is
a `GenerateResponse` body.
"""

from __future__ import annotations

import asyncio
from typing import Any

from serving.schemas import GenerateRequest, GenerateResponse, Timing


class FakeEnv:
    """Two-attempt guessing game with the gymnasium step API; it truncates itself after the budget.

    Like the real envs it reports evaluation counts: `card_accuracy` is 1 of 1 when the first
    answer was right (even seeds), 0 of 1 otherwise.
    """

    max_attempts = 2

    def __init__(self, variant: str = "id", split: str = "all"):
        self.variant, self.split = variant, split
        self.unwrapped = self

    def reset(self, *, seed: int):
        self._answer = "0" if seed % 2 == 0 else "1"
        self._attempt = 0
        self._first_right = False
        self._messages = [{"role": "user", "content": f"guess (seed {seed})"}]
        return {"messages": list(self._messages)}, {"success": False}

    def step(self, text: str):
        self._attempt += 1
        success = text == self._answer
        self._first_right = self._first_right or (success and self._attempt == 1)
        info = {
            "success": success,
            "variant": self.variant,
            "attempt": self._attempt,
            "eval_hits": {"card_accuracy": int(self._first_right)},
            "eval_trials": {"card_accuracy": 1},
        }
        if success or self._attempt >= self.max_attempts:
            return {"messages": self._messages}, (1.0 if success else -1.0), success, not success, info
        self._messages = self._messages + [
            {"role": "assistant", "content": text},
            {"role": "user", "content": "wrong, try again"},
        ]
        return {"messages": list(self._messages)}, -1.0, False, False, info


class _Generate:
    def __init__(self, policy: FakePolicy):
        self._policy = policy

    def remote(self, request: dict) -> Any:
        return self._policy.reply(request)


class FakePolicy:
    """Duck-types a Serve DeploymentHandle: `await policy.generate.remote(body) -> reply body`.

    Like `PolicyServer.generate`, it validates the body as a `GenerateRequest` (a malformed one
    raises) and records the parsed requests in `requests`.
    """

    def __init__(self, version: int = 0):
        self.version = version
        self.requests: list[GenerateRequest] = []
        self.generate = _Generate(self)

    async def reply(self, request: dict) -> dict:
        await asyncio.sleep(0)
        parsed = GenerateRequest.model_validate(request)
        self.requests.append(parsed)
        last = parsed.messages[-1].content
        text = "1" if "wrong" in last else "0"
        return GenerateResponse(
            text=text,
            prompt_token_ids=[len(m.content) for m in parsed.messages],
            output_token_ids=[int(text) + 10, 2],
            logprobs=[-0.5, -0.1],
            finish_reason="stop",
            policy_version=self.version,
            timing=Timing(queue_s=0.125, generate_s=0.25),
        ).model_dump()


class FakeLearner:
    """Records calls; values() returns 0.5 per sample; weights are the step count."""

    def __init__(self):
        self.calls: list[tuple[str, Any]] = []
        self.steps = 0

    def sft_step(self, samples):
        self.calls.append(("sft_step", len(samples)))
        self.steps += 1
        return {"loss/sft": 1.0 / self.steps}

    def rl_step(self, samples):
        self.calls.append(("rl_step", samples))
        self.steps += 1
        return {"loss/policy": 0.1}

    def values(self, samples):
        return [0.5] * len(samples)

    def begin_rl(self):
        self.calls.append(("begin_rl", None))
        return True

    def num_parameters(self):
        return 1000

    def node_ip(self):
        return "127.0.0.1"

    def export_weights(self, path):
        return f"{path}#steps={self.steps}"

    def open_weight_stream(self, receivers, version, bucket_bytes, timeout_s):
        return {"receivers": receivers, "version": version}

    def stream_weights(self, plan, path):
        return self.export_weights(path)

    def save(self, root):
        """Mimics learner.checkpoint's layout: root/step_N/ and root/latest naming it."""
        from pathlib import Path

        self.calls.append(("save", root))
        tag = Path(root) / f"step_{self.steps:08d}"
        tag.mkdir(parents=True, exist_ok=True)
        (Path(root) / "latest").write_text(tag.name)
        return str(tag)

    def export_hf(self, out_dir):
        self.calls.append(("export_hf", out_dir))
        return out_dir

    def load(self, root):
        self.calls.append(("load", root))

    def shutdown(self):
        self.calls.append(("shutdown", None))


class FakeServer:
    """Stands in for PolicyService: records pushed versions and sets the policy's version."""

    def __init__(self, policy: FakePolicy, *, nodes: tuple[str, ...] = ("10.0.0.2",)):
        self.handle = policy
        self.nodes = list(nodes)  # each replica's node; by default not FakeLearner's, so auto syncs broadcast
        self.pushed: list[tuple[Any, int]] = []

    def push(self, weights, version):
        assert not self.pushed or version > self.pushed[-1][1], "versions only go up"
        self.pushed.append((weights, version))
        self.handle.version = version
        return [{"version": version, "swapped": True}]  # one replica's swap report

    def replica_nodes(self):
        return self.nodes

    def receive(self, plan, path, version):
        """The stream's reply: a future of the replicas' swap (the version the plan names)."""
        from concurrent.futures import Future

        assert plan == {"receivers": len(self.nodes), "version": version}
        future = Future()
        future.set_result(self.push(path, version))
        return future


class InProcessFleet:
    """A RolloutFleet stand-in that runs one RolloutWorker in this process (no Ray)."""

    def __init__(self, worker):
        self.worker = worker
        self.collected: list[list] = []
        self.results: list = []
        """The CollectResult of each collect, in the order of `collected`."""

    def collect(self, requests, sampling):
        from cluster.fleet import CollectResult

        self.collected.append(list(requests))
        batch = asyncio.run(self.worker.run_episodes(requests, sampling))
        result = CollectResult(
            episodes=batch.episodes, dropped=0, failed_actors=0, actor_wall_s=[batch.wall_s], env_s=batch.env_s
        )
        self.results.append(result)
        return result

    def training_turns(self):
        """Every turn of the episodes collected for training (requests on split='train' tasks)."""
        return [
            turn
            for requests, result in zip(self.collected, self.results, strict=True)
            if requests[0].split == "train"
            for episode in result.episodes
            for turn in episode.turns
        ]

    def shutdown(self):
        pass


def fake_env_worker_cls() -> type:
    """A RolloutWorker subclass playing FakeEnv (built here so Ray pickles it by value)."""
    from cluster.rollout import RolloutWorker

    class FakeEnvWorker(RolloutWorker):
        def __init__(self, env_config, policy, *, envs_per_actor):
            super().__init__(env_config, policy, envs_per_actor=envs_per_actor, make_env=FakeEnv)

    return FakeEnvWorker


def crash_once_worker_cls(marker, base: type) -> type:
    """`base` whose first `run_episodes` call (fleet-wide, via the marker file) kills its process."""
    import os

    class CrashOnce(base):
        async def run_episodes(self, requests, sampling):
            try:
                os.unlink(marker)  # exactly one actor wins: that one dies mid-iteration
            except FileNotFoundError:
                return await super().run_episodes(requests, sampling)
            os._exit(1)

    return CrashOnce


def hang_once_worker_cls(marker, base: type) -> type:
    """`base` whose first `run_episodes` call (fleet-wide, via the marker file) never answers."""
    import asyncio
    import os

    class HangOnce(base):
        async def run_episodes(self, requests, sampling):
            try:
                os.unlink(marker)  # exactly one actor wins: that one hangs like an actor on a lost node
            except FileNotFoundError:
                return await super().run_episodes(requests, sampling)
            await asyncio.sleep(3600)

    return HangOnce
