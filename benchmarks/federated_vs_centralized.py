"""Federated vs centralized on the same data, model and total epochs, in one invocation.

Runs the centralized baseline (all hospitals' images pooled) and the simulated federation
(Flower simulation runtime, Ray) with one configuration, then prints the selected models'
headline metrics (classification: AUC, accuracy, balanced accuracy; segmentation: Dice per
label, HD95), the gap in the primary test metric and the wall-time ratio federated / centralized.

Usage::

    python benchmarks/federated_vs_centralized.py --data-dir ../shared/data \\
        --hospitals 5 --partition dirichlet --alpha 0.5 --rounds 20 --seed 0

    # BUSI breast ultrasound, 3 classes (benign / malignant / normal), learnt with the lesion masks
    python benchmarks/federated_vs_centralized.py --dataset busi --rounds 60 --set data.image-size=128 \\
        --set data.modality=US --set data.target=class+mask --set model.name=unet-multitask \\
        --set train.local-epochs=1 --set train.batch-size=16 --set train.lr=0.001

Any ``section.key=value`` after ``--set`` overrides the config (e.g. ``--set strategy.name=fedprox``).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from bench_config import build_config, parser, quality_columns, selected
from rich.console import Console
from rich.table import Table

from fedward.common.config import RunConfig
from fedward.simulation.centralized import run_centralized
from fedward.simulation.driver import prepare, simulate


def compare(cfg: RunConfig, console: Console) -> tuple[dict[str, float], dict[str, float], float]:
    """Run the centralized baseline and the federation of ``cfg``; print their table.

    Returns:
        The selected rounds' metrics (centralized, federated) and the wall-time ratio.
    """
    central = prepare(
        cfg.replace(run=dataclasses.replace(cfg.run, name=f"{cfg.run.name}centralized")), mode="centralized"
    )
    started = time.perf_counter()
    run_centralized(central)
    central_s = time.perf_counter() - started
    federated = prepare(cfg.replace(run=dataclasses.replace(cfg.run, name=f"{cfg.run.name}federated")))
    started = time.perf_counter()
    simulate(federated)
    federated_s = time.perf_counter() - started
    _print_table(
        cfg, console, [("centralized", central.run_dir, central_s), ("federated", federated.run_dir, federated_s)]
    )
    c, f = selected(central.run_dir), selected(federated.run_dir)
    key = quality_columns(federated.run_dir)[1][1]  # test AUC or test Dice
    gap = f.get(key, float("nan")) - c.get(key, float("nan"))
    console.print(f"{key} gap (federated - centralized): {gap:+.4f}")
    console.print(f"wall-time ratio federated / centralized: {federated_s / central_s:.2f}")
    console.print(f"run directories: {central.run_dir}  {federated.run_dir}")
    return c, f, federated_s / central_s


def _print_table(cfg: RunConfig, console: Console, runs: list[tuple[str, Path, float]]) -> None:
    columns = quality_columns(runs[0][1])
    table = Table(
        title=(
            f"{cfg.data.dataset}: {cfg.federation.hospitals} hospitals, {cfg.federation.partition.value} "
            f"(alpha {cfg.federation.alpha}), {cfg.federation.rounds} rounds x {cfg.train.local_epochs} local epochs, "
            f"{cfg.model.name.value}, {cfg.strategy.name.value}, seed {cfg.run.seed}"
        )
    )
    for title in ("run", "selected round", *(t for t, _ in columns), "wall time (s)"):
        table.add_column(title, justify="left" if title == "run" else "right")
    for name, run_dir, seconds in runs:
        row = selected(run_dir)
        values = [f"{row[k]:.4f}" if isinstance(row.get(k), float) else "-" for _, k in columns]
        table.add_row(name, str(row["round"]), *values, f"{seconds:.1f}")
    console.print(table)


def main() -> None:
    args = parser(__doc__).parse_args()
    compare(build_config(args), Console())


if __name__ == "__main__":
    main()
