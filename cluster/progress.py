"""Terminal progress bars of a run: one for the SFT steps, one for the RL iterations (rich).

Bars are drawn only on an interactive terminal, by the main thread; under `ray job submit`, a pipe or a test the
trainer's one line per step is the whole output. Lines printed while the bars are live appear
above them.

    with RunProgress(sft_steps=8, iterations=3) as progress:
        progress.update(sft_step=1, iteration=0)
"""

from __future__ import annotations

import threading

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class RunProgress:
    """Bars for `sft_steps` SFT steps and `iterations` RL iterations (a phase with none gets no bar)."""

    def __init__(self, *, sft_steps: int, iterations: int, console: Console | None = None):
        console = console or Console()
        self._bars = Progress(
            TextColumn("{task.description:>14}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=console,
            # one live display per terminal: a study's runs in other threads print lines only
            disable=not console.is_terminal or threading.current_thread() is not threading.main_thread(),
        )
        self._sft = self._bars.add_task("SFT steps", total=sft_steps) if sft_steps else None
        self._rl = self._bars.add_task("RL iterations", total=iterations) if iterations else None

    def __enter__(self) -> RunProgress:
        self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bars.stop()

    def update(self, *, sft_step: int, iteration: int) -> None:
        """Show `sft_step` SFT steps and `iteration` RL iterations done."""
        if self._sft is not None:
            self._bars.update(self._sft, completed=sft_step)
        if self._rl is not None:
            self._bars.update(self._rl, completed=iteration)
