"""The `sftrl` command line: data export, play, serve, train, eval, plot, study.

Each group of commands lives in its own module of `cluster/cli/` and is registered here, so this file
only wires them together. Heavy imports (torch, ray) stay inside the command bodies so that
`sftrl --help` is fast. Run `sftrl --help` for the list.
"""

import typer

from cluster.cli import envs, serve, study, train

app = typer.Typer(no_args_is_help=True, help="sftrl: SFT vs RL post-training on Ray, Serve and DeepSpeed.")


@app.command()
def version() -> None:
    """Print the installed sftrl version."""
    from importlib.metadata import version as installed_version

    typer.echo(f"sftrl {installed_version('sftrl')}")


app.add_typer(envs.app)  # sftrl data ENV, sftrl play ENV
app.add_typer(train.app)  # sftrl train, sftrl eval, sftrl plot
app.command("serve")(serve.serve)  # sftrl serve --model smollm2-135m
app.command("study", context_settings=study.SETTINGS)(study.study)  # sftrl study --config FILE

if __name__ == "__main__":
    app()
