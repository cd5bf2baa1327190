"""Shared by the tests of k8s/: load the manifests, render the CPU overlay, read pods as KubeRay builds them.

`render_overlay` is a kustomize build in Python for the features k8s/overlays/cpu uses (test_manifests.py
compares it with kustomize's own where kubectl is installed); the pod readers (`pods`, `shm_bytes`)
follow KubeRay v1.7's pod.go, so the tests judge what the operator will actually start.
"""

from __future__ import annotations

import copy
import json
import math
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OVERLAY = K8S / "overlays" / "cpu"
RAY_KINDS = ("RayCluster", "RayJob", "RayService")
MANIFESTS = (
    "checkpoints-pvc.yaml",
    "raycluster.yaml",
    "rayjob-train.yaml",
    "rayjob-study.yaml",
    "rayservice-policy.yaml",
)
TRAIN_JOB = "sftrl-train"
"""The RayJob that `by_kind` files under its kind: the run the RayService serves and the CPU overlay adapts."""
JOBS = {"train": "RayJob", "study": "RayJob/sftrl-study"}
"""Each RayJob's key in `by_kind`'s mapping (the CPU overlay has the training job only)."""
GPU = "nvidia.com/gpu"
SHM = "/dev/shm"
BYTES = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
OVERLAY_FEATURES = {"apiVersion", "kind", "resources", "images", "patches", "replacements"}


def load_docs(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Kind -> its one object; a RayJob other than TRAIN_JOB goes by "RayJob/<name>" (JOBS)."""
    kinds = {}
    for doc in docs:
        key = doc["kind"]
        if key == "RayJob" and doc["metadata"]["name"] != TRAIN_JOB:
            key = f"RayJob/{doc['metadata']['name']}"
        assert key not in kinds, f"one object per kind expected, {key} twice"
        kinds[key] = doc
    return kinds


def resolve(doc: Any, pointer: str) -> tuple[Any, str | int]:
    """(parent, key) of the node at a JSON pointer (RFC 6901); KeyError/IndexError if absent."""
    *parents, last = [t.replace("~1", "/").replace("~0", "~") for t in pointer.lstrip("/").split("/")]
    for token in parents:
        doc = doc[int(token)] if isinstance(doc, list) else doc[token]
    key = int(last) if isinstance(doc, list) else last
    doc[key]  # noqa: B018 -- raises when the path does not exist
    return doc, key


def apply_json6902(doc: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    """The `test`, `replace` and `remove` ops of a JSON patch (all the overlay uses), in place."""
    for op in ops:
        parent, key = resolve(doc, op["path"])
        if op["op"] == "test":
            assert parent[key] == op["value"], f"patch test failed: {op['path']} is {parent[key]!r}"
        elif op["op"] == "replace":
            parent[key] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del parent[key]
        else:
            raise AssertionError(f"op {op['op']!r} unsupported here: extend apply_json6902 or use another op")


def render_overlay(directory: Path) -> list[dict[str, Any]]:
    """Kustomize build of `directory`, for the features the CPU overlay uses (fails on others)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert set(kustomization) <= OVERLAY_FEATURES, f"extend render_overlay for {set(kustomization) - OVERLAY_FEATURES}"
    docs = [doc for path in kustomization["resources"] for doc in load_docs((directory / path).read_text())]
    named = {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}
    for patch in kustomization.get("patches", []):
        apply_json6902(named[(patch["target"]["kind"], patch["target"]["name"])], yaml.safe_load(patch["patch"]))
    for image in kustomization.get("images", []):
        for doc in docs:
            for container in containers(doc):
                if container["image"].split(":")[0] == image["name"]:
                    container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    for replacement in kustomization.get("replacements", []):
        source = replacement["source"]
        parent, key = resolve(named[(source["kind"], source["name"])], "/" + source["fieldPath"].replace(".", "/"))
        for target in replacement["targets"]:
            for field in target["fieldPaths"]:
                into, at = resolve(
                    named[(target["select"]["kind"], target["select"]["name"])], "/" + field.replace(".", "/")
                )
                into[at] = copy.deepcopy(parent[key])
    return docs


def cluster_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]
    return {"RayCluster": spec, "RayJob": spec.get("rayClusterSpec"), "RayService": spec.get("rayClusterConfig")}[
        doc["kind"]
    ]


