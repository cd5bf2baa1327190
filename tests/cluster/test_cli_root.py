"""The installed `sftrl` console script lists every command group and reports the installed version."""

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

SFTRL = Path(sys.executable).with_name("sftrl")
COMMANDS = ("data", "play", "serve", "train", "eval", "plot", "version")


def _sftrl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SFTRL), *args], capture_output=True, text=True, timeout=60)


def test_help_lists_every_command_group():
    result = _sftrl("--help")
    assert result.returncode == 0, result.stderr
    # A command's row starts with its name, then two or more spaces before its summary.
    listed = set(re.findall(r"^\W*([a-z]+) {2,}\S", result.stdout, flags=re.MULTILINE))
    assert set(COMMANDS) <= listed, f"missing from `sftrl --help`: {sorted(set(COMMANDS) - listed)}"


def test_version_prints_the_installed_version():
    result = _sftrl("version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"sftrl {version('sftrl')}"
