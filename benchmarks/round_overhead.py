"""Per-round overhead of a real deployment: the warm hospital worker against Flower's process per message.

Runs the deployment chain of ``deployment_chain.py`` twice, back to back on this machine
(TLS on 127.0.0.1, every component its own process, hospitals on exported DICOM folders of
the real PneumoniaMNIST): first with ``fedward client start`` as shipped (the warm worker
serves every ClientApp task), then with ``--no-warm-worker`` (Flower starts a fresh
``flwr-clientapp`` process for every message) as the baseline.

For every round it prints the wall time (difference of ``elapsed-s`` in
``metrics/server.jsonl``), the slowest hospital's ``train-seconds + eval-seconds`` in that
time (``metrics/hospitals.jsonl``; see :func:`round_overheads` for which rounds' seconds
those are when evaluation rides on training) and the overhead: wall minus that. The overhead is
everything that is not a hospital computing: messages through the SuperLink and the
SuperNodes, serialisation, task start, aggregation, the coordinator's own test-set scoring
and run records. The mean over rounds 2.. is the figure (round 1 also enrols the hospitals
and loads each hospital's images).

Usage::

    python benchmarks/round_overhead.py --data-dir ../shared/data [--hospitals 3] [--rounds 5]

Wall times depend on the machine and whatever else runs on it: compare the two modes as a
ratio within one run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import deployment_chain as chain  # a sibling script


def carries_evaluation(run_dir: Path) -> bool:
    """Whether the run evaluated each round inside the next round's training message."""
    federation = tomllib.loads((run_dir / "config.toml").read_text()).get("federation", {})
    return bool(
        federation.get("evaluate-in-train", True)
        and float(federation.get("fraction-train", 1.0)) == 1.0
        and float(federation.get("fraction-evaluate", 1.0)) == 1.0
    )


def hospital_seconds(hospitals: list[dict[str, Any]], rnd: int, key: str) -> dict[str, float]:
    """Each hospital's ``key`` (``train-seconds`` or ``eval-seconds``) in round ``rnd``."""
    return {row["hospital"]: float(row[key]) for row in hospitals if row.get("round") == rnd and key in row}


def round_overheads(run_dir: Path) -> list[dict[str, float]]:
    """Per round: wall, the slowest hospital's train + evaluate seconds in it, and their difference.

    Round ``r``'s wall runs from round ``r - 1``'s record to round ``r``'s. With evaluation
    carried by training, what the hospitals compute in it is one message each: scoring
    round ``r``'s model and training round ``r + 1`` (the last round: scoring only);
    otherwise two messages, round ``r``'s training then its evaluation.
    """
    server = [row for row in chain.read_jsonl(run_dir / "metrics" / "server.jsonl") if "elapsed-s" in row]
    hospitals = chain.read_jsonl(run_dir / "metrics" / "hospitals.jsonl")
    elapsed = {int(row["round"]): float(row["elapsed-s"]) for row in server}
    carried, last = carries_evaluation(run_dir), max(elapsed)
    rows = []
    for rnd in sorted(r for r in elapsed if r > 0 and r - 1 in elapsed):
        evaluation = hospital_seconds(hospitals, rnd, "eval-seconds")
        if carried:
            training = hospital_seconds(hospitals, rnd + 1, "train-seconds") if rnd < last else {}
            busy = max((evaluation.get(h, 0.0) + training.get(h, 0.0) for h in {*evaluation, *training}), default=0.0)
        else:
            training = hospital_seconds(hospitals, rnd, "train-seconds")
            busy = max(training.values(), default=0.0) + max(evaluation.values(), default=0.0)
        wall = elapsed[rnd] - elapsed[rnd - 1]
        rows.append({"round": rnd, "wall-s": wall, "hospital-s": busy, "overhead-s": wall - busy})
    return rows


def run_mode(args: argparse.Namespace, warm_worker: bool) -> dict[str, Any]:
    """One deployment chain; its per-round overheads and their mean over rounds 2.."""
    root = Path(tempfile.mkdtemp(prefix="fedward-round-overhead-"))
    background = chain.Background()
    settings = argparse.Namespace(
        data_dir=args.data_dir,
        subset=args.subset,
        hospitals=args.hospitals,
        rounds=args.rounds,
        local_epochs=1,
        timeout=args.timeout,
        warm_worker=warm_worker,
    )
    try:
        figures = chain.run_chain(settings, chain.Layout(root), background)
        run_dir = next((root / "state" / "runs").glob(f"*-{figures['run-id']}"))
        rows = round_overheads(run_dir)
    except chain.ChainError as err:
        raise SystemExit(f"deployment chain failed (warm worker {warm_worker}):\n{err}") from None
    finally:
        background.stop_all()
        shutil.rmtree(root, ignore_errors=True)
    later = [row["overhead-s"] for row in rows if row["round"] > 1] or [row["overhead-s"] for row in rows]
    return {"warm-worker": warm_worker, "rounds": rows, "mean-overhead-s": statistics.fmean(later)}


def report(results: list[dict[str, Any]]) -> None:
    """One table per mode and the two means."""
    console = Console()
    for result in results:
        mode = "warm worker" if result["warm-worker"] else "no warm worker (flwr-clientapp per message)"
        table = Table(title=f"{mode}: per-round overhead")
        for column in ("round", "wall (s)", "slowest hospital train+eval (s)", "overhead (s)"):
            table.add_column(column, justify="right")
        for row in result["rounds"]:
            table.add_row(
                str(row["round"]), f"{row['wall-s']:.2f}", f"{row['hospital-s']:.2f}", f"{row['overhead-s']:.2f}"
            )
        console.print(table)
    warm, cold = (r["mean-overhead-s"] for r in results)
    console.print(
        f"mean overhead per round (rounds 2..): warm worker {warm:.2f} s, no warm worker {cold:.2f} s "
        f"({cold / warm:.1f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--subset", type=chain.parse_subset, default="960,160,200", help="train,val,test or 'all'")
    parser.add_argument("--hospitals", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=1800.0, help="hang guard per deployment (s)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    results = [run_mode(args, warm_worker=True), run_mode(args, warm_worker=False)]
    if args.json:
        Console().print_json(json.dumps(results))
    else:
        report(results)


if __name__ == "__main__":
    main()
