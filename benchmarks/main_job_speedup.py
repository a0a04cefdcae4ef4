"""The README's main job on an earlier commit and on this checkout, back to back: wall times and their ratio.

Issue 13 asks the main job (``fedward simulate --dataset pneumoniamnist ... --rounds 20``:
5 Dirichlet-0.5 hospitals, 3 local epochs, augmentation) to run at least 2x faster than on
the commit it was measured on. This script extracts that commit's tree (``git archive``)
into a temporary folder laid out as the ``fedward`` package and runs the same command
twice with this environment's ``fedward`` entry point: once with the folder first on
``PYTHONPATH`` (the earlier code; same Python, PyTorch and Flower), once without (this
checkout). Each run's wall time includes the CLI's start-up, Ray and every record the run
writes. It prints both wall times, the ratio, and each run's selected round with its test
AUC and accuracy. Wall times are only comparable within one invocation; run nothing else
beside it.

Usage::

    python benchmarks/main_job_speedup.py --data-dir ../shared/data [--baseline 3936c97] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from bench_config import selected
from rich.console import Console
from rich.table import Table

REPOSITORY = Path(__file__).resolve().parent.parent
BASELINE = "3936c97"
"""The commit issue 13 measured the main job on (2026-12-02)."""


def extract(commit: str, into: Path) -> Path:
    """``commit``'s tree under ``into/fedward``; returns ``into`` (a ``PYTHONPATH`` entry)."""
    (into / "fedward").mkdir(parents=True)
    archive = into / "tree.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "-C", str(REPOSITORY), "archive", commit], stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "fedward", filter="data")
    archive.unlink()
    return into


def main_job(args: argparse.Namespace, out: Path, pythonpath: Path | None) -> tuple[float, dict[str, float]]:
    """Run the main job into ``out``: (wall seconds, the selected round's metrics)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    command = [
        str(Path(sys.executable).parent / "fedward"), "simulate", "--dataset", "pneumoniamnist",
        "--data-dir", str(args.data_dir), "--hospitals", "5", "--partition", "dirichlet", "--alpha", "0.5",
        "--rounds", str(args.rounds), "--seed", str(args.seed), "--output-dir", str(out),
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
    seconds = time.perf_counter() - started
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return seconds, selected(run_dir)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    cli.add_argument("--baseline", default=BASELINE, help="the earlier commit (default: issue 13's)")
    cli.add_argument("--rounds", type=int, default=20)
    cli.add_argument("--seed", type=int, default=0)
    args = cli.parse_args()
    args.data_dir = args.data_dir.resolve()
    with tempfile.TemporaryDirectory(prefix="fedward-speedup-") as tmp:
        root = Path(tmp)
        view = extract(args.baseline, root / "baseline")
        before = main_job(args, root / "runs-baseline", view)
        after = main_job(args, root / "runs-now", None)
    table = Table(title=f"the main job, {args.rounds} rounds, seed {args.seed}")
    for column in ("code", "wall (s)", "selected round", "test AUC", "test accuracy"):
        table.add_column(column, justify="right")
    for name, (seconds, chosen) in ((args.baseline, before), ("this checkout", after)):
        row = [f"{seconds:.1f}", str(chosen["round"]), f"{chosen['test-auc']:.4f}", f"{chosen['test-accuracy']:.4f}"]
        table.add_row(name, *row)
    console = Console()
    console.print(table)
    console.print(f"speed-up: {before[0] / after[0]:.2f}x (issue 13: >= 2x)")


if __name__ == "__main__":
    main()
