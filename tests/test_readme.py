"""The README's shell commands still work, so the docs cannot rot.

Every command line of README.md's fenced ```bash blocks (continuation lines joined, comments dropped)
is checked by what it starts with:

- `sftrl CMD ...`: CMD is a command of the `sftrl` CLI and the line parses with that command's own
  parser, the one its --help documents (every flag exists, every value has its type). Names it
  uses exist: the environment, `--task`, `--model`, the `--config` file and its dotted overrides.
  The cheap ones run for real in a temporary directory: `sftrl data` (with `--n` cut to a few
  records), `sftrl play` (on empty input: the task is shown, then the input ends), `sftrl plot` (on a
  one-record metrics file), `sftrl version`.
- `python -m MODULE ...`: MODULE exists, every flag is one its --help lists, and the `--config`
  file and overrides load.
- `ray job submit ... -- ENTRYPOINT`: the entrypoint is checked as above; the submission is not.
- `serve run IMPORT_PATH key=value ...`: the import path resolves and builds the application with
  those arguments (nothing starts).
- `make TARGET`, here and anywhere in the README's inline code: TARGET is a Makefile target.

Skipped, because they need a cluster, a registry or someone else's tool: kubectl, docker, helm,
curl, tensorboard. Names and flags are checked, never default values.
"""

import functools
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

from cluster.cli.envs import ENVS
from cluster.cli.main import app
from cluster.config import TASKS, load_config
from cluster.metrics import MetricsLogger

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SKIPPED = {"kubectl", "docker", "helm", "curl", "tensorboard"}
RUN_FOR_REAL = {"data", "play", "plot", "version"}
FEW_RECORDS = "3"  # what `sftrl data --n` becomes: the command runs, the export stays small
OVERRIDE = re.compile(r"^[a-z_]+(\.[a-z_]+)+=")


@dataclass(frozen=True)
class Command:
    """One README command line, split as the shell would."""

    argv: tuple[str, ...]

    def __str__(self) -> str:
        return shlex.join(self.argv)

    def option(self, flag: str) -> str | None:
        """The value given to `flag`, or None."""
        argv = list(self.argv)
        return argv[argv.index(flag) + 1] if flag in argv else None

    @property
    def overrides(self) -> list[str]:
        return [arg for arg in self.argv if OVERRIDE.match(arg)]


def bash_commands(markdown: str) -> list[Command]:
    """Every command line of the fenced ```bash blocks; a `ray job submit` line yields its entrypoint too."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", markdown, flags=re.MULTILINE | re.DOTALL):
        for line in re.sub(r"\\\n", " ", block).splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                commands.append(Command(tuple(argv)))
    entrypoints = [
        Command(c.argv[c.argv.index("--") + 1 :]) for c in commands if c.argv[:3] == ("ray", "job", "submit")
    ]
    return commands + entrypoints


COMMANDS = bash_commands(README)
SFTRL = [c for c in COMMANDS if c.argv[0] == "sftrl"]
MODULES = [c for c in COMMANDS if c.argv[:2] == ("python", "-m")]
SERVE_RUN = [c for c in COMMANDS if c.argv[:2] == ("serve", "run")]
PYTESTS = [c for c in COMMANDS if "pytest" in c.argv and "-m" in c.argv[: c.argv.index("pytest")]]
CHECKED = {*SFTRL, *MODULES, *SERVE_RUN, *PYTESTS} | {
    c for c in COMMANDS if c.argv[0] == "make" or c.argv[:2] == ("ray", "job")
}
CLI = typer.main.get_command(app)
runner = CliRunner()


def _ids(commands: list[Command]) -> list[str]:
    return [str(c) for c in commands]


def test_every_readme_command_is_checked_or_skipped_on_purpose():
    unclaimed = [str(c) for c in COMMANDS if c not in CHECKED and c.argv[0] not in SKIPPED]
    assert not unclaimed, f"README commands no test checks (add a check or a SKIPPED entry): {unclaimed}"
    assert len(SFTRL) >= 10 and MODULES and SERVE_RUN, "the README's bash blocks were not found"


def _check_names(command: Command) -> None:
    """The names a line uses exist: environment, task, model, config file and overrides."""
    name = command.argv[1]
    if name in ("data", "play"):
        assert command.argv[2] in ENVS, f"{command}: no environment {command.argv[2]!r}; the CLI has {sorted(ENVS)}"
    if command.option("--task") is not None:
        assert command.option("--task") in TASKS, f"{command}: no task {command.option('--task')!r}"
    if name == "serve" and command.option("--model") is not None:
        from learner.models import BUILTINS

        assert command.option("--model") in BUILTINS, f"{command}: no built-in model {command.option('--model')!r}"
    if command.option("--config") is not None:
        _load_config(command, command.argv[2:])  # ConfigError names the bad key


@pytest.mark.parametrize("command", SFTRL, ids=_ids(SFTRL))
def test_sftrl_line_parses_with_its_command(command):
    name = command.argv[1]
    assert name in CLI.commands, f"{command}: `sftrl {name}` is no command; the CLI has {sorted(CLI.commands)}"
    try:
        CLI.commands[name].make_context(f"sftrl {name}", list(command.argv[2:]))
    except click.ClickException as error:
        pytest.fail(f"{command}: {error.format_message()}")
    _check_names(command)


def _runnable(command: Command) -> list[str]:
    """The line's arguments, with an export cut to a few records."""
    args = list(command.argv[1:])
    if args[0] == "data" and "--n" in args:
        args[args.index("--n") + 1] = FEW_RECORDS
    return args


