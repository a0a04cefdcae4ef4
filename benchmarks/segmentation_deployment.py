"""The hippocampus federation deployed on exported DICOM MR series + DICOM SEG, against its NIfTI simulation.

Issue 12's deployment check at full scale. With the same settings and seed:

1. ``fedward simulate`` trains the federation on the Decathlon NIfTI volumes (Flower's
   simulation runtime, one process per simulated hospital);
2. ``fedward data export`` writes every hospital's cases as DICOM MR series with one DICOM
   SEG each (the folders a PACS export gives a hospital);
3. a real deployment on loopback trains the same federation on those folders: TLS,
   ``certs init`` -> ``server start`` (the coordinator scores the NIfTI test split, as the
   simulation does) -> each hospital's public key registered under the simulation's name ->
   one ``fedward client start`` per hospital (one training thread each) -> ``run start``.

Prints, per round, the federated validation Dice of both runs and their difference, then
the round each run selects (best validation Dice) with its test Dice and HD95, and the wall
time of both. The issue asks the deployed Dice to equal the simulated one within 0.01.

Usage::

    python benchmarks/segmentation_deployment.py --data-dir ../shared/data \\
        [--hospitals 4] [--rounds 30] [--local-epochs 4] [--batch-size 2] [--lr 0.003] [--seed 0] [--keep DIR]

The defaults are ``benchmarks/segmentation.py``'s hippocampus preset. Each hospital agent
keeps a warm worker (the model, the decoded volumes and the device stay loaded between
messages), so a deployed round costs about what a simulated one does; the full 30 rounds
take about an hour on 2 cores, ``--rounds 3`` a few minutes. Every background process is
stopped at the end, pass or fail; the work folder (certificates, state, DICOM folders, run
directories, logs) is removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from deployment_chain import (
    Background,
    ChainError,
    Deadline,
    Layout,
    fedward,
    free_port,
    make_certs,
    read_jsonl,
    register,
    start_coordinator,
    terminate,
    wait_finished,
    wait_online,
    work_folder,
)
from rich.console import Console
from rich.table import Table

DATASET = "hippocampus"


def data_flags(args: argparse.Namespace, layout: Layout) -> list[str]:
    """What decides which cases each hospital holds and how they are read: shared by simulate, export and run."""
    return [
        "--dataset", DATASET, "--hospitals", str(args.hospitals), "--seed", str(args.seed),
        "--set", "data.volume-size=[48,64,48]", "--set", f"data.cache-dir={layout.root / 'cache'}",
    ]  # fmt: skip


def training_flags(args: argparse.Namespace) -> list[str]:
    """The model and the rounds: the same for the simulation and the deployed run."""
    return [
        "--model", "unet", "--rounds", str(args.rounds), "--local-epochs", str(args.local_epochs),
        "--set", f"train.batch-size={args.batch_size}", "--set", f"train.lr={args.lr}",
    ]  # fmt: skip


def declared_schema(simulated: Path) -> list[str]:
    """``--set`` flags declaring the simulated run's dataset schema (from its model card).

    ``run start`` runs where the images are not, so the deployed run states what the
    simulation read from the Decathlon folder: task, label names, channels, modality.
    """
    dataset = json.loads((simulated / "model_card.json").read_text(encoding="utf-8"))["dataset"]
    values = {
        "task": dataset["task"],
        "classes": json.dumps(dataset["classes"], separators=(",", ":")),
        "channels": dataset["channels"],
        "modality": dataset["modality"],
    }
    return [flag for key, value in values.items() for flag in ("--set", f"data.{key}={value}")]


def simulate(deadline: Deadline, args: argparse.Namespace, layout: Layout) -> tuple[Path, float]:
    """``fedward simulate`` on the NIfTI volumes; its run directory and wall time (s)."""
    out = layout.root / "simulated"
    started = time.perf_counter()
    fedward(
        deadline, "simulate", *data_flags(args, layout), *training_flags(args),
        "--data-dir", str(args.data_dir), "--output-dir", str(out),
    )  # fmt: skip
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]  # beside it: the runs index
    return run_dir, time.perf_counter() - started


def start_agents(layout: Layout, superlink: str, names: list[str], background: Background) -> None:
    """``fedward client start`` per hospital on its exported DICOM folder, one training thread each."""
    for name in names:
        background.start(
            layout.logs / f"{name}.log", "client", "start", "--superlink", superlink,
            "--ca", str(layout.certs / "ca.crt"), "--key", str(layout.keys / f"{name}.key"),
            "--data", str(layout.hospitals / name), "--port", str(free_port()), "--threads", "1",
            "--cache-dir", str(layout.root / "cache" / name),
        )  # fmt: skip


def deploy(
    deadline: Deadline, args: argparse.Namespace, layout: Layout, background: Background, schema: list[str]
) -> tuple[Path, float]:
    """Export, then the TLS deployment of the same federation; its run directory and the run's wall time (s)."""
    names = [f"hospital-{index}" for index in range(args.hospitals)]  # the simulation's names: same seeds
    layout.logs.mkdir(parents=True, exist_ok=True)
    source = ("--data-dir", str(args.data_dir))
    fedward(deadline, "data", "export", *data_flags(args, layout), *source, "--out", str(layout.hospitals))
    make_certs(deadline, layout, names)
    port = free_port()
    start_coordinator(deadline, layout, args.data_dir, port, background)
    register(deadline, layout, names)
    start_agents(layout, f"127.0.0.1:{port}", names, background)
    wait_online(deadline, layout, names, background)
    started = time.perf_counter()
    result = fedward(
        deadline, "run", "start", "--state", str(layout.state), *data_flags(args, layout), *training_flags(args),
        *schema,
    )  # fmt: skip
    found = re.search(r"run id:\s*(\d+)", result.stdout)
    if found is None:
        raise ChainError(f"fedward run start printed no run id:\n{result.stdout}")
    row, _ = wait_finished(deadline, layout, int(found.group(1)), background)
    return Path(row["path"]), time.perf_counter() - started


