"""Federated vs centralized on the same data, model and total epochs, in one invocation.

Runs the centralized baseline (all hospitals' images pooled) and the simulated federation
(Flower simulation runtime, Ray) with one configuration, then prints the selected models'
test AUC and accuracy, the AUC gap and the wall-time ratio federated / centralized.

Usage::

    python benchmarks/federated_vs_centralized.py --data-dir ../shared/data \\
        --hospitals 5 --partition dirichlet --alpha 0.5 --rounds 20 --seed 0

Any ``section.key=value`` after ``--set`` overrides the config (e.g. ``--set strategy.name=fedprox``).
"""

from __future__ import annotations

import dataclasses
import time

from bench_config import build_config, parser, selected
from rich.console import Console
from rich.table import Table

from fedward.simulation.centralized import run_centralized
from fedward.simulation.driver import prepare, simulate


def main() -> None:
    args = parser(__doc__).parse_args()
    console = Console()
    cfg = build_config(args)

    central = prepare(cfg.replace(run=dataclasses.replace(cfg.run, name="centralized")), mode="centralized")
    started = time.perf_counter()
    run_centralized(central)
    central_s = time.perf_counter() - started

    federated = prepare(cfg.replace(run=dataclasses.replace(cfg.run, name="federated")))
    started = time.perf_counter()
    simulate(federated)
    federated_s = time.perf_counter() - started

    c, f = selected(central.run_dir), selected(federated.run_dir)
    table = Table(
        title=(
            f"{cfg.data.dataset}: {cfg.federation.hospitals} hospitals, {cfg.federation.partition.value} "
            f"(alpha {cfg.federation.alpha}), {cfg.federation.rounds} rounds x {cfg.train.local_epochs} local epochs, "
            f"{cfg.model.name.value}, {cfg.strategy.name.value}, seed {cfg.run.seed}"
        )
    )
    for column in ("run", "selected round", "val AUC", "test AUC", "test ACC", "wall time (s)"):
        table.add_column(column, justify="right" if column != "run" else "left")
    for name, row, seconds in (("centralized", c, central_s), ("federated", f, federated_s)):
        table.add_row(
            name,
            str(row["round"]),
            f"{row.get('val-auc', float('nan')):.4f}",
            f"{row['test-auc']:.4f}",
            f"{row['test-accuracy']:.4f}",
            f"{seconds:.1f}",
        )
    console.print(table)
    gap = f["test-auc"] - c["test-auc"]
    console.print(
        f"test AUC gap (federated - centralized): {gap:+.4f}  ({'within' if abs(gap) <= 0.01 else 'outside'} 0.01)"
    )
    console.print(f"wall-time ratio federated / centralized: {federated_s / central_s:.2f}")
    console.print(f"run directories: {central.run_dir}  {federated.run_dir}")


if __name__ == "__main__":
    main()
