"""Shared helpers of the end-to-end tests: free ports, tiny-config overrides."""

import socket

from cluster.config import CONFIG_DIR

TINY = str(CONFIG_DIR / "tiny.yaml")


def free_port() -> int:
    """A TCP port nobody listens on right now (for Ray/Serve processes the test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