def groups(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """("head", head group), then (groupName, group) of every worker group."""
    spec = cluster_spec(doc)
    yield "head", spec["headGroupSpec"]
    for group in spec.get("workerGroupSpecs", []):
        yield group["groupName"], group


def containers(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if doc["kind"] in RAY_KINDS:
        for _, group in groups(doc):
            yield from group["template"]["spec"]["containers"]


def advertised(group: dict[str, Any]) -> dict[str, float]:
    r"""Custom resources of `rayStartParams.resources`, written shell-quoted: '"{\\"learner\\": 1}"'."""
    text = group.get("rayStartParams", {}).get("resources")
    return json.loads(shlex.split(text)[0]) if text else {}


def quantity(text: str, units: dict[str, int]) -> int:
    """A Kubernetes quantity in the smallest of `units` ('250m' -> 250 with {'m': 1, '': 1000})."""
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(text)).groups()
    return int(float(number) * units[unit])


class Capacity(NamedTuple):
    """What one worker group offers Ray: its own resource's units, CPUs and GPUs, over all pods."""

    units: float
    cpus: float
    gpus: int


def capacity(name: str, group: dict[str, Any]) -> Capacity:
    count = group["replicas"]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    cpus = float(group["rayStartParams"].get("num-cpus") or quantity(limits["cpu"], {"m": 1, "": 1000}) / 1000)
    return Capacity(count * advertised(group).get(name, 0), count * cpus, count * int(limits.get(GPU, 0)))


def pods(doc: dict[str, Any]) -> list[dict[str, float]]:
    """The Ray resources of every pod of a Ray kind's cluster, one dict per pod.

    As KubeRay v1.7 starts them (pod.go): num-cpus from rayStartParams, else the cpu limit rounded
    up; GPUs from the nvidia.com/gpu limit; the custom ones of rayStartParams.resources.
    """
    nodes = []
    for _, group in groups(doc):
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        cpus = group["rayStartParams"].get("num-cpus") or math.ceil(quantity(limits["cpu"], {"m": 1, "": 1000}) / 1000)
        node = {"CPU": float(cpus), "GPU": float(limits.get(GPU, 0)), **advertised(group)}
        nodes += [dict(node) for _ in range(group.get("replicas", 1))]
    return nodes


def pvc_volume_mounts(group: dict[str, Any], claim: str) -> list[dict[str, Any]]:
    """The volumeMounts, in the group's first container, of volumes backed by PVC `claim`.

    readOnly is true where the mount or the volume says so.
    """
    spec = group["template"]["spec"]
    claims = {v["name"]: v["persistentVolumeClaim"] for v in spec.get("volumes", []) if "persistentVolumeClaim" in v}
    return [
        {**m, "readOnly": bool(m.get("readOnly") or claims[m["name"]].get("readOnly"))}
        for m in spec["containers"][0].get("volumeMounts", [])
        if claims.get(m["name"], {}).get("claimName") == claim
    ]


def pvc_mounts(group: dict[str, Any], claim: str) -> list[str]:
    """Mount paths, in the group's first container, of volumes backed by PVC `claim`."""
    return [m["mountPath"].rstrip("/") + "/" for m in pvc_volume_mounts(group, claim)]


def env(group: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The env of the group's first container: variable name -> entry."""
    return {e["name"]: e for e in group["template"]["spec"]["containers"][0].get("env", [])}


def memory_limit(group: dict[str, Any]) -> int:
    return quantity(group["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"], BYTES)


def shm_bytes(group: dict[str, Any]) -> int | None:
    """Bytes of the Ray container's memory-backed /dev/shm in the pod KubeRay v1.7 builds; None if none.

    KubeRay's pod.go (BuildPod): a pod's own /dev/shm mount stays as it is (addEmptyDir skips a
    mounted path); without one, and without rayStartParams plasma-directory, KubeRay adds a
    memory-backed emptyDir sized to the container's memory limit, else its request
    (makeEmptyDirVolume, findMemoryReqOrLimit). None: no memory-backed /dev/shm at all, so Ray's
    object store would sit on disk.
    """
    spec = group["template"]["spec"]
    container = spec["containers"][0]
    own = [m for m in container.get("volumeMounts", []) if m["mountPath"].rstrip("/") == SHM]
    if own:
        (volume,) = [v for v in spec.get("volumes", []) if v["name"] == own[0]["name"]]
        empty_dir = volume.get("emptyDir") or {}
        if empty_dir.get("medium") != "Memory":
            return None
        return quantity(empty_dir["sizeLimit"], BYTES) if "sizeLimit" in empty_dir else memory_limit(group)
    if "plasma-directory" in group.get("rayStartParams", {}):
        return None
    memory = container["resources"].get("limits", {}).get("memory") or container["resources"]["requests"]["memory"]
    return quantity(memory, BYTES)


def job_argv(job: dict[str, Any]) -> list[str]:
    """A RayJob's entry point as argv."""
    return shlex.split(job["spec"]["entrypoint"])


def serve_app(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (application,) = yaml.safe_load(manifests["RayService"]["spec"]["serveConfigV2"])["applications"]
    return application
