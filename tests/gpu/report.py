"""The GPU check's result: one row per measurement (name, value, unit, status), printed as one table.

Statuses: "ok" (measured, and within its bound where it has one, which the status then names),
"info" (a fact about the machine or the run), "skipped: <why, and the fix>", "FAIL: <what went
wrong>". `Report.guard(name)` turns an exception inside a part into a FAIL row (its traceback goes
to stderr) so that the other parts still run. `Report.write(directory)` saves the rows as
gpu_check.json and gpu_check.md, for the note.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

COLUMNS = ("name", "value", "unit", "status")
STATUS_WIDTH = 150  # the table shows a status's first line up to this many characters; the files keep it whole


@dataclass
class Row:
    """One measurement or fact."""

    name: str
    value: float | str
    unit: str
    status: str

    @property
    def failed(self) -> bool:
        """Whether this row records a failure."""
        return self.status.startswith("FAIL")

    @property
    def measured(self) -> bool:
        """Whether this row holds a measurement that passed."""
        return self.status.startswith("ok")

    def cells(self, *, status_width: int | None = None) -> tuple[str, str, str, str]:
        """The row as text: the value formatted, the status on one line (cut to `status_width`)."""
        status = self.status.splitlines()[0] if self.status else ""
        if status_width is not None and len(status) > status_width:
            status = status[: status_width - 3] + "..."
        return self.name, format_value(self.value), self.unit, status


def format_value(value: float | str) -> str:
    """A value as the table shows it: 4 significant digits or so, thousands separated."""
    if isinstance(value, str):
        return value
    if value != value:  # nan
        return "nan"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


class Report:
    """The rows of one run of the check, in the order they were measured."""

    def __init__(self) -> None:
        self.rows: list[Row] = []

    def add(self, name: str, value: float | str, unit: str, status: str = "ok") -> Row:
        """Append a row."""
        row = Row(name, value, unit, status)
        self.rows.append(row)
        return row

    def check(self, name: str, value: float, unit: str, *, ok: bool, bound: str, detail: str = "") -> Row:
        """Append a measurement that must meet `bound` (a short phrase): "ok: bound" or "FAIL: not bound"."""
        note = f"; {detail}" if detail else ""
        return self.add(name, value, unit, f"ok: {bound}{note}" if ok else f"FAIL: not {bound}{note}")

    def skip(self, name: str, why: str) -> Row:
        """Append a row for something not measured, saying why and how to make it run."""
        return self.add(name, "", "", f"skipped: {why}")

    @contextmanager
    def guard(self, name: str) -> Iterator[None]:
        """Run a part; an exception becomes a FAIL row `name` (traceback on stderr) instead of ending the check."""
        try:
            yield
        except Exception as error:
            traceback.print_exc(file=sys.stderr)
            self.add(name, "", "", f"FAIL: {type(error).__name__}: {error}")

    @property
    def failed(self) -> bool:
        """Whether any row records a failure."""
        return any(row.failed for row in self.rows)

    @property
    def measured(self) -> bool:
        """Whether any measurement passed (a run that skipped everything measured nothing)."""
        return any(row.measured for row in self.rows)

    def table(self) -> str:
        """The rows as one fixed-width text table."""
        cells = [COLUMNS, *(row.cells(status_width=STATUS_WIDTH) for row in self.rows)]
        widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS) - 1)]
        lines = []
        for index, line in enumerate(cells):
            lines.append("  ".join([*(cell.ljust(w) for cell, w in zip(line, widths, strict=False)), line[-1]]))
            if index == 0:
                lines.append("  ".join("-" * w for w in [*widths, len(COLUMNS[-1])]))
        return "\n".join(lines)

    def markdown(self) -> str:
        """The rows as a markdown table (statuses whole, on one line)."""
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        for row in self.rows:
            name, value, unit, _ = row.cells()
            status = " ".join(row.status.split()).replace("|", "\\|")
            lines.append(f"| {name} | {value} | {unit} | {status} |")
        return "\n".join(lines) + "\n"

    def write(self, directory: Path, *, about: dict[str, str]) -> list[Path]:
        """Write gpu_check.json (`about` and the rows) and gpu_check.md into `directory`; returns their paths."""
        directory.mkdir(parents=True, exist_ok=True)
        as_json = directory / "gpu_check.json"
        as_json.write_text(json.dumps({"about": about, "rows": [asdict(row) for row in self.rows]}, indent=2))
        as_markdown = directory / "gpu_check.md"
        header = "".join(f"- {key}: {value}\n" for key, value in about.items())
        as_markdown.write_text(f"# GPU check\n\n{header}\n{self.markdown()}")
        return [as_json, as_markdown]