CHEAP = [c for c in SFTRL if c.argv[1] in RUN_FOR_REAL]


@pytest.mark.parametrize("command", CHEAP, ids=_ids(CHEAP))
def test_cheap_sftrl_line_runs(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths in the line land here
    if command.argv[1] == "plot":
        logger = MetricsLogger(Path(command.argv[2]))
        logger.log({"rollout/reward_mean": 1.0}, step=1, phase="rl", policy_version=1, sft_step=0, iteration=1)
        logger.close()
    result = runner.invoke(app, _runnable(command), input="")
    assert result.exit_code == 0, f"{command}:\n{result.output}"
    for flag in ("--out", "--render"):
        if command.option(flag) is not None:
            assert Path(command.option(flag)).is_file(), f"{command}: wrote no {command.option(flag)}"
    if command.argv[1] == "plot":
        assert list((Path(command.argv[2]) / "plots").glob("*.png")), f"{command}: drew no plot"


@functools.cache
def _module_flags(module: str) -> frozenset[str]:
    """The flags `python -m MODULE --help` lists in its options (argparse: two spaces in, then the flag)."""
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"python -m {module} --help failed:\n{result.stderr[-2000:]}"
    return frozenset(re.findall(r"^  (?:-\w, )?(--[a-z][\w-]*)", result.stdout, flags=re.MULTILINE))


@pytest.mark.parametrize("command", MODULES, ids=_ids(MODULES))
def test_python_module_line_uses_only_flags_its_help_lists(command):
    module = command.argv[2]
    flags = {arg.split("=")[0] for arg in command.argv[3:] if arg.startswith("--")}
    unknown = flags - _module_flags(module)
    assert not unknown, f"{command}: `python -m {module} --help` lists no {sorted(unknown)}"
    if command.option("--config") is not None:
        _load_config(command, command.argv[3:])


def _load_config(command: Command, args: tuple[str, ...]) -> None:
    """Load the line's config with its overrides: a study file as `sftrl study` reads `args`, else a run's."""
    path = ROOT / command.option("--config")
    if path.name.startswith("study_"):
        from cluster.study.__main__ import parse_args, study_overrides
        from cluster.study.config import load_study

        load_study(path, study_overrides(parse_args(list(args))))
    else:
        load_config(path, command.overrides)


@pytest.mark.parametrize("command", SERVE_RUN, ids=_ids(SERVE_RUN))
def test_serve_run_line_builds_its_application(command):
    from importlib import import_module

    from ray.serve import Application

    module, _, name = command.argv[2].partition(":")
    target = getattr(import_module(module), name)
    args = dict(arg.split("=", 1) for arg in command.argv[3:])
    application = target(args) if args else target
    assert isinstance(application, Application), f"{command}: {command.argv[2]} builds no Serve application"


def test_make_targets_named_in_the_readme_exist():
    named = set(re.findall(r"`make ([\w-]+)", README)) | {c.argv[1] for c in COMMANDS if c.argv[0] == "make"}
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.MULTILINE))
    assert named, "the README names no make target"
    assert named <= targets, f"README names make targets the Makefile lacks: {sorted(named - targets)}"


@pytest.mark.parametrize("command", PYTESTS, ids=_ids(PYTESTS))
def test_pytest_commands_name_existing_tests_and_registered_markers(command):
    root = Path(__file__).parents[1]
    args = list(command.argv[command.argv.index("pytest") + 1 :])
    paths = [arg for arg in args if arg.startswith("tests/")]
    assert paths and all((root / path).exists() for path in paths), f"{command}: a test path does not exist"
    if "-m" in args:
        marker = args[args.index("-m") + 1]
        assert f'"{marker}: ' in (root / "pyproject.toml").read_text(), (
            f"{command}: marker {marker!r} is not registered"
        )
