"""Kill a training run after its first RL checkpoint, then `--resume` it.

The kill is SIGKILL to the run's process group; the resumed run continues from the checkpoint's
iteration and policy version and finishes.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e_helpers import TINY

from cluster.metrics import read_metrics
from cluster.trainer import CHECKPOINTS, STATE_FILE, newest_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OVERRIDES = ["run.sft_steps=0", "run.checkpoint_every=1", "run.num_cpus=2", "eval.episodes_per_variant=1"]


def _train(run_dir: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cluster.train", "--config", TINY, "--run-dir", str(run_dir), *extra, *OVERRIDES]
    # Own session: the kill below reaches the driver and the Ray processes it started, nothing else.
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_for_a_complete_checkpoint(run_dir: Path, proc: subprocess.Popen, *, timeout_s: float) -> None:
    """Wait until a checkpoint tag holds its trainer_state.json: complete, as `newest_checkpoint` defines it.

    Only looks: `newest_checkpoint` itself may repoint `latest`, which is the trainer's to write while it runs.
    """
    root = run_dir / CHECKPOINTS
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(root.glob(f"*/{STATE_FILE}")):
            return
        if proc.poll() is not None:
            pytest.fail(f"training exited before its first checkpoint:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"no complete checkpoint under {root} within {timeout_s:.0f} s")


def test_killed_run_resumes_from_its_checkpoint(tmp_path):
    # Far more iterations than it gets to do: the kill always lands mid-run.
    first = _train(tmp_path, "run.iterations=200")
    try:
        _wait_for_a_complete_checkpoint(tmp_path, first, timeout_s=240)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
    # The kill may land before, during or after a later save: read what resume will load (the tag
    # `latest` names, or the newest complete one if the kill cut that save short).
    checkpoint = newest_checkpoint(tmp_path)
    assert checkpoint is not None, f"no complete checkpoint under {tmp_path / CHECKPOINTS} after the kill"
    saved = json.loads((checkpoint / STATE_FILE).read_text())
    assert saved["iteration"] >= 1 and saved["policy_version"] == saved["iteration"]

    total = saved["iteration"] + 2  # resume may also extend a run: two more iterations
    second = _train(tmp_path, "--resume", f"run.iterations={total}")
    output, _ = second.communicate(timeout=300)
    assert second.returncode == 0, output[-3000:]
    assert f"{total} RL iterations, policy version {total}" in output
    assert f"RL iteration {saved['iteration']}, policy version {saved['policy_version']}" in output
    rl = [r for r in read_metrics(tmp_path) if r["phase"] == "rl"]
    # One record per iteration: what the killed run logged after its checkpoint was trimmed.
    assert [r["step"] for r in rl] == list(range(1, total + 1))
    assert [r["policy_version"] for r in rl] == list(range(1, total + 1))
    resumed = rl[saved["iteration"]]
    assert resumed["wall_time"] > max(r["wall_time"] for r in rl[: saved["iteration"]])
