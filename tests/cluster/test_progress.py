"""Progress bars: drawn on a terminal with the done/total counts, silent elsewhere."""

import io

from rich.console import Console

from cluster.progress import RunProgress


def _run(console: Console) -> None:
    with RunProgress(sft_steps=8, iterations=3, console=console) as progress:
        progress.update(sft_step=8, iteration=2)


def test_bars_show_steps_done_on_a_terminal():
    out = io.StringIO()
    _run(Console(file=out, force_terminal=True, width=120))
    text = out.getvalue()
    assert "SFT steps" in text and "8/8" in text
    assert "RL iterations" in text and "2/3" in text


def test_no_bars_off_a_terminal():
    out = io.StringIO()
    _run(Console(file=out, force_terminal=False, width=120))
    assert out.getvalue() == ""


def test_a_phase_without_steps_gets_no_bar():
    out = io.StringIO()
    with RunProgress(sft_steps=0, iterations=2, console=Console(file=out, force_terminal=True, width=120)):
        pass
    assert "SFT steps" not in out.getvalue() and "RL iterations" in out.getvalue()
