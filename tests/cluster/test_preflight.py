"""The resource preflight (cluster/preflight.py): a run the cluster cannot host fails fast, with the fix.

Unit tests place configs on hand-made node lists (the `Resources` of `ray.nodes()`); one
integration test shows, on a real local Ray with 2 CPUs, that a `{learner: 1}` bundle would wait
forever and that the preflight refuses it at once (no wall-clock assertion: the suite asserts none).
"""

import os
import subprocess
import sys

import pytest
from kuberay_nodes import KUBERAY

from cluster.config import CONFIG_DIR, load_config, validate_config
from cluster.preflight import PreflightError, check_resources, preflight

LAPTOP = [{"CPU": 2.0, "memory": 8e9, "object_store_memory": 2e9, "node:127.0.0.1": 1.0}]


def config(**sections):
    """A valid TrainConfig: GRPO groups of 2, small CPU requests, then `sections` merged in."""
    raw = {
        "run": {"learner_resources": {"CPU": 1}},
        "rollout": {"group_size": 2, "n_actors": 2, "num_cpus_per_actor": 0.25},
        "serving": {"num_cpus_per_replica": 0.5},
    }
    for section, fields in sections.items():
        raw[section] = {**raw.get(section, {}), **fields}
    return validate_config(raw)


def refusal(cfg, nodes, *, copies=1) -> str:
    with pytest.raises(PreflightError) as error:
        check_resources(cfg, nodes, copies=copies)
    return str(error.value)


def test_the_gpu_config_fits_the_kuberay_groups():
    check_resources(load_config(CONFIG_DIR / "gp_l_rl.yaml"), KUBERAY)


def test_a_small_config_fits_a_laptop():
    check_resources(config(), LAPTOP)


def test_copies_of_a_run_must_fit_together():
    one = config(run={"learner_resources": {"CPU": 1}}, serving={"num_cpus_per_replica": 0.5})
    check_resources(one, LAPTOP)  # 1 + 0.5 + 2 x 0.25 = 2 CPUs of 2
    # two copies: both learner ranks take the 2 CPUs, and the first Serve replica finds none
    assert "cannot host Serve replica 1 of 1" in refusal(one, LAPTOP, copies=2)


@pytest.mark.parametrize(
    ("section", "fields", "field", "role"),
    [
        ("run", {"learner_resources": {"CPU": 1, "learner": 1}}, "run.learner_resources", "learner rank"),
        ("serving", {"resources_per_replica": {"policy": 1}}, "serving.resources_per_replica", "Serve replica"),
        ("rollout", {"resources_per_actor": {"rollout": 1}}, "rollout.resources_per_actor", "rollout actor"),
    ],
)
def test_a_resource_no_node_advertises_is_named_with_its_field_and_both_fixes(section, fields, field, role):
    (resource,) = set(next(iter(fields.values()))) - {"CPU"}
    message = refusal(config(**{section: fields}), LAPTOP)
    assert f"cannot host {role} 1 of" in message
    assert f"no alive node advertises the resource {resource!r}" in message
    assert f"{field} asks for 1 {resource!r}" in message
    assert f"""start Ray with `--resources '{{"{resource}": """ in message
    assert f"drop {resource!r} from {field} in the config" in message


def test_too_few_units_in_all_say_how_many_the_run_needs():
    cfg = config(run={"learner_ranks": 4, "learner_resources": {"CPU": 1, "learner": 1}})
    message = refusal(cfg, [{"CPU": 8.0, "learner": 2.0}])
    assert "cannot host learner rank 3 of 4 (run.learner_ranks=4)" in message
    assert "the run needs 4 'learner' in all, the alive nodes have 2" in message
    assert """--resources '{"learner": 4}'""" in message
    assert "drop 'learner' from run.learner_resources in the config (e.g. 'run.learner_resources={CPU: 1}')" in message
    assert "or lower run.learner_ranks" in message


def test_a_gpu_per_replica_on_a_cpu_cluster_names_num_gpus_per_replica():
    message = refusal(config(serving={"num_gpus_per_replica": 1}), LAPTOP)
    assert "no alive node advertises the resource 'GPU'" in message
    assert "serving.num_gpus_per_replica asks for 1 'GPU' per Serve replica" in message
    assert "`--num-gpus=1`" in message and "nvidia.com/gpu limit" in message
    assert "lower serving.num_gpus_per_replica in the config (0 reserves no GPU)" in message


