"""Simulation at scale: 100 hospitals sampled 10 per round against 10 hospitals all trained, same machine.

Runs ``fedward simulate`` twice on PneumoniaMNIST (28 px, Dirichlet-0.5 label skew, smallcnn,
1 local epoch, seed 0), each as its own process, one after the other:

* 10 hospitals, ``fraction-train`` = ``fraction-evaluate`` = 1.0: 10 hospitals train per round;
* 100 hospitals, ``fraction-train`` = ``fraction-evaluate`` = 0.1: 10 hospitals train per round.

``min-hospital-size`` is 1 (a Dirichlet-0.5 split of ~4,700 images over 100 hospitals leaves
some hospitals with a handful of images). For each it prints the start-up (process start to
the first record in ``metrics/server.jsonl``, i.e. Ray, the SuperLink and the initial
evaluation), the mean round time over rounds 2.. (round 1 also enrols every hospital once),
the images trained per round, and the peak memory of the whole process tree (sum of the
proportional set size of ``fedward simulate`` and every process below it, Ray's included,
sampled every 0.5 s; PSS counts shared pages once). The ratio of the two round times is the
figure: a round should cost what its sampled hospitals cost, not what the federation holds.

Usage::

    python benchmarks/simulation_scale.py --data-dir ../shared/data [--rounds 5]

Wall times are only comparable within one invocation on one machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

GIB = 1024**3


@dataclass(frozen=True)
class Scale:
    """One simulated federation."""

    hospitals: int
    fraction: float


@dataclass
class Figures:
    """What one ``fedward simulate`` run measured."""

    scale: Scale
    startup_s: float
    round_s: list[float]
    trained_images: list[float]
    peak_pss_bytes: int


def _tree_pss(root: psutil.Process) -> int:
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            info = process.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


class PeakMemory(threading.Thread):
    """Samples the PSS of a process tree every ``interval`` seconds; keeps the maximum."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            try:
                self.peak = max(self.peak, _tree_pss(self.root))
            except psutil.NoSuchProcess:
                return


def _rows(path: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _fedward() -> str:
    """The installed ``fedward`` script beside this Python, else on ``PATH``."""
    beside = Path(sys.executable).with_name("fedward")
    return str(beside) if beside.is_file() else shutil.which("fedward") or "fedward"


def simulate(args: argparse.Namespace, scale: Scale, out: Path) -> Figures:
    """Run one federation and measure it."""
    command = [
        _fedward(), "simulate", "--data-dir", str(args.data_dir),
        "--dataset", "pneumoniamnist", "--hospitals", str(scale.hospitals), "--partition", "dirichlet",
        "--alpha", "0.5", "--rounds", str(args.rounds), "--local-epochs", "1", "--seed", str(args.seed),
        "--output-dir", str(out), "--set", f"federation.fraction-train={scale.fraction}",
        "--set", f"federation.fraction-evaluate={scale.fraction}", "--set", "federation.min-hospital-size=1",
    ]  # fmt: skip
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    memory = PeakMemory(process.pid)
    memory.start()
    first_record: float | None = None
    while process.poll() is None:
        if first_record is None and any(_rows(p) for p in out.glob("*/metrics/server.jsonl")):
            first_record = time.monotonic() - started
        time.sleep(0.2)
    memory.done.set()
    memory.join()
    _, stderr = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"fedward simulate failed ({scale}):\n{stderr[-3000:]}")
    run_dir = next(out.glob("*/metrics/server.jsonl")).parent.parent
    server = [r for r in _rows(run_dir / "metrics" / "server.jsonl") if "elapsed-s" in r]
    elapsed = {int(r["round"]): float(r["elapsed-s"]) for r in server}
    hospitals = _rows(run_dir / "metrics" / "hospitals.jsonl")
    rounds = sorted(r for r in elapsed if r > 0)
    return Figures(
        scale=scale,
        startup_s=first_record if first_record is not None else float("nan"),
        round_s=[elapsed[r] - elapsed[r - 1] for r in rounds],
        trained_images=[
            sum(float(h.get("num-examples", 0)) for h in hospitals if h["round"] == r and h["phase"] == "train")
            for r in rounds
        ],
        peak_pss_bytes=memory.peak,
    )


def report(results: list[Figures]) -> None:
    """The table and the ratio of mean round times."""
    console = Console()
    table = Table(title="fedward simulate at scale (PneumoniaMNIST, Dirichlet 0.5, 10 hospitals train per round)")
    columns = ("hospitals", "fraction", "start-up (s)", "rounds (s)", "mean round 2.. (s)", "images/round", "peak PSS")
    for column in columns:
        table.add_column(column, justify="right")
    means = []
    for f in results:
        later = f.round_s[1:] or f.round_s
        means.append(statistics.fmean(later))
        table.add_row(
            str(f.scale.hospitals),
            f"{f.scale.fraction:g}",
            f"{f.startup_s:.1f}",
            " ".join(f"{s:.1f}" for s in f.round_s),
            f"{means[-1]:.2f}",
            f"{statistics.fmean(f.trained_images):.0f}",
            f"{f.peak_pss_bytes / GIB:.2f} GiB",
        )
    console.print(table)
    console.print(f"mean round time, 100 hospitals / 10 hospitals: {means[1] / means[0]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = []
    for scale in (Scale(10, 1.0), Scale(100, 0.1)):
        out = Path(tempfile.mkdtemp(prefix=f"fedward-scale-{scale.hospitals}-"))
        try:
            results.append(simulate(args, scale, out))
        finally:
            shutil.rmtree(out, ignore_errors=True)
    report(results)


if __name__ == "__main__":
    main()
