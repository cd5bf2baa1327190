"""Seed ranges and registration: `import envs` registers ids without loading env modules."""

import subprocess
import sys

import gymnasium

import envs
from envs.seeds import EVAL_SEEDS, TRAIN_SEEDS


def test_seed_ranges_are_disjoint_and_non_empty():
    assert len(TRAIN_SEEDS) > 0 and len(EVAL_SEEDS) > 0
    assert TRAIN_SEEDS.stop <= EVAL_SEEDS.start or EVAL_SEEDS.stop <= TRAIN_SEEDS.start
    assert not set(range(TRAIN_SEEDS.stop - 10, TRAIN_SEEDS.stop)) & set(EVAL_SEEDS)


def test_import_envs_registers_general_points_lazily():
    code = (
        "import sys, gymnasium, envs\n"
        "assert 'sftrl/GeneralPoints-v0' in gymnasium.registry\n"
        "assert not any(m.startswith('envs.general_points') for m in sys.modules), sorted(sys.modules)\n"
        "assert 'PIL' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_registrations_declare_the_episode_bound():
    general_points, virl = gymnasium.spec("sftrl/GeneralPoints-v0"), gymnasium.spec("sftrl/VIRL-v0")
    assert general_points.max_episode_steps == envs.GENERAL_POINTS_MAX_EPISODE_STEPS
    assert virl.max_episode_steps == envs.VIRL_MAX_EPISODE_STEPS
    assert gymnasium.make("sftrl/GeneralPoints-v0").spec.max_episode_steps == envs.GENERAL_POINTS_MAX_EPISODE_STEPS