def test_cpus_shared_by_roles_are_counted_over_all_of_them():
    cfg = config(rollout={"n_actors": 8, "num_cpus_per_actor": 1})
    message = refusal(cfg, LAPTOP)
    assert "cannot host rollout actor 1 of 8" in message  # 1 + 0.5 CPUs went to the rank and the replica
    assert "the run needs 9.5 'CPU' in all (learner ranks 1, Serve replicas 0.5, rollout actors 8)" in message
    assert "`--num-cpus=9.5`" in message and "lower rollout.num_cpus_per_actor" in message


def test_a_bundle_must_fit_on_one_node_not_over_several():
    cfg = config(run={"learner_resources": {"CPU": 4, "learner": 1}})
    nodes = [{"CPU": 2.0, "learner": 8.0}, {"CPU": 30.0}]  # enough CPUs in all, not beside `learner`
    message = refusal(cfg, nodes)
    assert "no alive node has {CPU: 4, learner: 1} free at once" in message
    assert "the nodes with 'learner' free have at most 2 'CPU' free" in message
    assert "`--num-cpus=4`" in message and "at least 4 on each" in message


def test_placed_requests_use_up_their_node():
    cfg = config(run={"learner_ranks": 2, "learner_resources": {"CPU": 2, "GPU": 1, "learner": 1}})
    with pytest.raises(PreflightError, match="cannot host learner rank 2 of 2"):
        check_resources(cfg, [{"CPU": 3.0, "GPU": 2.0, "learner": 2.0}, {"CPU": 8.0}])
    check_resources(cfg, [{"CPU": 3.0, "GPU": 1.0, "learner": 1.0}, {"CPU": 8.0, "GPU": 1.0, "learner": 1.0}])


def test_fractional_cpus_add_up_exactly():
    # 0.3 - 0.1 - 0.1 is 0.0999... in floats: the third 0.1 must still fit, as it does in Ray
    cfg = config(
        run={"learner_resources": {"CPU": 0.1}},
        rollout={"n_actors": 2, "num_cpus_per_actor": 0.1},
        serving={"num_cpus_per_replica": 0},
    )
    check_resources(cfg, [{"CPU": 0.3}])


def test_zero_amounts_request_nothing():
    cfg = config(run={"learner_resources": {"CPU": 0, "GPU": 0}}, serving={"num_cpus_per_replica": 0})
    check_resources(cfg, [{"CPU": 0.5}])


def test_no_alive_node_is_refused():
    with pytest.raises(PreflightError, match="no alive node"):
        check_resources(config(), [])


def test_the_error_is_a_value_error():
    assert issubclass(PreflightError, ValueError)


@pytest.mark.integration
def test_on_real_ray_a_learner_bundle_would_hang_and_the_preflight_refuses_it_fast():
    ray = pytest.importorskip("ray")
    from ray.util.placement_group import placement_group, remove_placement_group

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        cfg = config(run={"learner_resources": {"CPU": 1, "learner": 1}})
        bundle = placement_group([cfg.run.learner_resources], strategy="PACK")  # what LearnerGroup reserves
        with pytest.raises(ray.exceptions.GetTimeoutError):
            ray.get(bundle.ready(), timeout=3)  # no error, only waiting: the hang of issue 14
        remove_placement_group(bundle)
        with pytest.raises(PreflightError) as error:
            preflight(cfg)  # no waiting: it reads the nodes once
        message = str(error.value)
        assert "no alive node advertises the resource 'learner'" in message
        assert "run.learner_resources" in message and """--resources '{"learner": 1}'""" in message
        assert "drop 'learner' from run.learner_resources" in message
        preflight(config())  # what the 2-CPU node can host passes
    finally:
        ray.shutdown()


@pytest.mark.integration
def test_the_training_entry_point_exits_2_with_the_fix_before_placing_anything(tmp_path):
    """`python -m cluster.train` on a cluster without the `learner` resource: exit 2 and the fix, fast."""
    command = [sys.executable, "-m", "cluster.train", "--config", str(CONFIG_DIR / "tiny.yaml")]
    command += ["--run-dir", str(tmp_path / "run"), "run.learner_resources={CPU: 1, learner: 1}"]
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}  # a local cluster
    # The timeout only turns a hang (the failure this guards against) into a failed test.
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "run.learner_resources" in result.stderr and "--resources" in result.stderr
