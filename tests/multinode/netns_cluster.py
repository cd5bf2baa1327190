"""A Ray cluster of several hosts on one machine: one network namespace per host, on one bridge (issue 14).

Each host is a network namespace with its own address on 10.77.N.0/24 (a veth pair onto a bridge in
the root namespace; lo up), running one `ray start --block` that advertises the host's CPUs and custom
resources, as a KubeRay worker group's pod does (k8s/raycluster.yaml). The bridge has an address too
(10.77.N.254), so the job client and the state queries run from the root namespace, outside the
cluster, against the head's dashboard. Network namespaces share the filesystem, so one directory
(`NetnsCluster.shared`) stands in for the PVC every pod mounts at /mnt/sftrl.

Ray 2.60 turns token authentication on by default: every node and every client gets the same fresh
token in RAY_AUTH_TOKEN (with RAY_AUTH_MODE=token), as tests/e2e/test_job_submit.py does, so the
shared ~/.ray/auth_token stays untouched.

    cluster = NetnsCluster.create(HOSTS)
    try:
        cluster.up()
        job = cluster.submit(["python", "-m", "cluster.train", ...], working_dir=ROOT, submission_id="run-1")
        result = job.wait(timeout_s=900)
    finally:
        cluster.teardown()

Cleanup stops only what this harness started: every process inside its namespaces (`ip netns pids`:
each Ray process of a host lives in its namespace), its job clients, then the namespaces (a deleted
namespace takes its veth pair along), the bridge and the directory. Never a global `ray stop`, which
would stop other people's clusters. Needs root (`ip netns`, veth and bridge links). If the test
process is killed with SIGKILL, remove what is left by hand: `ip netns list | grep smn`, then per
namespace `ip netns pids NS | xargs -r kill -9; ip netns del NS`, and `ip link del smnNbr`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RAY = str(Path(sys.executable).with_name("ray"))
STATE_SCRIPT = str(Path(__file__).with_name("cluster_state.py"))
OBJECT_STORE_BYTES = 300 * 2**20  # each host's object store: small, the machine is shared
GCS_PORT = 6379
DASHBOARD_PORT = 8265
# Fixed agent ports (each namespace has its own ports, so they never collide): with Ray's default of
# 0 the raylet waits a fixed ~15 s for each agent to write its port to a file and aborts past it
# ("Timed out waiting for file .../metrics_agent_port_*", node_manager.cc), which a loaded machine
# misses. KubeRay fixes two of them too (metrics export 8080, dashboard agent 52365).
AGENT_PORTS = {
    "--dashboard-agent-listen-port": 52365,
    "--dashboard-agent-grpc-port": 52366,
    "--runtime-env-agent-port": 52367,
    "--metrics-export-port": 8080,
}
BRIDGE_HOST = 254  # the root namespace's address on the bridge: where clients run
START_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Host:
    """One host of the cluster: its name, the last byte of its address, what its Ray node advertises."""

    name: str
    address_byte: int
    num_cpus: float
    resources: dict[str, float] = field(default_factory=dict)
    head: bool = False


@dataclass
class RunningNode:
    """A host's `ray start --block` process (the namespace's first Ray process) and its log."""

    process: subprocess.Popen
    log: Path


@dataclass
class JobResult:
    """How a `ray job submit` client ended: its exit status and everything it printed."""

    returncode: int
    output: str


@dataclass
class Job:
    """A `ray job submit` client running in the root namespace; it follows the job's logs until it ends."""

    submission_id: str
    process: subprocess.Popen
    log: Path
    started: float

    def output(self) -> str:
        """What the client printed so far (the job's logs, then its final status)."""
        return self.log.read_text(errors="replace")

    def wait(self, timeout_s: float) -> JobResult | None:
        """The result once the client ends, or None after `timeout_s` (the job keeps running)."""
        try:
            returncode = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None
        return JobResult(returncode, self.output())


