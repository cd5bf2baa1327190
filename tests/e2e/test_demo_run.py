"""`python -m cluster.cli.demo` (what `make demo` runs), on the tiny config.

It trains, prints the id vs rule_ood table and the plots, serves the policy over HTTP with a
working curl example, and stops cleanly on Ctrl-C.
"""

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from e2e_helpers import TINY, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _read_until(proc: subprocess.Popen, marker: str, *, timeout_s: float) -> str:
    lines, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if marker in line:
            return "".join(lines)
    pytest.fail(f"no {marker!r} in the demo's output:\n{''.join(lines)[-4000:]}")


def test_demo_trains_reports_and_serves(tmp_path):
    port = free_port()
    cmd = [sys.executable, "-m", "cluster.cli.demo", "--config", TINY, "--run-dir", str(tmp_path)]
    cmd.append(f"serving.port={port}")
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "COLUMNS": "120", "SFTRL_API_KEY": ""},
    )
    try:
        output = _read_until(proc, "Serving until Ctrl-C", timeout_s=300)
        assert "in-distribution vs rule OOD" in output and "rule_ood" in output
        assert f"plot: {tmp_path / 'plots' / 'eval.png'}" in output
        assert f"curl -s http://127.0.0.1:{port}/v1/chat/completions" in output
        assert (tmp_path / "example_request.json").is_file()
        policy = httpx.get(f"http://127.0.0.1:{port}/v1/policy", timeout=30).json()
        assert policy["version"] == 3 and policy["model"] == "tiny"
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, rest[-3000:]
        assert "stopping" in rest
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
