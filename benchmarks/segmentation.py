"""Federated vs centralized segmentation: BUSI breast-ultrasound lesions (2D U-Net) and MRI hippocampus (3D U-Net).

For each task the centralized baseline (all hospitals' images pooled) and the simulated
federation train the same network from the same initial weights for the same epochs; the
script prints the selected models' validation and test Dice per label, HD95 (BUSI: in
pixels of the original image, which has no physical spacing; hippocampus: mm), wall times
and the ratios federated / centralized. Selection is on federated validation Dice; test
figures never choose a model.

Usage::

    python benchmarks/segmentation.py --data-dir ../shared/data --seed 0            # both tasks
    python benchmarks/segmentation.py --data-dir ../shared/data --task hippocampus  # one of them

Presets (override any key with ``--set section.key=value``):

* ``busi``: lesion masks (``data.target = mask``), ultrasound, 128 px, ``unet``, 5 hospitals,
  Dirichlet alpha 0.5 over benign / malignant / normal, 40 rounds x 5 local epochs, batch 16.
* ``hippocampus``: Decathlon Task04, 3D ``unet`` on the 48 x 64 x 48 grid at 1 mm, 4 hospitals
  (IID), 30 rounds x 4 local epochs, batch 2.
"""

from __future__ import annotations

import argparse

from bench_config import build_config, parser
from federated_vs_centralized import compare
from rich.console import Console

PRESETS: dict[str, dict[str, object]] = {
    "busi": {
        "data.dataset": "busi",
        "data.target": "mask",
        "data.modality": "US",
        "data.image-size": 128,
        "model.name": "unet",
        "federation.hospitals": 5,
        "federation.partition": "dirichlet",
        "federation.rounds": 40,
        "train.local-epochs": 5,
        "train.batch-size": 16,
        "train.lr": 0.003,
        "run.name": "busi-lesion-",
    },
    "hippocampus": {
        "data.dataset": "hippocampus",
        "data.volume-size": [48, 64, 48],
        "model.name": "unet",
        "federation.hospitals": 4,
        "federation.partition": "iid",
        "federation.rounds": 30,
        "train.local-epochs": 4,
        "train.batch-size": 2,
        "train.lr": 0.003,
        "run.name": "hippocampus-",
    },
}


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--task", choices=[*PRESETS, "both"], default="both")
    args = cli.parse_args()
    console = Console()
    for task in PRESETS if args.task == "both" else [args.task]:
        preset = dict(PRESETS[task])
        explicit = _explicit_flags(cli, args)
        cfg = build_config(args, **{k: v for k, v in preset.items() if k not in explicit})
        console.rule(task)
        compare(cfg, console)


def _explicit_flags(cli: argparse.ArgumentParser, args: argparse.Namespace) -> set[str]:
    """Config keys the user set on the command line (they win over the preset)."""
    keys = {"hospitals": "federation.hospitals", "partition": "federation.partition", "rounds": "federation.rounds"}
    return {key for flag, key in keys.items() if getattr(args, flag) != cli.get_default(flag)}


if __name__ == "__main__":
    main()
