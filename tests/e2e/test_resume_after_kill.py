"""Kill a training run (SIGKILL to its process group) after its first RL checkpoint, then
`--resume`: the run continues from the checkpoint's iteration and policy version and finishes.
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

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OVERRIDES = ["run.sft_steps=0", "run.checkpoint_every=1", "run.num_cpus=2", "eval.episodes_per_variant=1"]


def _train(run_dir: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cluster.train", "--config", TINY, "--run-dir", str(run_dir), *extra, *OVERRIDES]
    # Own session: the kill below reaches the driver and the Ray processes it started, nothing else.
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_for_checkpoint(run_dir: Path, proc: subprocess.Popen, *, timeout_s: float) -> dict:
    latest = run_dir / "checkpoints" / "latest"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if latest.is_file():
            state = latest.parent / latest.read_text().strip() / "trainer_state.json"
            if state.is_file():
                return json.loads(state.read_text())
        if proc.poll() is not None:
            pytest.fail(f"training exited before its first checkpoint:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.2)
    pytest.fail("no checkpoint within the timeout")


def test_killed_run_resumes_from_its_checkpoint(tmp_path):
    # Far more iterations than it gets to do: the kill always lands mid-run.
    first = _train(tmp_path, "run.iterations=200")
    try:
        saved = _wait_for_checkpoint(tmp_path, first, timeout_s=240)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
    # The kill may land before or after later checkpoints: read what resume will load.
    latest = tmp_path / "checkpoints" / "latest"
    saved = json.loads((latest.parent / latest.read_text().strip() / "trainer_state.json").read_text())
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
