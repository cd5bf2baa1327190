"""The KubeRay manifests and the image recipe in k8s/ are valid and agree with the code they run.

Offline checks, on k8s/ (GPU) and on the CPU overlay k8s/overlays/cpu rendered here in Python
(and compared with kustomize's own rendering where kubectl is installed): built-in kinds and every
pod template inside the Ray kinds pass `kubernetes-validate`; serveConfigV2 passes Ray Serve's
schema and its import path builds; each RayJob's (training, study) entry point, flags and configs
load and fit the cluster pod by pod (the driver's own preflight, on the pods' Ray resources), and
so does every shipped config (each run of a study file) on the GPU cluster; learners take whole
GPU nodes; rayVersion and the Dockerfile's Ray, torch, transformers and DeepSpeed equal the
installed ones, and it prebuilds DeepSpeed's Adam; each RayJob runs the RayCluster's spec (so the
checks of the training job's pods hold for the study job's), its retries resume from the volume,
and an attempt whose cluster never comes up fails;
../shared/tools/validate-k8s (KubeRay CRDs and operator rules) passes. What each pod holds (memory,
volume, GPUs, NCCL) is test_pod_resources.py's.

    .venv/bin/python -m pytest tests/k8s -q
"""

from __future__ import annotations

import copy
import importlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import ray
import yaml
from k8s_manifests import (
    GPU,
    JOBS,
    K8S,
    OVERLAY,
    RAY_KINDS,
    REPO,
    advertised,
    by_kind,
    capacity,
    cluster_spec,
    groups,
    job_argv,
    load_docs,
    pods,
    pvc_mounts,
    quantity,
    serve_app,
)
from ray.serve.schema import ServeDeploySchema

from cluster.config import CONFIG_DIR, TrainConfig, load_config
from cluster.preflight import check_resources
from cluster.study.config import load_study
from tests.cluster.study_runs import study_runs

VALIDATE_K8S = REPO.parent / "shared" / "tools" / "validate-k8s"
K8S_VERSION = "1.33.0"  # validate-k8s's default
SERVED = "policy"  # the RayService serves <RayJob --run-dir>/policy, the run's exported policy
# `python -m NAME` -> (the module it runs, the flag that makes a retry resume; None: it always resumes its
# --run-dir, as a study does: finished runs skipped, a killed one continued from its checkpoint)
ENTRY_POINTS = {"cluster.train": ("cluster.train", "--resume"), "cluster.study": ("cluster.study.__main__", None)}


def test_builtin_kinds_pass_kubernetes_validate(manifests):
    builtin = [doc for doc in manifests.values() if doc["kind"] not in RAY_KINDS]
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


@pytest.mark.parametrize("package", ["torch", "transformers", "deepspeed"])
def test_dockerfile_pins_the_tested_version_of(package):
    pinned = re.search(rf"^ARG {package.upper()}_VERSION=(\S+)$", (K8S / "Dockerfile").read_text(), re.M)
    tested = importlib.metadata.version(package).split("+")[0]  # 2.13.0+cpu: the image picks the CUDA build
    assert pinned and pinned.group(1) == tested, (
        f"the image pins {package} {pinned and pinned.group(1)}, tests ran {tested}"
    )


def test_dockerfile_prebuilds_the_deepspeed_adam_the_configs_use():
    # FusedAdam is what ZeRO-3 without offload steps with for `deepspeed_adamw`; built at start,
    # it costs every rank minutes (k8s/Dockerfile says why it is prebuilt instead).
    configs = [config for path in sorted(CONFIG_DIR.glob("*.yaml")) for config in shipped_runs(path).values()]
    if not any(config.learner.optimizer == "deepspeed_adamw" for config in configs):
        pytest.skip("no shipped config uses deepspeed_adamw: nothing for DeepSpeed to compile")
    dockerfile = (K8S / "Dockerfile").read_text()
    assert "DS_BUILD_FUSED_ADAM=1" in dockerfile and "--no-build-isolation" in dockerfile
    assert "ds_report" in dockerfile and "installed_ops['fused_adam']" in dockerfile


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
            units = advertised(group)[name]
            if name == "learner":  # one pod per GPU node, holding all its GPUs: one unit per GPU
                assert len(gpus) == 1 and int(gpus[0]) == units > 1, f"{kind}/{name}: {gpus} GPUs, {units} units"
            else:
                assert gpus == (["1"] if name == "policy" else [None]), f"{kind}/{name}: {gpus}"
            assert bool(spec.get("nodeSelector")) == bool(spec.get("tolerations")) == (name != "rollout")


