"""What each Ray pod of k8s/ holds, as KubeRay v1.7 builds it: memory, volume, GPUs, network.

Every group's object store fits its memory-backed /dev/shm, which fits the container's memory
limit (so the store is never on disk); every pod has the volume with HF_HOME on it and HF_TOKEN
from one optional Secret; CPU pods hide the node's GPUs; the learners carry the NCCL settings for
multi-node runs. On k8s/ (GPU) and on the rendered CPU overlay.

    .venv/bin/python -m pytest tests/k8s -q
"""

from __future__ import annotations

from k8s_manifests import GPU, RAY_KINDS, SHM, env, groups, memory_limit, pvc_volume_mounts, shm_bytes

OBJECT_STORE_MIN = 75 * 2**20  # Ray refuses a smaller store (ray_constants.OBJECT_STORE_MINIMUM_MEMORY_BYTES)
CPU_GROUPS = ("head", "rollout")


def test_object_stores_sit_in_memory_backed_shm_within_the_memory_limit(manifests):
    for kind in RAY_KINDS:
        for name, group in groups(manifests[kind]):
            where = f"{kind}/{name}"
            params = group.get("rayStartParams", {})
            assert "object-store-memory" in params, f"{where}: size the object store (bytes) to fit /dev/shm"
            store, shm, limit = int(params["object-store-memory"]), shm_bytes(group), memory_limit(group)
            assert shm is not None, f"{where}: /dev/shm is not memory-backed, so the object store sits on disk"
            assert OBJECT_STORE_MIN <= store <= shm <= limit, f"{where}: store {store}, /dev/shm {shm}, limit {limit}"


def test_shm_rule_follows_kuberay():
    limits = {"requests": {"memory": "8Gi"}, "limits": {"memory": "16Gi"}}

    def group(*, mounts=(), volumes=(), params=None):
        container = {"name": "ray", "resources": limits, "volumeMounts": list(mounts)}
        return {
            "rayStartParams": params or {},
            "template": {"spec": {"containers": [container], "volumes": list(volumes)}},
        }

    assert shm_bytes(group()) == 16 * 2**30  # KubeRay's own, sized to the limit
    assert shm_bytes(group(params={"plasma-directory": "/tmp"})) is None  # KubeRay adds none
    own = {"mounts": [{"name": "dshm", "mountPath": SHM}]}
    in_memory = {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "4Gi"}}
    assert shm_bytes(group(**own, volumes=[in_memory])) == 4 * 2**30  # the pod's own, as it is
    assert shm_bytes(group(**own, volumes=[{"name": "dshm", "emptyDir": {}}])) is None  # on the node's disk


def test_every_pod_has_the_volume_with_hf_home_on_it_and_hf_token_from_a_secret(manifests):
    claim = manifests["PersistentVolumeClaim"]["metadata"]["name"]
    secrets = set()
    for kind in RAY_KINDS:
        for name, group in groups(manifests[kind]):
            if (kind, name) == ("RayService", "head"):
                continue  # Serve's head loads no model: it imports the app, which only reads SFTRL_MODEL
            where, variables = f"{kind}/{name}", env(group)
            writable = [m["mountPath"].rstrip("/") + "/" for m in pvc_volume_mounts(group, claim) if not m["readOnly"]]
            home = variables.get("HF_HOME", {}).get("value", "")
            assert any((home + "/").startswith(m) for m in writable), f"{where}: HF_HOME {home!r} not on {claim} (rw)"
            token = variables.get("HF_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef", {})
            assert token.get("optional") is True, f"{where}: HF_TOKEN from an optional Secret, got {token}"
            secrets.add((token["name"], token["key"], home))
    assert len(secrets) == 1, f"one Secret and one cache for all pods: {secrets}"


def test_cpu_pods_hide_the_gpus_of_their_node(manifests):
    for kind in RAY_KINDS:
        for name, group in groups(manifests[kind]):
            visible = env(group).get("NVIDIA_VISIBLE_DEVICES")
            if name in CPU_GROUPS:
                assert visible == {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"}, f"{kind}/{name}: {visible}"
            elif GPU in group["template"]["spec"]["containers"][0]["resources"]["limits"]:
                assert visible is None, f"{kind}/{name}: the device plugin picks the GPUs, got {visible}"


def test_learners_document_nccl_across_nodes(base):
    for kind in ("RayCluster", "RayJob"):
        learner = dict(groups(base[kind]))["learner"]
        assert {"NCCL_SOCKET_IFNAME", "NCCL_IB_HCA"} <= set(env(learner)), f"{kind}: {sorted(env(learner))}"
