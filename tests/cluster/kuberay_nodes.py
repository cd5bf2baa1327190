"""The Ray nodes of k8s/raycluster.yaml's groups, as `ray.nodes()` lists their resources (for preflight tests)."""

HEAD = {"CPU": 0.0, "memory": 16e9, "object_store_memory": 4e9}
# k8s/raycluster.yaml: one 8-GPU learner pod, two 1-GPU policy pods, two rollout pods.
KUBERAY = [
    HEAD,
    {"CPU": 64.0, "GPU": 8.0, "learner": 8.0},
    {"CPU": 8.0, "GPU": 1.0, "policy": 1.0},
    {"CPU": 8.0, "GPU": 1.0, "policy": 1.0},
    {"CPU": 8.0, "rollout": 8.0},
    {"CPU": 8.0, "rollout": 8.0},
]
