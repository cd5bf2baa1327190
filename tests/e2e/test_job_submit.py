"""`ray job submit` against a Ray head this test starts runs `python -m cluster.train` to the end.

Ray 2.60 turns token authentication on by default. The head and the job client both take the
token from `RAY_AUTH_TOKEN` (Ray's AuthenticationTokenLoader reads RAY_AUTH_TOKEN, then
RAY_AUTH_TOKEN_PATH, then ~/.ray/auth_token); giving both a fresh random token keeps the shared
~/.ray/auth_token untouched. The head runs in its own process group with its own temp dir and
ports, and only that group is stopped afterwards (never a global `ray stop`).
"""

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from e2e_helpers import TINY, free_port

from cluster.metrics import read_metrics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture(scope="module")
def ray_head():
    temp_dir = tempfile.mkdtemp(prefix="sftrl-rj-", dir="/tmp")  # short: Ray's socket paths are bounded
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    dashboard_port = free_port()
    ports = {
        "--port": free_port(),
        "--dashboard-port": dashboard_port,
        "--ray-client-server-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--metrics-export-port": free_port(),
    }
    cmd = [
        RAY,
        "start",
        "--head",
        "--num-cpus",
        "2",
        "--temp-dir",
        temp_dir,
        "--include-dashboard",
        "true",
        "--dashboard-host",
        "127.0.0.1",
        *[str(x) for kv in ports.items() for x in kv],
    ]
    # start_new_session: every process of this head (GCS, raylet, dashboard, workers) shares the
    # `ray start` process's group, so stopping the group stops this head and nothing else.
    start = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    output, _ = start.communicate(timeout=180)
    try:
        assert start.returncode == 0, output[-3000:]
        yield f"http://127.0.0.1:{dashboard_port}", env
    finally:
        _stop_group(start.pid)


def _stop_group(pgid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        time.sleep(3)


def test_job_submit_runs_training_to_the_end(ray_head, tmp_path):
    address, env = ray_head
    run_dir = tmp_path / "run"
    entrypoint = [
        sys.executable,
        "-m",
        "cluster.train",
        "--config",
        TINY,
        "--run-dir",
        str(run_dir),
        "run.sft_steps=1",
        "run.iterations=1",
        "eval.episodes_per_variant=1",
    ]
    job = subprocess.run(
        [RAY, "job", "submit", "--address", address, "--", *entrypoint],
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    output = job.stdout + job.stderr
    assert job.returncode == 0, output[-4000:]
    assert "succeeded" in output.lower(), output[-4000:]
    assert "done: 1 SFT steps, 1 RL iterations, policy version 2" in output, output[-4000:]
    phases = [r["phase"] for r in read_metrics(run_dir)]
    assert phases == ["sft", "rl", "eval"]


def test_job_client_without_the_token_is_refused(ray_head):
    address, env = ray_head
    wrong = {**env, "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    job = subprocess.run(
        [RAY, "job", "list", "--address", address], env=wrong, capture_output=True, text=True, timeout=120
    )
    assert job.returncode != 0
    assert "Authentication" in job.stdout + job.stderr or "403" in job.stdout + job.stderr
