"""The `sftrl` console script is installed and answers --help."""

import subprocess
import sys
from pathlib import Path


def test_sftrl_help_lists_the_tool():
    sftrl = Path(sys.executable).with_name("sftrl")
    result = subprocess.run([str(sftrl), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "sftrl" in result.stdout
