"""The driver's side of the policy server: start it in Ray Serve, push new weights to it.

    policy = PolicyService.start(config.serving)     # serve.run(serving.app.build_app(...))
    reply = await policy.handle.generate.remote({"messages": [...]})   # rollout actors
    policy.push(learner.export_weights(path), version)   # every replica loads the file, swaps atomically
    policy.receive(plan, path, version).result()        # or joins a learner's broadcast (cluster/weight_sync.py)

Versions only go up (serving contract); `push` is the weight-sync step of design.md ("Data flow",
step 6) and is what `time/weight_sync_s` measures.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from serving.config import ServingConfig

_DEPLOYING = threading.Lock()
"""One `serve.run` at a time in this process: Serve pickles a deployment actor's module by value
between a global register/unregister pair (ray/serve/config.py), so two deployments at once (a
study's parallel runs) break each other's pickling."""


@dataclass
class PolicyService:
    """A running Serve application of `serving.app.PolicyServer` and its handle."""

    handle: Any
    app_name: str

    @classmethod
    def start(cls, config: ServingConfig, *, http: bool) -> PolicyService:
        """Deploy the policy server and wait until it is ready.

        `http=False` starts Serve without proxies (rollouts use the handle; no port is bound);
        `http=True` serves HTTP on config.host:config.port. On a cluster where Serve already
        runs, its existing proxy settings stay.
        """
        from ray import serve

        from serving.app import build_app

        with _DEPLOYING:
            if http:
                serve.start(http_options={"host": config.host, "port": config.port})
            else:
                serve.start(proxy_location="Disabled")
            handle = serve.run(build_app(config), name=config.app_name, route_prefix=config.route_prefix)
        return cls(handle=handle, app_name=config.app_name)

    def push(self, weights: Any, version: int) -> list[dict]:
        """Make every replica serve `weights` as `version`.

        `weights` is a safetensors file's path every replica can read (`cluster/weight_files.py`), or
        a state dict or its ObjectRef. Blocks until every replica has swapped (and the first has
        published the version for replicas that start later); returns each replica's swap report.
        """
        return self.handle.broadcast("load_weights", weights, version).results()

    def replica_nodes(self) -> list[str]:
        """The node address of each replica a broadcast reaches now."""
        return self.handle.broadcast("node_ip").results()

    def receive(self, plan: Any, path: str, version: int) -> Future:
        """Start every replica receiving the weight broadcast `plan` as `version`; the future's result: their reports.

        `path` is the file learner rank 0 writes the same weights to, kept by the registry for
        replicas that start later (`serving.app.PolicyServer.receive_weights`). A broadcast is
        only sent once its results are asked for, so a thread asks while the caller sends.
        """
        reply = self.handle.broadcast("receive_weights", plan, path, version)
        future: Future = Future()

        def wait() -> None:
            try:
                future.set_result(reply.results())
            except BaseException as error:  # noqa: BLE001 (handed to the caller through the future)
                future.set_exception(error)

        threading.Thread(target=wait, name=f"receive-weights-v{version}", daemon=True).start()
        return future

    def shutdown(self) -> None:
        """Delete the application (Serve itself keeps running for others)."""
        from ray import serve

        serve.delete(self.app_name)
