"""Nothing in envs/ calls eval, exec or compile: model text is data, never code."""

import ast
from pathlib import Path

import envs

FORBIDDEN_NAMES = {"eval", "exec", "compile", "__import__"}  # builtins called by name
FORBIDDEN_ATTRIBUTES = {"eval", "exec"}  # e.g. builtins.eval (re.compile is fine)


def forbidden_calls(source: str) -> list[str]:
    """Names of forbidden calls in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in FORBIDDEN_NAMES:
            found.append(func.id)
        elif isinstance(func, ast.Attribute) and func.attr in FORBIDDEN_ATTRIBUTES:
            found.append(func.attr)
    return found


def test_the_scanner_finds_eval_and_exec():
    source = "x = eval('1+2')\nimport builtins\nbuiltins.exec('y=1')\ncompile('1', 'f', 'eval')\nre.compile('a')"
    assert sorted(forbidden_calls(source)) == ["compile", "eval", "exec"]


def test_no_python_file_in_envs_calls_eval_or_exec():
    files = sorted(Path(envs.__file__).parent.rglob("*.py"))
    assert len(files) >= 8
    offenders = {str(path): calls for path in files if (calls := forbidden_calls(path.read_text()))}
    assert offenders == {}
