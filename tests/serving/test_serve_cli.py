"""`sftrl serve`: starts Ray and Serve, prints a URL and a curl that works, stops cleanly on Ctrl-C."""

import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from cluster.cli import serve as serve_cli
from cluster.cli.main import app
from cluster.cli.serve import example_curl, serve
from serving.config import ServingConfig


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_is_registered_with_its_options():
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--model", "--checkpoint", "--engine", "--host", "--port", "--replicas", "--num-gpus"):
        assert option in result.output


def test_serve_defaults_are_the_serving_configs():
    defaults = {name: p.default for name, p in inspect.signature(serve).parameters.items()}
    config = ServingConfig()
    assert defaults == {
        "model": config.model,
        "checkpoint": config.checkpoint,
        "engine": config.engine,
        "host": config.host,
        "port": config.port,
        "replicas": config.num_replicas,
        "num_gpus": config.num_gpus_per_replica,
    }


class _FakeSession:
    """ClusterSession stand-in: starts no Ray."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    def started(self, name, part):
        return part


@pytest.mark.parametrize("argv, gpus", [([], ServingConfig().num_gpus_per_replica), (["--num-gpus", "1"], 1.0)])
def test_sftrl_serve_reserves_num_gpus_per_replica(monkeypatch, argv, gpus):
    configs = []

    def start(config, *, http):
        configs.append(config)
        raise KeyboardInterrupt  # as Ctrl-C right after the deployment: serve() stops cleanly

    monkeypatch.setattr(serve_cli, "ClusterSession", _FakeSession)
    monkeypatch.setattr(serve_cli.PolicyService, "start", start)
    result = CliRunner().invoke(app, ["serve", "--model", "tiny", *argv])
    assert result.exit_code == 0, result.output
    [config] = configs
    assert (config.model, config.num_gpus_per_replica) == ("tiny", gpus)


def test_sftrl_serve_refuses_a_negative_gpu_count():
    result = CliRunner().invoke(app, ["serve", "--num-gpus", "-1"])
    assert result.exit_code == 2 and "--num-gpus" in result.output


def test_example_curl_sends_the_key_only_when_set():
    assert "Authorization" in example_curl("http://h:1", with_key=True)
    assert "Authorization" not in example_curl("http://h:1", with_key=False)


@pytest.mark.integration
@pytest.mark.slow
def test_sftrl_serve_prints_a_working_curl_and_stops_on_ctrl_c():
    """With a key set, the printed curl carries it and /v1/policy refuses a caller without it.

    The transformers engine (quick to start); both engines run behind the same app in test_serving_app.
    """
    engine, key = "transformers", "cli-key-7"
    port = _free_port()
    sftrl = Path(sys.executable).with_name("sftrl")
    env = {k: v for k, v in os.environ.items() if k != "SFTRL_API_KEY"} | {"SFTRL_API_KEY": key}
    # Started with SIGINT ignored, as a background job of a non-interactive shell is: Ctrl-C must still stop it.
    process = subprocess.Popen(
        [str(sftrl), "serve", "--model", "tiny", "--engine", engine, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        lines = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not (lines and lines[-1].startswith("curl")):
            line = process.stdout.readline()
            assert line, f"sftrl serve exited early with {process.poll()}: {lines}"
            lines.append(line.strip())
        url = f"http://127.0.0.1:{port}"
        assert any(url in line for line in lines)
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        reply = subprocess.run(lines[-1], shell=True, capture_output=True, text=True, timeout=120, env=env)
        completion = json.loads(reply.stdout)
        assert completion["object"] == "chat.completion" and completion["usage"]["completion_tokens"] >= 1
        info = httpx.get(f"{url}/v1/policy", headers={"Authorization": f"Bearer {key}"}).json()
        assert info["engine"] == engine
        assert httpx.get(f"{url}/v1/policy").status_code == 401
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
    assert process.returncode == 0