def entry_point_runs(argv: list[str]) -> dict[str, TrainConfig]:
    """The config of every run a RayJob's entry point starts, loaded as that entry point loads it."""
    module_name, _ = ENTRY_POINTS[argv[2]]
    module = importlib.import_module(module_name)
    args = module.parse_args(argv[3:])  # every flag in the manifest is one the entry point accepts
    if argv[2] == "cluster.study":
        return study_runs(load_study(args.config, module.study_overrides(args)))
    return {"the run": module.load_config(args.config, args.overrides)}


def shipped_runs(path: Path) -> dict[str, TrainConfig]:
    """The runs of a shipped config: itself, or for a study file (study_*.yaml) each run of the study."""
    return study_runs(load_study(path)) if path.name.startswith("study_") else {"the run": load_config(path)}


def test_rayjob_runs_the_raycluster_spec(job_with_manifests):
    job, manifests = job_with_manifests
    assert cluster_spec(job) == manifests["RayCluster"]["spec"]


def test_rayjob_fails_an_attempt_whose_cluster_never_comes_up(job):
    spec = job["spec"]  # the CRD field: validate-k8s rejects unknown ones
    assert 0 < spec["preRunningDeadlineSeconds"] < spec["activeDeadlineSeconds"]


def test_rayjob_retries_resume_from_the_volume(job_with_manifests):
    job, manifests = job_with_manifests
    spec, claim = job["spec"], manifests["PersistentVolumeClaim"]["metadata"]["name"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    assert spec["activeDeadlineSeconds"] > 0 and spec["backoffLimit"] >= 1
    argv = job_argv(job)
    _, resume_flag = ENTRY_POINTS[argv[2]]
    assert resume_flag is None or resume_flag in argv, f"{argv[2]} resumes a retry only with {resume_flag}"
    run_dir = argv[argv.index("--run-dir") + 1]
    for name, group in groups(job):
        if name in ("head", "learner"):  # the driver and the ZeRO-3 ranks write checkpoints
            mounts = pvc_mounts(group, claim)
            assert any(run_dir.startswith(m) for m in mounts), f"--run-dir {run_dir} not on {claim} in {name}: {mounts}"


def test_rayjob_entry_point_loads_and_fits_its_cluster(job, monkeypatch):
    argv = job_argv(job)
    assert argv[:2] == ["python", "-m"] and argv[2] in ENTRY_POINTS and argv[3] == "--config"
    monkeypatch.chdir(REPO)  # the image's WORKDIR holds the project; the config path is relative to it
    learner_gpus = {pod["GPU"] for pod in pods(job) if "learner" in pod}
    for label, config in entry_point_runs(argv).items():
        # Every actor asks for one unit of its group's resource, so it can only land on that group.
        assert config.run.learner_resources.get("learner") == 1, label
        assert config.serving.resources_per_replica.get("policy") == 1, label
        assert config.rollout.resources_per_actor.get("rollout") == 1, label
        assert learner_gpus == {0} or config.run.learner_resources.get("GPU") == 1, f"{label}: one GPU per rank"
        check_resources(config, pods(job))  # the driver's preflight, pod by pod


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda path: path.name)
def test_every_shipped_config_fits_the_gpu_cluster(base, path):
    for config in shipped_runs(path).values():
        check_resources(config, pods(base["RayCluster"]))


def test_serve_config_passes_ray_serve_schema_and_serves_the_run(manifests):
    ServeDeploySchema.model_validate(yaml.safe_load(manifests["RayService"]["spec"]["serveConfigV2"]))
    application = serve_app(manifests)
    assert application["import_path"] == "serving.app:app"
    argv = job_argv(manifests[JOBS["train"]])
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
