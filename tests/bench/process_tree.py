"""Process-tree sampling for benchmarks: CPU-seconds and RSS of a process and all its descendants, by role.

`TreeSampler(psutil.Process(pid), side="sftrl")` is a thread that reads every process of the tree
every `interval_s` (psutil: user + system CPU time, RSS, command line, parent) and names each one's
role from its command line: Ray workers by their title (`ray::<ActorClass>[.method]`: learner rank,
Serve replica, rollout actor, ...), Ray's own programs, the C++ toolchain of a DeepSpeed JIT build,
and a Ray worker's own subprocesses (vLLM's engine core and worker under the Serve replica) under
its role. `TreeSamples` holds the readings; `cpu_between(start, end)` interpolates between them.
Used by bench_vs_trl.py.
"""

from __future__ import annotations

import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

IDLE_WORKER = "idle Ray workers"
SUBPROCESSES = "'s subprocesses"
RAY_SYSTEM = "Ray system (gcs, raylet, agents)"
RAY_ROLES = {
    "LearnerRank": "learner rank",
    "ServeReplica": "Serve replica",
    "SERVE_REPLICA": "Serve replica",
    "RolloutWorker": "rollout actor",
    "WeightRegistry": "weight registry",
    "ServeController": "Serve controller",
    "SERVE_CONTROLLER_ACTOR": "Serve controller",
    "DashboardAgent": RAY_SYSTEM,
    "RuntimeEnvAgent": RAY_SYSTEM,
    "IDLE": IDLE_WORKER,
}
"""Ray worker titles (`ray::<name>...`, the name changing with the call it runs) -> role."""
RAY_PROGRAMS = ("gcs_server", "raylet", "dashboard", "log_monitor", "monitor.py", "runtime_env")
COMPILER = "C++ toolchain (DeepSpeed op build, probes)"
COMPILERS = ("ninja", "c++", "g++", "gcc", "cc1plus", "as", "collect2", "ld")
"""Programs of a DeepSpeed JIT build (torch.utils.cpp_extension runs ninja, which runs the C++ toolchain)."""
RAY_WORKER_STARTING = ("default_worker.py", "setup_worker.py")  # a worker before it takes its title


@dataclass
class TreeSamples:
    """What the sampler saw of one child's process tree; times are time.time()."""

    times: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    """CPU-seconds (user + system) the tree used since it started, monotone over exits."""
    machine_busy_s: list[float] = field(default_factory=list)
    """CPU-seconds every process on the machine used (psutil.cpu_times: all but idle and iowait)."""
    rss_total: list[float] = field(default_factory=list)
    rss_by_role: list[dict[str, float]] = field(default_factory=list)
    pid_role: dict[int, str] = field(default_factory=dict)
    """Each process's role: the first one its command line named (a worker's actor, not its idle start)."""
    pid_peak: dict[int, float] = field(default_factory=dict)
    role_cpu_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    """CPU-seconds each role used over the whole run."""

    def role_processes(self, role: str) -> list[int]:
        """The processes of a role."""
        return [pid for pid, pid_role in self.pid_role.items() if pid_role == role]

    def cpu_between(self, start: float, end: float, *, machine: bool = False) -> float:
        """CPU-seconds of the tree (or of the whole machine) in [start, end], interpolated between samples."""
        used = self.machine_busy_s if machine else self.cpu_s
        return float(np.interp(end, self.times, used) - np.interp(start, self.times, used))


class TreeSampler(threading.Thread):
    """Samples CPU time and RSS of `root` and all its descendants every `interval_s` seconds."""

    def __init__(self, root: psutil.Process, *, side: str, interval_s: float = 0.25):
        super().__init__(daemon=True)
        self.samples = TreeSamples()
        self._root, self._side, self._interval_s = root, side, interval_s
        self._stopping = threading.Event()
        self._last_cpu: dict[int, float] = {}
        self._cpu_total = 0.0

    def run(self) -> None:
        while not self._stopping.is_set():
            self.sample()
            self._stopping.wait(self._interval_s)

    def stop(self) -> TreeSamples:
        """Stop sampling; returns what was sampled."""
        self._stopping.set()
        self.join()
        return self.samples

    def sample(self) -> None:
        """One reading of every live process in the tree."""
        try:
            procs = [self._root, *self._root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        rss_by_role: dict[str, float] = defaultdict(float)
        for proc in procs:
            try:
                with proc.oneshot():
                    times, rss, cmdline = proc.cpu_times(), proc.memory_info().rss, " ".join(proc.cmdline())
                    parent = proc.ppid()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            cpu, previous = times.user + times.system, self._last_cpu.get(proc.pid, 0.0)
            self._cpu_total += cpu - previous
            self._last_cpu[proc.pid] = cpu
            role = self._role(proc.pid, cmdline, parent=parent)
            rss_by_role[role] += rss
            self.samples.role_cpu_s[role] += cpu - previous
            self.samples.pid_peak[proc.pid] = max(self.samples.pid_peak.get(proc.pid, 0.0), rss)
        self.samples.times.append(time.time())
        self.samples.cpu_s.append(self._cpu_total)
        machine = psutil.cpu_times()
        self.samples.machine_busy_s.append(sum(machine) - machine.idle - machine.iowait)
        self.samples.rss_total.append(sum(rss_by_role.values()))
        self.samples.rss_by_role.append(dict(rss_by_role))

    def _role(self, pid: int, cmdline: str, *, parent: int) -> str:
        """The process's role; a Ray worker keeps the actor it became (its title changes per call)."""
        known = self.samples.pid_role.get(pid)
        if known is not None and known != IDLE_WORKER:
            return known
        if not cmdline:  # a process starting or exiting has no command line to read
            return known or "other"
        role = process_role(cmdline, is_root=pid == self._root.pid, side=self._side)
        owner = self.samples.pid_role.get(parent, "")
        if role.startswith("other") and owner not in ("", "driver", IDLE_WORKER, RAY_SYSTEM):
            # e.g. vLLM's engine core and worker under the Serve replica; grandchildren count as children
            role = owner if owner.endswith(SUBPROCESSES) else owner + SUBPROCESSES
        self.samples.pid_role[pid] = role
        return role


def process_role(cmdline: str, *, is_root: bool, side: str) -> str:
    """A process's role from its command line: Ray workers are titled `ray::<ActorClass>[.method]`."""
    if is_root:
        return "driver" if side == "sftrl" else "trainer (one process)"
    actor = re.match(r"ray::(\w+)", cmdline)
    if actor:
        return RAY_ROLES.get(actor.group(1), f"Ray actor {actor.group(1)}")
    if any(name in cmdline for name in RAY_WORKER_STARTING):
        return IDLE_WORKER
    if any(name in cmdline for name in RAY_PROGRAMS):
        return RAY_SYSTEM
    program, *args = cmdline.split()
    if Path(program).name.split("-")[0] in COMPILERS:  # also versioned names: g++-12, ld-2.36
        return COMPILER
    if Path(program).name.startswith("python"):  # name the script, module or code it runs
        code = re.search(r"-c (?:from|import) ([\w.]+)", cmdline)
        program = code.group(1) if code else next((arg for arg in args if not arg.startswith("-")), program)
    return f"other ({Path(program).name})"
