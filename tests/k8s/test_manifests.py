"""The KubeRay manifests and the image recipe in k8s/ are valid and agree with the code they run.

Offline checks, on k8s/ (GPU) and on the CPU overlay k8s/overlays/cpu rendered here in Python
(and compared with kustomize's own rendering where kubectl is installed): built-in kinds and every
pod template inside the Ray kinds pass `kubernetes-validate`; serveConfigV2 passes Ray Serve's
schema and its import path builds; the RayJob's entry point, flags and config load and fit the
cluster; rayVersion and the Dockerfile's Ray equal the installed Ray; retries resume from the
volume; ../shared/tools/validate-k8s (KubeRay CRDs and operator rules) passes.

    .venv/bin/python -m pytest tests/k8s -q
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import kubernetes_validate
import pytest
import ray
import yaml
from ray.serve.schema import ServeDeploySchema

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OVERLAY = K8S / "overlays" / "cpu"
VALIDATE_K8S = REPO.parent / "shared" / "tools" / "validate-k8s"
K8S_VERSION = "1.33.0"  # validate-k8s's default
RAY_KINDS = ("RayCluster", "RayJob", "RayService")
MANIFESTS = ("checkpoints-pvc.yaml", "raycluster.yaml", "rayjob-train.yaml", "rayservice-policy.yaml")
GPU = "nvidia.com/gpu"
SERVED = "policy"  # the RayService serves <RayJob --run-dir>/policy, the run's exported policy
OVERLAY_FEATURES = {"apiVersion", "kind", "resources", "images", "patches", "replacements"}


def load_docs(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = {doc["kind"]: doc for doc in docs}
    assert len(kinds) == len(docs), "one object per kind expected"
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


@pytest.fixture(scope="module")
def base() -> dict[str, dict[str, Any]]:
    return by_kind([doc for name in MANIFESTS for doc in load_docs((K8S / name).read_text())])


@pytest.fixture(scope="module")
def cpu() -> dict[str, dict[str, Any]]:
    return by_kind(render_overlay(OVERLAY))


@pytest.fixture(params=["base", "cpu"])
def manifests(request) -> dict[str, dict[str, Any]]:
    """k8s/ (GPU) and the rendered CPU overlay, in turn."""
    return request.getfixturevalue(request.param)


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
    pods = group["replicas"]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    cpus = float(group["rayStartParams"].get("num-cpus") or quantity(limits["cpu"], {"m": 1, "": 1000}) / 1000)
    return Capacity(pods * advertised(group).get(name, 0), pods * cpus, pods * int(limits.get(GPU, 0)))


def pvc_mounts(group: dict[str, Any], claim: str) -> list[str]:
    """Mount paths, in the group's first container, of volumes backed by PVC `claim`."""
    spec = group["template"]["spec"]
    names = {v["name"] for v in spec.get("volumes", []) if v.get("persistentVolumeClaim", {}).get("claimName") == claim}
    return [
        m["mountPath"].rstrip("/") + "/" for m in spec["containers"][0].get("volumeMounts", []) if m["name"] in names
    ]


def job_argv(manifests: dict[str, dict[str, Any]]) -> list[str]:
    return shlex.split(manifests["RayJob"]["spec"]["entrypoint"])