def rounds_of(run_dir: Path) -> dict[int, dict[str, Any]]:
    """``metrics/server.jsonl`` by round."""
    return {int(row["round"]): row for row in read_jsonl(run_dir / "metrics" / "server.jsonl")}


def selected(rows: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The round with the best validation Dice (the first of ties), as the run recorder picks it."""
    scored = [row for number, row in sorted(rows.items()) if number > 0 and "val-dice" in row]
    if not scored:
        raise ChainError("no round recorded a validation Dice")
    return max(scored, key=lambda row: float(row["val-dice"]))


def compare(simulated: Path, deployed: Path) -> dict[str, Any]:
    """Per-round validation Dice of both runs, the largest difference, and each run's selected round."""
    sim_rows, dep_rows = rounds_of(simulated), rounds_of(deployed)
    per_round = [
        {"round": n, "simulated": sim_rows[n].get("val-dice"), "deployed": dep_rows.get(n, {}).get("val-dice")}
        for n in sorted(sim_rows)
        if n > 0
    ]
    gaps = [abs(r["simulated"] - r["deployed"]) for r in per_round if None not in (r["simulated"], r["deployed"])]
    if len(gaps) != len(per_round):
        raise ChainError(f"the deployed run lacks a validation Dice the simulation has: {per_round}")
    keys = ("round", "val-dice", "test-dice", "test-dice-anterior", "test-dice-posterior", "test-hd95")
    return {
        "per-round": per_round,
        "max-val-dice-gap": max(gaps),
        "selected": {
            "simulated": {k: selected(sim_rows).get(k) for k in keys},
            "deployed": {k: selected(dep_rows).get(k) for k in keys},
        },
    }


def report(figures: dict[str, Any]) -> None:
    """Print the per-round table and the selected rounds."""
    console = Console(width=max(Console().width, 110))  # the selected-round table's columns in full
    s = figures["settings"]
    console.print(
        f"hippocampus, {s['hospitals']} hospitals, {s['rounds']} rounds x {s['local-epochs']} local epochs, "
        f"batch {s['batch-size']}, lr {s['lr']}, seed {s['seed']}: NIfTI simulation vs TLS deployment on "
        "exported DICOM MR series + DICOM SEG"
    )
    table = Table(title="federated validation Dice per round")
    for column in ("round", "simulated", "deployed", "|difference|"):
        table.add_column(column, justify="right")
    for row in figures["per-round"]:
        gap = abs(row["simulated"] - row["deployed"])
        table.add_row(str(row["round"]), f"{row['simulated']:.4f}", f"{row['deployed']:.4f}", f"{gap:.2e}")
    console.print(table)
    chosen = Table(title="selected round (best validation Dice)")
    for column in ("run", "round", "val Dice", "test Dice", "anterior", "posterior", "HD95 (mm)", "wall (s)"):
        chosen.add_column(column, justify="right")
    for run in ("simulated", "deployed"):
        r = figures["selected"][run]
        values = [r.get(k) for k in ("val-dice", "test-dice", "test-dice-anterior", "test-dice-posterior", "test-hd95")]
        cells = ["-" if v is None else f"{v:.4f}" for v in values]
        chosen.add_row(run, str(r["round"]), *cells, f"{figures['wall-s'][run]:.0f}")
    console.print(chosen)
    console.print(
        f"largest per-round difference of validation Dice: {figures['max-val-dice-gap']:.2e} (issue: <= 0.01)"
    )


def parse_args() -> argparse.Namespace:
    """The benchmark's flags (defaults: the hippocampus preset of benchmarks/segmentation.py)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"), help="folder with hippocampus/")
    parser.add_argument("--hospitals", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--local-epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=6 * 3600.0, help="hang guard for the whole benchmark (s)")
    parser.add_argument("--keep", type=Path, help="work in this (new or empty) folder and keep it")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    args.data_dir = args.data_dir.resolve()
    if not (args.data_dir / DATASET / "dataset.json").is_file():
        parser.error(f"{args.data_dir / DATASET}: no Decathlon dataset.json there (pass --data-dir)")
    return args


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, terminate)
    root = work_folder(args.keep)
    layout, background, deadline = Layout(root), Background(), Deadline(args.timeout)
    try:
        simulated, sim_wall = simulate(deadline, args, layout)
        deployed, dep_wall = deploy(deadline, args, layout, background, declared_schema(simulated))
        figures = compare(simulated, deployed)
    except ChainError as err:
        kept = f"(kept in {root})" if args.keep else "(pass --keep DIR to keep the logs)"
        raise SystemExit(f"segmentation deployment failed {kept}:\n{err}") from None
    finally:
        background.stop_all()
    figures |= {
        "settings": {k.replace("_", "-"): v for k, v in vars(args).items() if k not in {"data_dir", "keep", "json"}},
        "wall-s": {"simulated": sim_wall, "deployed": dep_wall},
    }
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        Console().print_json(json.dumps(figures))
    else:
        report(figures)


if __name__ == "__main__":
    main()
