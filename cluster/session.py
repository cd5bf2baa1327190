"""One lifecycle for every command that runs on Ray: join or start it, then stop what was started.

    with ClusterSession(num_cpus=4) as session:
        policy = session.started("policy", PolicyService.start(config.serving, http=False))
        fleet = session.started("fleet", RolloutFleet.launch(config.env, policy.handle, config.rollout))
        ...                    # Ctrl-C or SIGTERM here unwinds the block like any exception
        session.stop("fleet")  # stop a part early; the others run until the block ends

Entering joins the cluster `ray_connect.init_ray` finds (the one already initialised, RAY_ADDRESS's
under `ray job submit`) or starts a local one, then makes SIGINT and SIGTERM raise
KeyboardInterrupt (`signals.interrupt_on_signals`, after ray.init, which installs its own SIGTERM
handler). Leaving stops every part still running, newest first (the fleet before the learner
before the Serve app the fleet plays against), then Serve and Ray, only if this process started
Ray: a cluster it joined keeps running. A part whose shutdown fails does not keep the others
running; its error is raised after they stopped. `startup_s` says how long joining Ray and each
part's start took (a part starts while its `started(...)` argument is built). `train.build_session`,
`evaluation.evaluate_checkpoint` and `sftrl serve` (cluster/cli/serve.py) use it.
"""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from typing import Protocol, TypeVar

from cluster.ray_connect import init_ray
from cluster.signals import interrupt_on_signals


class Stoppable(Protocol):
    """A part of a session: a policy service, a learner group, a rollout fleet."""

    def shutdown(self) -> None:
        """Release what the part holds on the cluster (actors, placement groups, a Serve app)."""


PartT = TypeVar("PartT", bound=Stoppable)


class ClusterSession:
    """Ray for one command, and the parts the command starts on it; a context manager.

    `num_cpus` sizes a local cluster this session starts (None: the machine's CPUs); a joined
    cluster keeps its size.
    """

    def __init__(self, *, num_cpus: int | None = None) -> None:
        self._num_cpus = num_cpus
        self._running: dict[str, Stoppable] = {}  # in start order
        self._stopped: set[str] = set()
        self.owns_ray = False
        """Whether this session started Ray (and so stops Serve and Ray on exit)."""
        self.startup_s: dict[str, float] = {}
        """Seconds from entering to Ray ready ("ray"), then from each start to the next part's record."""
        self._last_start = 0.0

    def __enter__(self) -> ClusterSession:
        entered = time.perf_counter()
        self.owns_ray = init_ray(num_cpus=self._num_cpus)
        if threading.current_thread() is threading.main_thread():  # a study's parallel runs: the main one has them
            interrupt_on_signals()  # after ray.init, which installs its own SIGTERM handler
        self._last_start = time.perf_counter()
        self.startup_s["ray"] = self._last_start - entered
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def started(self, name: str, part: PartT) -> PartT:
        """Record `part`, just started, to be stopped with the session; returns it."""
        if name in self._running or name in self._stopped:
            raise ValueError(f"this session already has a part named {name!r}; give each part its own name")
        self._running[name] = part
        now = time.perf_counter()
        self.startup_s[name], self._last_start = now - self._last_start, now
        return part

    def stop(self, *names: str) -> None:
        """Stop the named parts now, newest first; a part already stopped is skipped."""
        unknown = sorted(set(names) - self._running.keys() - self._stopped)
        if unknown:
            raise ValueError(f"no part named {unknown} in this session; its parts: {sorted(self._running)}")
        # The stack unwinds newest first and calls every shutdown even when an earlier one raised.
        with ExitStack() as shutdowns:
            for name in [n for n in self._running if n in names]:
                shutdowns.callback(self._running.pop(name).shutdown)
                self._stopped.add(name)

    def close(self) -> None:
        """Stop every part still running, newest first, then Serve and Ray if this session started Ray."""
        with ExitStack() as shutdowns:
            if self.owns_ray:
                shutdowns.callback(_stop_serve_and_ray)
                self.owns_ray = False
            shutdowns.callback(self.stop, *self._running)


def _stop_serve_and_ray() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()
