"""Learning curves of a run, drawn with matplotlib (Agg backend, no display needed)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for row in rows:
        value = row.get(key)
        if isinstance(value, int | float):
            xs.append(int(row["round"]))
            ys.append(float(value))
    return xs, ys


def plot_learning_curves(
    server_rows: Sequence[Mapping[str, Any]],
    hospital_rows: Sequence[Mapping[str, Any]],
    path: Path,
    metric: str = "auc",
) -> None:
    """Draw the selection metric, loss and per-hospital validation metric against the round into a PNG.

    Args:
        server_rows: rows of ``metrics/server.jsonl``.
        hospital_rows: rows of ``metrics/hospitals.jsonl``.
        path: output PNG.
        metric: the task's quality metric without its split (``auc``, ``dice``).
    """
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    auc_ax, loss_ax, site_ax = axes
    name = metric.upper() if metric == "auc" else metric.capitalize()
    for key, label in (
        (f"val-{metric}", f"validation {name} (hospitals)"),
        (f"test-{metric}", f"test {name} (server)"),
    ):
        xs, ys = _series(server_rows, key)
        if xs:
            auc_ax.plot(xs, ys, marker="o", ms=3, label=label)
    auc_ax.set(title=name, xlabel="round", ylabel=name)
    for key, label in (
        ("train-loss", "train loss"),
        ("val-loss", "validation loss"),
        ("test-loss", "test loss"),
    ):
        xs, ys = _series(server_rows, key)
        if xs:
            loss_ax.plot(xs, ys, marker="o", ms=3, label=label)
    loss_ax.set(title="Loss", xlabel="round", ylabel="loss")
    per_site: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in hospital_rows:
        if row.get("phase") == "evaluate":
            per_site[str(row.get("hospital"))].append(row)
    for hospital in sorted(per_site):
        xs, ys = _series(per_site[hospital], f"val-{metric}")
        if xs:
            site_ax.plot(xs, ys, marker=".", label=hospital)
    site_ax.set(title=f"Validation {name} per hospital", xlabel="round", ylabel=name)
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