class NetnsCluster:
    """Namespaces, bridge and Ray nodes of `hosts` on subnet 10.77.`subnet`.0/24; `up()`, then `teardown()`."""

    def __init__(self, hosts: tuple[Host, ...], *, subnet: int, base: Path):
        heads = [h for h in hosts if h.head]
        if len(heads) != 1:
            raise ValueError(f"a cluster needs exactly one head host, got {[h.name for h in heads]}")
        self.hosts = {h.name: h for h in hosts}
        self.head = heads[0]
        self.subnet = subnet
        self.base = base
        self.shared = base / "pvc"
        """The directory every host sees (the PVC of k8s/checkpoints-pvc.yaml)."""
        self.bridge = f"smn{subnet}br"
        self.env = cluster_env()
        self.nodes: dict[str, RunningNode] = {}
        self.jobs: list[Job] = []
        self._incarnations: dict[str, int] = {}
        self._namespaces: list[str] = []
        self._bridge_made = False

    @classmethod
    def create(cls, hosts: tuple[Host, ...]) -> NetnsCluster:
        """A cluster on the first 10.77.N.0/24 no interface and no namespace of this machine uses yet."""
        used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
        namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        for subnet in range(256):
            if f"10.77.{subnet}." not in used and f"smn{subnet}-" not in namespaces:
                # Short: Ray's socket paths under the temp dir must stay below 108 characters.
                base = Path(tempfile.mkdtemp(prefix="smn", dir="/tmp"))
                return cls(hosts, subnet=subnet, base=base)
        raise RuntimeError("every 10.77.N.0/24 is in use on this machine; remove stale smn* namespaces")

    # ------------------------------------------------------------------ addresses
    def namespace(self, host: str) -> str:
        """The network namespace of `host`."""
        return f"smn{self.subnet}-{host}"

    def address(self, host: str) -> str:
        """The IPv4 address of `host`."""
        return f"10.77.{self.subnet}.{self.hosts[host].address_byte}"

    @property
    def dashboard(self) -> str:
        """The head's dashboard (job submission and state API) as the root namespace reaches it."""
        return f"http://{self.address(self.head.name)}:{DASHBOARD_PORT}"

    # ------------------------------------------------------------------ lifecycle
    def up(self) -> None:
        """Make the network, start the head, then every other host; wait until all nodes are alive."""
        self.shared.mkdir(parents=True)
        self._make_network()
        self.start_node(self.head.name)
        for name in self.hosts:
            if name != self.head.name:
                self.start_node(name)
        self.wait_alive(list(self.hosts))

    def _make_network(self) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        self._bridge_made = True
        ip("addr", "add", f"10.77.{self.subnet}.{BRIDGE_HOST}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for name in self.hosts:
            ns = self.namespace(name)
            ip("netns", "add", ns)
            self._namespaces.append(ns)
            outside, inside = f"smn{self.subnet}{name[:4]}", f"smn{self.subnet}{name[:4]}p"
            ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            ip("link", "set", inside, "netns", ns)
            ip("link", "set", outside, "master", self.bridge)
            ip("link", "set", outside, "up")
            ip("-n", ns, "addr", "add", f"{self.address(name)}/24", "dev", inside)
            ip("-n", ns, "link", "set", inside, "up")
            ip("-n", ns, "link", "set", "lo", "up")

    def start_node(self, name: str, *, attempts: int = 3) -> RunningNode:
        """Start `name`'s Ray node in its namespace (again after a crash: a fresh temp dir, as a new pod has).

        A start that fails is retried, as the kubelet restarts a crashed container: on a loaded machine
        the raylet may miss `ray start`'s fixed 30 s to register with the GCS.
        """
        problem = None
        for _ in range(attempts):
            node = self._launch(name)
            problem = wait_started(node)
            if problem is None:
                return node
            stop_group(node.process)
            kill_namespace(self.namespace(name), grace_s=5.0)
        raise RuntimeError(f"`ray start` of host {name} failed {attempts} times; the last:\n{problem}")

    def _launch(self, name: str) -> RunningNode:
        host = self.hosts[name]
        incarnation = self._incarnations.get(name, 0) + 1
        self._incarnations[name] = incarnation
        temp_dir = self.base / f"{name[0]}{incarnation}"
        log = self.base / f"{name}-{incarnation}.log"
        cmd = [RAY, "start", "--block", "--disable-usage-stats", "--node-ip-address", self.address(name)]
        cmd += ["--num-cpus", f"{host.num_cpus:g}", "--object-store-memory", str(OBJECT_STORE_BYTES)]
        cmd += ["--temp-dir", str(temp_dir), *[str(x) for flag_port in AGENT_PORTS.items() for x in flag_port]]
        if host.resources:
            cmd += ["--resources", json.dumps(host.resources)]
        if host.head:
            cmd += ["--head", "--port", str(GCS_PORT), "--include-dashboard", "true", "--dashboard-host", "0.0.0.0"]
            cmd += ["--dashboard-port", str(DASHBOARD_PORT)]
        else:
            cmd += ["--address", f"{self.address(self.head.name)}:{GCS_PORT}"]
        with log.open("w") as out:
            # A session of its own: a signal to the test's process group never reaches the node.
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.namespace(name), *cmd],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        node = RunningNode(process=process, log=log)
        self.nodes[name] = node
        return node

    def wait_alive(self, names: list[str], *, timeout_s: float = START_TIMEOUT_S) -> dict[str, dict]:
        """Wait until each host of `names` has an ALIVE node; returns host -> its node (state API record)."""
        deadline = time.monotonic() + timeout_s
        while True:
            alive = {n["host"]: n for n in self.node_records() if n["state"] == "ALIVE"}
            if all(name in alive for name in names):
                return alive
            if time.monotonic() > deadline:
                raise RuntimeError(f"hosts {sorted(set(names) - alive.keys())} have no alive Ray node; see {self.base}")
            time.sleep(2)

    def kill_raylet(self, name: str) -> int:
        """SIGKILL `name`'s raylet (a crash: its `ray start --block` then kills the node's other processes)."""
        for pid in namespace_pids(self.namespace(name)):
            if Path(command_line(pid).split(" ")[0]).name == "raylet":
                os.kill(pid, signal.SIGKILL)
                return pid
        raise RuntimeError(f"host {name} runs no raylet (processes: {namespace_pids(self.namespace(name))})")

    def wait_host_down(self, name: str, *, timeout_s: float = 120.0) -> None:
        """Wait until nothing runs in `name`'s namespace (what is left after 30 s is killed, as a pod's would be)."""
        node = self.nodes[name]
        try:
            node.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        kill_namespace(self.namespace(name), grace_s=0.0)
        deadline = time.monotonic() + timeout_s
        while namespace_pids(self.namespace(name)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes {namespace_pids(self.namespace(name))} of host {name} outlived a kill")
            time.sleep(1)

    def wait_node_dead(self, node_id: str, *, timeout_s: float = 180.0) -> float:
        """Wait until the GCS marks `node_id` DEAD; returns how long that took."""
        start = time.monotonic()
        while True:
            states = {n["node_id"]: n["state"] for n in self.node_records()}
            if states.get(node_id) == "DEAD":
                return time.monotonic() - start
            if time.monotonic() - start > timeout_s:
                raise RuntimeError(f"node {node_id} still {states.get(node_id)} after {timeout_s:g} s")
            time.sleep(2)

    def teardown(self, *, keep_logs: bool = False) -> None:
        """Stop the job clients and every process in the namespaces, delete namespaces and bridge.

        The directory (shared run directories, Ray's logs, each node's and job's output) goes too,
        unless `keep_logs` (after a failure, to read them).
        """
        for job in self.jobs:
            stop_group(job.process)
        for ns in self._namespaces:
            kill_namespace(ns, grace_s=5.0)
        for node in self.nodes.values():
            stop_group(node.process)
        for ns in self._namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        if self._bridge_made:
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        if not keep_logs:
            shutil.rmtree(self.base, ignore_errors=True)

    # ------------------------------------------------------------------ clients (root namespace)
    def submit(self, entrypoint: list[str], *, working_dir: Path, submission_id: str) -> Job:
        """`ray job submit --working-dir` of `entrypoint` to the head, from the root namespace; returns at once."""
        log = self.base / f"job-{submission_id}.log"
        # `ray job submit -- ARGS` quotes each argument (shlex.join) into the job's shell command line.
        cmd = [RAY, "job", "submit", "--address", self.dashboard, "--working-dir", str(working_dir)]
        cmd += ["--submission-id", submission_id, "--", *entrypoint]
        with log.open("w") as out:
            process = subprocess.Popen(
                cmd, cwd=working_dir, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        job = Job(submission_id=submission_id, process=process, log=log, started=time.monotonic())
        self.jobs.append(job)
        return job

    def state(self, *args: str, timeout_s: float = 120.0) -> Any:
        """Run cluster_state.py (Ray's state API) against the head with the cluster's token; its JSON output."""
        done = subprocess.run(
            [sys.executable, STATE_SCRIPT, self.dashboard, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s + 60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"cluster_state.py {' '.join(args)} failed:\n{tail(done.stdout + done.stderr)}")
        return json.loads(done.stdout)

    def node_records(self) -> list[dict]:
        """Every node the GCS knows (dead ones too), each with the `host` whose address it has."""
        by_address = {self.address(name): name for name in self.hosts}
        return [{**n, "host": by_address.get(n["node_ip"])} for n in self.state("nodes")]

    def actor_records(self) -> list[dict]:
        """Every actor the GCS knows (dead ones too), with `host`: the host of the node it ran on."""
        hosts = {n["node_id"]: n["host"] for n in self.node_records()}
        return [{**a, "host": hosts.get(a.get("node_id"))} for a in self.state("actors")]


def cluster_env() -> dict[str, str]:
    """The environment of every node and client: this venv first on PATH (the job's `python`), one token."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_AUTH_TOKEN"] = os.urandom(32).hex()
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def wait_started(node: RunningNode) -> str | None:
    """None once `node`'s `ray start` says the runtime started; else why not (its log's tail)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while "Ray runtime started." not in node.log.read_text(errors="replace"):
        if node.process.poll() is not None or time.monotonic() > deadline:
            return tail(node.log.read_text(errors="replace"))
        time.sleep(1)
    return None


def ip(*args: str) -> None:
    """Run `ip ARGS`; CalledProcessError (with ip's message) if it fails."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, ["ip", *args], done.stdout, done.stderr)


def namespace_pids(ns: str) -> list[int]:
    """The processes whose network namespace is `ns` (none once it is deleted)."""
    done = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    return [int(pid) for pid in done.stdout.split()] if done.returncode == 0 else []


def command_line(pid: int) -> str:
    """`pid`'s command line, arguments separated by spaces ("" once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def kill_namespace(ns: str, *, grace_s: float) -> None:
    """SIGTERM every process in `ns`, then after `grace_s` SIGKILL what is left (0: SIGKILL at once)."""
    for sig in (signal.SIGTERM, signal.SIGKILL) if grace_s else (signal.SIGKILL,):
        for pid in namespace_pids(ns):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while namespace_pids(ns) and time.monotonic() < deadline:
            time.sleep(0.5)


def stop_group(process: subprocess.Popen) -> None:
    """SIGKILL the process group `process` leads (started with start_new_session), if it still runs, and reap it."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def tail(text: str, n_chars: int = 4000) -> str:
    """The last `n_chars` of `text` (for assertion messages)."""
    return text[-n_chars:]
