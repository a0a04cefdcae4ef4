"""What the CLI shows: round progress while a run trains, a summary when it ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedward.common.fileio import read_json_object
from fedward.common.rundir.layout import CARD_JSON

SHOWN = (
    ("train-loss", "loss"),
    ("val-auc", "val AUC"),
    ("test-auc", "test AUC"),
    ("test-accuracy", "test ACC"),
    ("val-dice", "val Dice"),
    ("test-dice", "test Dice"),
    ("test-hd95", "test HD95"),
)


class RoundProgress:
    """A rich progress bar: round k/N with the latest metrics.

    Use as a context manager and call :meth:`update` with ``status.json`` contents.
    """

    def __init__(self, console: Console, rounds: int, label: str) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rounds"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task(label, total=rounds, metrics="starting...")

    def __enter__(self) -> RoundProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, status: dict[str, Any]) -> None:
        """Show the round and latest metrics of a ``status.json``."""
        latest = status.get("latest") or {}
        text = "  ".join(
            f"{label} {latest[key]:.4f}" for key, label in SHOWN if isinstance(latest.get(key), int | float)
        )
        self.progress.update(self.task, completed=int(status.get("round", 0)), metrics=text)


def summary_table(run_dir: Path) -> Table:
    """Selected round and its metrics, read from the run's model card."""
    card = read_json_object(run_dir / CARD_JSON)
    best, final = card["metrics"]["best"], card["metrics"]["final"]
    table = Table(title=f"{card['run']['mode']} run {card['run']['name']}: {card['run']['status']}")
    table.add_column("metric")
    table.add_column(f"selected (round {card['selection']['round']})", justify="right")
    table.add_column(f"final (round {final.get('round', '-')})", justify="right")
    for key in [k for k in dict.fromkeys([*best, *final]) if k != "round"]:
        table.add_row(key, _fmt(best.get(key)), _fmt(final.get(key)))
    return table


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))
