"""`sftrl data ENV` (SFT export) and `sftrl play ENV` (play in the terminal), for every env in ENVS.

    sftrl data gp --variant id --modality text --n 10000 --seed 0 --out data/gp_l_sft.jsonl
    sftrl play gp --variant rule_ood --seed 3
    sftrl play gp --modality image --render hand.png
    sftrl data virl --variant rule_ood --modality text --n 1000 --out data/virl_l_rule_ood_sft.jsonl
    sftrl play virl --modality image --seed 3 --render street.png

An environment joins both commands with one `ENVS` entry: its Gymnasium id and a function that
turns what a person types into the env's answer text. Extra constructor arguments go through
`--set key=value` (values read as JSON when they parse, e.g. `--set target=12`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer()


def gp_typed_answer(line: str, info: dict) -> str:
    """GeneralPoints: a typed formula becomes the JSON answer (a typed JSON object is kept as is)."""
    line = line.strip()
    if line.startswith("{"):
        return line
    return json.dumps({"cards": info["cards"], "number": info["numbers"], "formula": line})


def virl_typed_answer(line: str, info: dict) -> str:
    """V-IRL: a typed action (e.g. forward()) becomes the JSON answer (a typed JSON object is kept)."""
    line = line.strip()
    if line.startswith("{"):
        return line
    return json.dumps({"action": line})


@dataclass(frozen=True)
class EnvEntry:
    """One environment of the CLI: its Gymnasium id and how a typed line becomes an answer."""

    env_id: str
    typed_answer: Callable[[str, dict], str]  # (line typed, last info) -> answer text for step()
    prompt: str  # what `play` asks the person to type


ENVS: dict[str, EnvEntry] = {
    "gp": EnvEntry("sftrl/GeneralPoints-v0", gp_typed_answer, "formula (e.g. (10-4)*(2+2))"),
    "virl": EnvEntry("sftrl/VIRL-v0", virl_typed_answer, "action (e.g. turn_direction(north), forward(), stop())"),
}

EnvName = Annotated[str, typer.Argument(help=f"environment: one of {', '.join(ENVS)}")]
Variant = Annotated[str, typer.Option(help="variant, e.g. id, rule_ood, visual_ood")]
Modality = Annotated[str, typer.Option(help="text or image")]
Settings = Annotated[
    list[str] | None,
    typer.Option("--set", help="extra env argument KEY=VALUE (VALUE read as JSON when it parses), repeatable"),
]


def make_env(name: str, variant: str, modality: str, *, settings: list[str], **kwargs):
    """Build the named environment; typer.BadParameter names a bad name or setting and the fix."""
    import gymnasium

    import envs  # noqa: F401  (registers the env ids)

    if name not in ENVS:
        raise typer.BadParameter(f"unknown environment {name!r}; use one of {sorted(ENVS)}")
    for setting in settings:
        key, sep, raw = setting.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--set {setting!r} is not KEY=VALUE, e.g. --set target=12")
        try:
            kwargs[key] = json.loads(raw)
        except ValueError:
            kwargs[key] = raw
    try:
        return gymnasium.make(ENVS[name].env_id, variant=variant, modality=modality, **kwargs)
    except (TypeError, ValueError) as error:
        raise typer.BadParameter(str(error)) from error


@app.command()
def data(
    env: EnvName,
    variant: Variant = "id",
    modality: Modality = "text",
    n: Annotated[int, typer.Option(min=1, help="number of records (one per policy turn)")] = 1000,
    seed: Annotated[int, typer.Option(help="seed of the draw of training seeds")] = 0,
    out: Annotated[Path | None, typer.Option(help="JSONL path (default data/ENV_VARIANT_MODALITY_sft.jsonl)")] = None,
    split: Annotated[
        str, typer.Option(help="tasks to draw from: train (evaluation hands/routes held out) or all (no split)")
    ] = "train",
    settings: Settings = None,
) -> None:
    """Write oracle SFT chat records (JSONL, PNGs beside it for image envs) from training seeds and tasks."""
    from envs.sft_data import write_sft_records

    if split not in ("train", "all"):
        raise typer.BadParameter(f"--split {split!r}: use train or all (SFT data never comes from eval tasks)")
    made = make_env(env, variant, modality, settings=settings or [], split=split)
    path = out or Path("data") / f"{env}_{variant}_{modality}_sft.jsonl"
    result = write_sft_records(made, path, n_records=n, seed=seed)
    images = f" and {result.n_images} images" if result.n_images else ""
    typer.echo(f"wrote {result.n_records} records from {result.n_episodes} episodes{images} to {result.path}")


@app.command()
def play(
    env: EnvName,
    variant: Variant = "id",
    modality: Modality = "text",
    seed: Annotated[int | None, typer.Option(help="seed of the first episode (random when omitted)")] = None,
    episodes: Annotated[int, typer.Option(min=1, help="episodes to play")] = 1,
    render: Annotated[Path | None, typer.Option(help="save the picture of each hand to this PNG")] = None,
    settings: Settings = None,
) -> None:
    """Play in the terminal: read the task, type an answer, see the verifier's feedback."""
    entry_name = env
    made = make_env(env, variant, modality, settings=settings or [], render_mode="rgb_array" if render else None)
    if modality == "image" and not render:
        typer.echo("(the image modality shows its task only in a picture: add --render hand.png to see it)")
    for episode in range(episodes):
        obs, info = made.reset(seed=None if seed is None else seed + episode)
        if render:
            _save_picture(made.render(), render)
        typer.echo(_turn_text(obs["messages"][-1]))
        if not _play_episode(made, ENVS[entry_name], info, render=render):
            return


def _play_episode(made, entry: EnvEntry, info: dict, *, render: Path | None) -> bool:
    """One episode on stdin; False when the input ended.

    With `render`, the picture is saved again after every step (V-IRL's picture changes as the agent moves).
    """
    while True:
        typer.echo(f"{entry.prompt}> ", nl=False)
        line = sys.stdin.readline()
        if not line:
            typer.echo("\n(end of input)")
            return False
        obs, reward, terminated, truncated, info = made.step(entry.typed_answer(line, info))
        typer.echo(f"reward {reward:+g}" + ("  success!" if info.get("success") else ""))
        if render:
            _save_picture(made.render(), render)
        if terminated or truncated:
            typer.echo("episode over" + ("" if terminated else f" after {info.get('attempt')} attempts"))
            return True
        typer.echo(_turn_text(obs["messages"][-1]))


def _turn_text(message: dict) -> str:
    """The text of a chat turn (the text part of a multimodal content list)."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "\n".join(part["text"] for part in content if part.get("type") == "text")


def _save_picture(picture, path: Path) -> None:
    """Save an (H, W, 3) uint8 picture as PNG and say where."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(path)
    typer.echo(f"picture saved to {path}")
