"""Shared command line of the benchmarks: one run config from flags, and a run's selected model.

Imported by the benchmark scripts beside it (``python benchmarks/<script>.py`` puts this
folder on ``sys.path``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fedward.common.config import RunConfig, load_config, parse_sets


def parser(description: str | None) -> argparse.ArgumentParser:
    """The flags every benchmark takes (data, federation, seed, output, ``--set``)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="TOML run config")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--dataset", default="pneumoniamnist")
    parser.add_argument("--hospitals", type=int, default=5)
    parser.add_argument("--partition", default="dirichlet")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=Path("runs/benchmarks"))
    parser.add_argument("--set", dest="sets", action="append", default=[], help="section.key=value override")
    return parser


def build_config(args: argparse.Namespace, **extra: Any) -> RunConfig:
    """The run config of the flags, ``extra`` dotted keys and ``--set`` overrides (in that order)."""
    overrides: dict[str, Any] = {
        "data.dataset": args.dataset,
        "data.data-dir": str(args.data_dir),
        "federation.hospitals": args.hospitals,
        "federation.partition": args.partition,
        "federation.alpha": args.alpha,
        "federation.rounds": args.rounds,
        "run.seed": args.seed,
        "run.output-dir": str(args.output_dir),
        **extra,
    }
    overrides.update(parse_sets(args.sets))
    return load_config(args.config, overrides)


def model_card(run_dir: Path) -> dict[str, Any]:
    """A run directory's model card."""
    card: dict[str, Any] = json.loads((run_dir / "model_card.json").read_text(encoding="utf-8"))
    return card


def selected(run_dir: Path) -> dict[str, Any]:
    """The selected round (best validation AUC or Dice) and its metrics."""
    card = model_card(run_dir)
    return {"round": card["selection"]["round"], **card["metrics"]["best"]}


def quality_columns(run_dir: Path) -> list[tuple[str, str]]:
    """(column title, metric key) of the task's headline metrics, from the run's model card.

    Classification: validation and test AUC, test accuracy and balanced accuracy;
    segmentation: validation and test mean Dice, test Dice per label and test HD95.
    """
    card = model_card(run_dir)
    dataset = card["dataset"]
    if dataset["task"] != "segmentation":
        return [
            ("val AUC", "val-auc"),
            ("test AUC", "test-auc"),
            ("test ACC", "test-accuracy"),
            ("test bal. ACC", "test-balanced-accuracy"),
        ]
    labels = dataset["classes"][1:]
    return [
        ("val Dice", "val-dice"),
        ("test Dice", "test-dice"),
        *((f"test Dice {name}", f"test-dice-{name}") for name in labels),
        ("test HD95", "test-hd95"),
    ]