def serve_app(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (application,) = yaml.safe_load(manifests["RayService"]["spec"]["serveConfigV2"])["applications"]
    return application


def test_builtin_kinds_pass_kubernetes_validate(manifests):
    builtin = [doc for kind, doc in manifests.items() if kind not in RAY_KINDS]
    assert [doc["kind"] for doc in builtin] == ["PersistentVolumeClaim"]
    for doc in builtin:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("kind", RAY_KINDS)
def test_pod_templates_pass_kubernetes_validate(manifests, kind):
    for name, group in groups(manifests[kind]):
        template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": f"{kind.lower()}-{name}"},
            "template": group["template"],
        }
        try:
            kubernetes_validate.validate(template, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{kind} group {name}: {'.'.join(map(str, err.absolute_path))}: {err.message}")


def test_ray_version_matches_installed_ray(manifests):
    for kind in RAY_KINDS:
        assert cluster_spec(manifests[kind])["rayVersion"] == ray.__version__, kind


def test_dockerfile_builds_on_the_installed_ray_and_copies_what_exists():
    dockerfile = (K8S / "Dockerfile").read_text()
    assert re.search(rf"^ARG RAY_VERSION={re.escape(ray.__version__)}$", dockerfile, re.M)
    assert re.search(r"^FROM rayproject/ray:\$\{RAY_VERSION\}-py311-\$\{CUDA\}$", dockerfile, re.M)
    assert re.search(r'pip install --no-cache-dir "torch==\$\{TORCH_VERSION\}"', dockerfile)
    assert "pip install --no-cache-dir ." in dockerfile
    sources = [src for line in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", dockerfile, re.M) for src in line.split()]
    assert {"pyproject.toml", "envs/", "learner/", "serving/", "cluster/"} <= set(sources)
    for src in sources:
        assert (REPO / src).exists(), f"the Dockerfile copies {src}, which the repository lacks"


def test_gpu_groups_advertise_their_resource_with_whole_gpus(base):
    assert [name for name, _ in groups(base["RayCluster"])] == ["head", "rollout", "learner", "policy"]
    for kind in RAY_KINDS:
        for name, group in groups(base[kind]):
            spec = group["template"]["spec"]
            for container in spec["containers"]:
                assert container["resources"]["requests"] == container["resources"]["limits"], f"{kind}/{name}"
            if name == "head":
                assert group["rayStartParams"]["num-cpus"] == "0", f"{kind}: the head runs no actor"
                continue
            assert set(advertised(group)) == {name}, f"{kind}/{name} must advertise `{name}` only"
            gpus = [c["resources"]["limits"].get(GPU) for c in spec["containers"]]
            assert gpus == (["1"] if name in ("learner", "policy") else [None]), f"{kind}/{name}: {gpus}"
            assert bool(spec.get("nodeSelector")) == bool(spec.get("tolerations")) == (name != "rollout")


def test_rayjob_runs_the_raycluster_spec(manifests):
    assert cluster_spec(manifests["RayJob"]) == manifests["RayCluster"]["spec"]


def test_rayjob_retries_resume_from_the_volume(manifests):
    job, claim = manifests["RayJob"]["spec"], manifests["PersistentVolumeClaim"]["metadata"]["name"]
    assert job["shutdownAfterJobFinishes"] is True and job["ttlSecondsAfterFinished"] > 0
    assert job["activeDeadlineSeconds"] > 0 and job["backoffLimit"] >= 1
    argv = job_argv(manifests)
    assert "--resume" in argv
    run_dir = argv[argv.index("--run-dir") + 1]
    for name, group in groups(manifests["RayJob"]):
        if name in ("head", "learner"):  # the driver and the ZeRO-3 ranks write checkpoints
            mounts = pvc_mounts(group, claim)
            assert any(run_dir.startswith(m) for m in mounts), f"--run-dir {run_dir} not on {claim} in {name}: {mounts}"


def test_rayjob_entry_point_loads_and_fits_its_cluster(manifests, monkeypatch):
    argv = job_argv(manifests)
    assert argv[:4] == ["python", "-m", "cluster.train", "--config"]
    train = importlib.import_module(argv[2])
    args = train.parse_args(argv[3:])  # every flag in the manifest is one the driver accepts
    monkeypatch.chdir(REPO)  # the image's WORKDIR holds the project; the config path is relative to it
    config = train.load_config(args.config, args.overrides)
    have = {name: capacity(name, group) for name, group in groups(manifests["RayJob"]) if name != "head"}
    ranks, serving, rollout = config.run.learner_ranks, config.serving, config.rollout
    # Every actor asks for one unit of its group's resource, so it can only land on that group.
    assert config.run.learner_resources.get("learner") == 1
    assert serving.resources_per_replica.get("policy") == 1
    assert rollout.resources_per_actor.get("rollout") == 1
    assert have["learner"].units >= ranks and have["learner"].cpus >= ranks
    assert have["learner"].gpus in (0, ranks), "one GPU per learner rank, or none"
    assert have["policy"].units >= serving.num_replicas
    assert have["policy"].cpus >= serving.num_replicas * serving.num_cpus_per_replica
    assert have["policy"].gpus >= serving.num_replicas * serving.num_gpus_per_replica
    assert have["rollout"].units >= rollout.n_actors
    assert have["rollout"].cpus >= rollout.n_actors * rollout.num_cpus_per_actor


def test_serve_config_passes_ray_serve_schema_and_serves_the_run(manifests):
    ServeDeploySchema.model_validate(yaml.safe_load(manifests["RayService"]["spec"]["serveConfigV2"]))
    application = serve_app(manifests)
    assert application["import_path"] == "serving.app:app"
    argv = job_argv(manifests)
    model = application["runtime_env"]["env_vars"]["SFTRL_MODEL"]
    assert model == f"{argv[argv.index('--run-dir') + 1]}/{SERVED}", "serve what the RayJob trains"
    have = dict(groups(manifests["RayService"]))
    assert set(have) == {"head", "policy"}
    mounts = pvc_mounts(have["policy"], manifests["PersistentVolumeClaim"]["metadata"]["name"])
    assert any(model.startswith(m) for m in mounts), f"{model} is not on the volume in the policy pods"
    (deployment,) = application["deployments"]
    options, offered = deployment["ray_actor_options"], capacity("policy", have["policy"])
    assert options["resources"] == {"policy": 1}
    replicas = deployment["num_replicas"]
    assert offered.units >= replicas and offered.cpus >= replicas * options["num_cpus"]
    assert offered.gpus == replicas * options.get("num_gpus", 0)


def test_cpu_serve_config_differs_only_in_gpus_and_run(base, cpu):
    gpu_app, cpu_app = copy.deepcopy(serve_app(base)), serve_app(cpu)
    del gpu_app["deployments"][0]["ray_actor_options"]["num_gpus"]
    gpu_app["runtime_env"]["env_vars"]["SFTRL_MODEL"] = cpu_app["runtime_env"]["env_vars"]["SFTRL_MODEL"]
    assert cpu_app == gpu_app


def test_serve_import_path_builds_the_configured_deployments(base):
    application = serve_app(base)
    module, _, attr = application["import_path"].partition(":")
    # A fresh process with the application's env vars, as Serve's build task has; build_app is the
    # step `serve deploy` runs on this config.
    script = (
        f"import json, {module}\nfrom ray.serve._private.build_app import build_app\n"
        f"built = build_app({module}.{attr}, name={application['name']!r})\n"
        "print(json.dumps({d.name: d.init_args[0].model for d in built.deployments if d.init_args}))"
    )
    env = {**os.environ, **application["runtime_env"]["env_vars"]}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    models = json.loads(out.stdout.strip().splitlines()[-1])
    assert {d["name"] for d in application["deployments"]} <= set(models), f"the app has {set(models)}"
    assert models["PolicyServer"] == env["SFTRL_MODEL"]


def run_validate_k8s(path: Path) -> None:
    if not VALIDATE_K8S.is_file():
        pytest.skip(f"{VALIDATE_K8S} not found (../shared/tools beside the repository)")
    out = subprocess.run(
        [sys.executable, str(VALIDATE_K8S), str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_validate_k8s_passes_on_k8s_dir():
    run_validate_k8s(K8S)


def test_validate_k8s_passes_on_rendered_cpu_overlay(cpu, tmp_path):
    rendered = tmp_path / "cpu-overlay.yaml"
    rendered.write_text(yaml.safe_dump_all(list(cpu.values())))
    run_validate_k8s(rendered)


def test_cpu_overlay_is_gpu_free_and_laptop_sized(cpu):
    assert GPU not in yaml.safe_dump_all(list(cpu.values()))
    assert cpu["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    cpu_m = memory_mi = 0
    for kind in RAY_KINDS:
        for name, group in groups(cpu[kind]):
            spec = group["template"]["spec"]
            assert "nodeSelector" not in spec and "tolerations" not in spec, f"{kind}/{name}"
            for container in spec["containers"]:
                assert container["image"].endswith("-cpu"), f"{kind}/{name}: {container['image']}"
                requests, pods = container["resources"]["requests"], group.get("replicas", 1)
                cpu_m += pods * quantity(requests["cpu"], {"m": 1, "": 1000})
                memory_mi += pods * quantity(requests["memory"], {"Mi": 1, "Gi": 1024})
    # The overlay's header promises 3 CPUs and 10 GiB of requests for everything together.
    assert (cpu_m, memory_mi) == (3000, 10 * 1024), f"requests {cpu_m}m CPU, {memory_mi}Mi memory"


def test_python_render_matches_kustomize(cpu):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (which carries kustomize) is not on PATH; the Python rendering stands alone")
    out = subprocess.run(
        [kubectl, "kustomize", "--load-restrictor=LoadRestrictionsNone", str(OVERLAY)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert by_kind(load_docs(out.stdout)) == cpu
