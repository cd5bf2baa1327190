"""Resource preflight: can the Ray cluster host everything a run requests? If not, fail in seconds.

The GPU configs place learner ranks, Serve replicas and rollout actors with custom resources
(`learner`, `policy`, `rollout`) that only KubeRay's worker groups advertise. On a cluster without
them, the learner's placement group and `serve.run` wait forever instead of failing (issue 14,
failure 5). `preflight(config)` runs before anything is placed: it reads the alive nodes' total
resources from `ray.nodes()`, and `check_resources` places every request on them, first-fit over
the nodes in their listed order, learner ranks first (the biggest bundles), then Serve replicas,
then rollout actors. The first request that fits on no node raises `PreflightError`, naming the
resource, the config field that asks for it and both fixes: make the cluster advertise it (start
Ray with `--resources`, `--num-cpus`, `--num-gpus`) or stop asking for it in the config.

    from cluster.preflight import preflight
    preflight(config)  # after ray.init, before the policy server, the learner and the fleet start

What it does not promise: it counts the nodes' totals, not what other jobs hold right now, and a
pass means a placement exists, not that Ray's scheduler picks that one (first-fit may also reject
a packing a full search would find: it never accepts one that cannot exist). It sees alive nodes
only, so a cluster that adds nodes on demand (KubeRay autoscaling; the manifests in k8s/ do not
autoscale) fails it until they exist.

    .venv/bin/python -m pytest tests/cluster/test_preflight.py
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cluster.config import TrainConfig

# Ray keeps resource amounts to 1e-4; a tolerance well below that absorbs float sums (3 x 0.1).
TOLERANCE = 1e-9
START_FLAGS = {"CPU": "--num-cpus", "GPU": "--num-gpus", "memory": "--memory"}
# Where a KubeRay worker group's `ray start` gets each resource (KubeRay v1.7 pod.go: CPU, GPU and
# memory from the container's limits unless rayStartParams sets them).
KUBERAY_SOURCE = {
    "CPU": "the container's cpu limit",
    "GPU": "the container's nvidia.com/gpu limit",
    "memory": "the container's memory limit",
}


class PreflightError(ValueError):
    """The cluster cannot host a request of the run; the message names the resource, the field and the fixes."""


@dataclass(frozen=True, kw_only=True)
class Request:
    """`count` identical Ray resource requests of one role, and the config fields that set them."""

    role: str
    """What is placed, e.g. "learner rank"."""
    count: int
    count_field: str
    """The config field that sets `count`, e.g. "run.learner_ranks"."""
    resources: dict[str, float]
    """One request: resource -> amount (zero amounts left out, as Ray ignores them)."""
    fields: dict[str, str]
    """Resource -> the config field that asks for it."""

    @classmethod
    def of(cls, role: str, count: int, count_field: str, *, sources: dict[str, Mapping[str, float]]) -> Request:
        """The request whose resources come from `sources`: config field -> {resource: amount}."""
        resources = {name: amount for part in sources.values() for name, amount in part.items() if amount > 0}
        fields = {name: field for field, part in sources.items() for name in part}
        return cls(role=role, count=count, count_field=count_field, resources=resources, fields=fields)


def run_requests(config: TrainConfig) -> list[Request]:
    """Everything `config` places on the cluster, biggest roles first (the order of the first-fit)."""
    run, serving, rollout = config.run, config.serving, config.rollout
    # LearnerGroup reserves {CPU: 1} per rank for an empty learner_resources (plus one GPU on a
    # cluster with GPUs, which is then there to take).
    learner = {"run.learner_resources": run.learner_resources or {"CPU": 1.0}}
    replica = {
        "serving.num_cpus_per_replica": {"CPU": serving.num_cpus_per_replica},
        "serving.num_gpus_per_replica": {"GPU": serving.num_gpus_per_replica},
        "serving.resources_per_replica": serving.resources_per_replica,
    }
    actor = {
        "rollout.num_cpus_per_actor": {"CPU": rollout.num_cpus_per_actor},
        "rollout.resources_per_actor": rollout.resources_per_actor,
    }
    return [
        Request.of("learner rank", run.learner_ranks, "run.learner_ranks", sources=learner),
        Request.of("Serve replica", serving.num_replicas, "serving.num_replicas", sources=replica),
        Request.of("rollout actor", rollout.n_actors, "rollout.n_actors", sources=actor),
    ]


def check_resources(config: TrainConfig, cluster_resources: Sequence[Mapping[str, float]], *, copies: int = 1) -> None:
    """Raise PreflightError unless every request of `copies` runs of `config` fits on the nodes at once; pure.

    `cluster_resources` holds one mapping per node, resource -> total amount (the `Resources` of
    each alive node in `ray.nodes()`). Placement is first-fit over the nodes in that order.
    """
    if not cluster_resources:
        raise PreflightError("preflight: the Ray cluster has no alive node; start one (`ray start --head`)")
    requests = run_requests(config)
    free = [dict(node) for node in cluster_resources]
    for request in requests:
        for index in range(request.count * copies):
            node = next((n for n in free if fits(request.resources, n)), None)
            if node is None:
                raise PreflightError(unplaceable(request, index, requests, totals=cluster_resources, free=free))
            for name, amount in request.resources.items():
                node[name] -= amount


def preflight(config: TrainConfig, *, copies: int = 1) -> None:
    """Check the connected Ray cluster's alive nodes against `copies` runs of `config` at once.

    PreflightError if it cannot host them.
    """
    import ray

    check_resources(config, [node["Resources"] for node in ray.nodes() if node["Alive"]], copies=copies)


def fits(resources: Mapping[str, float], node: Mapping[str, float]) -> bool:
    """Whether `node` has every amount of `resources` free."""
    return all(node.get(name, 0.0) + TOLERANCE >= amount for name, amount in resources.items())


def unplaceable(
    request: Request,
    index: int,
    requests: list[Request],
    *,
    totals: Sequence[Mapping[str, float]],
    free: list[dict[str, float]],
) -> str:
    """The error message for the `index`-th of `request`, which fits on no node of `free`."""
    # Custom resources first: they are what a cluster not made for the config lacks (KubeRay groups).
    names = sorted(request.resources, key=lambda name: name in START_FLAGS)
    advertised = {name: sum(node.get(name, 0.0) for node in totals) for name in names}
    needed = {name: sum(r.count * r.resources.get(name, 0.0) for r in requests) for name in names}
    missing = [name for name in names if advertised[name] <= 0]
    short = [name for name in names if needed[name] > advertised[name] + TOLERANCE]
    if missing or short:
        name, *others = missing or short
        if missing:
            why = f"no alive node advertises the resource {name!r}"
        else:
            why = f"the run needs {needed[name]:g} {name!r} in all{by_role(name, requests)}"
            why += f", the alive nodes have {advertised[name]:g}"
        why += f" (the same holds for {', '.join(map(repr, others))})" if others else ""
        where = f"the run needs {needed[name]:g} in all"
        flag = start_flag(name, needed[name])
    else:  # enough of everything in all, but not together on one node
        name, lack = crowded(request.resources, names, free)
        why = (
            f"no alive node has {format_amounts(request.resources)} free at once ({lack}; first-fit placing "
            "learner ranks, then Serve replicas, then rollout actors)"
        )
        where = f"at least {request.resources[name]:g} on each"
        flag = start_flag(name, request.resources[name])
    field = request.fields[name]
    return (
        f"preflight: the Ray cluster cannot host {request.role} {index + 1} of {request.count} "
        f"({request.count_field}={request.count}), which requests {format_amounts(request.resources)}: {why}; "
        f"{field} asks for {request.resources[name]:g} {name!r} per {request.role}. Fix one of:\n"
        f"  - start Ray with {flag} on the nodes that should host the {request.role}s ({where}; on KubeRay: "
        f"{KUBERAY_SOURCE.get(name, 'rayStartParams.resources')} of that worker group), or\n"
        f"  - {config_fix(name, field, request, advertised=name not in missing)}"
    )


def crowded(resources: Mapping[str, float], names: list[str], free: list[dict[str, float]]) -> tuple[str, str]:
    """(resource, why): what the nodes holding enough of `names[0]` lack for `resources`."""
    anchor = names[0]
    hosts = [node for node in free if node.get(anchor, 0.0) + TOLERANCE >= resources[anchor]]
    if not hosts:
        most = max((node.get(anchor, 0.0) for node in free), default=0.0)
        return anchor, f"a node has at most {most:g} {anchor!r} free"
    for name in names[1:]:
        most = max(node.get(name, 0.0) for node in hosts)
        if most + TOLERANCE < resources[name]:
            return name, f"the nodes with {anchor!r} free have at most {most:g} {name!r} free"
    return anchor, f"each resource is free on some node with {anchor!r}, never all on one"


def by_role(name: str, requests: list[Request]) -> str:
    """Who needs resource `name`, e.g. " (learner ranks 16, rollout actors 8)", when more than one role does."""
    uses = [f"{r.role}s {r.count * r.resources[name]:g}" for r in requests if name in r.resources]
    return f" ({', '.join(uses)})" if len(uses) > 1 else ""


def start_flag(name: str, amount: float) -> str:
    """The `ray start` option that makes a node advertise `amount` of resource `name`."""
    if name in START_FLAGS:
        return f"`{START_FLAGS[name]}={amount:g}`"
    return f"`--resources '{json.dumps({name: int(amount) if amount == int(amount) else amount})}'`"


def config_fix(name: str, field: str, request: Request, *, advertised: bool) -> str:
    """How to ask the cluster for less of resource `name` in the config (fewer of them too, if it has some)."""
    fewer = f", or lower {request.count_field}" if advertised else ""
    if "resources" in field:  # a dict of resources: drop the key
        rest = {k: v for k, v in request.resources.items() if k != name and request.fields[k] == field}
        return f"drop {name!r} from {field} in the config (e.g. '{field}={format_amounts(rest)}'){fewer}"
    return f"lower {field} in the config (0 reserves no {name}){fewer}"


def format_amounts(resources: Mapping[str, float]) -> str:
    """{CPU: 4, GPU: 1, learner: 1}: the way a config override writes them."""
    return "{" + ", ".join(f"{name}: {amount:g}" for name, amount in resources.items()) + "}"
