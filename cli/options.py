"""Command-line options shared by the run commands, and how they become config overrides.

Every option defaults to ``None`` ("not given"): only options the user typed override the
TOML file (``--config``), which overrides the built-in defaults. ``--set section.key=value``
reaches any config field without a dedicated flag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from fedward.common.config import parse_sets

# (option name, config key) for every dedicated flag.
FLAG_KEYS: dict[str, str] = {
    "dataset": "data.dataset",
    "data_dir": "data.data-dir",
    "image_size": "data.image-size",
    "augment": "data.augment",
    "val_fraction": "data.val-fraction",
    "frames": "data.frames",
    "model": "model.name",
    "init_weights": "model.init-weights",
    "local_epochs": "train.local-epochs",
    "batch_size": "train.batch-size",
    "optimizer": "train.optimizer",
    "lr": "train.lr",
    "schedule": "train.schedule",
    "class_weighting": "train.class-weighting",
    "device": "train.device",
    "hospitals": "federation.hospitals",
    "partition": "federation.partition",
    "alpha": "federation.alpha",
    "rounds": "federation.rounds",
    "fraction_train": "federation.fraction-train",
    "round_timeout": "federation.round-timeout",
    "strategy": "strategy.name",
    "proximal_mu": "strategy.proximal-mu",
    "client_cpus": "simulation.client-cpus",
    "client_gpus": "simulation.client-gpus",
    "seed": "run.seed",
    "name": "run.name",
    "output_dir": "run.output-dir",
}

DATA = "Data"
TRAIN = "Training"
FED = "Federation"
RUN = "Run"

ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML run config; flags override it.", rich_help_panel=RUN),
]
Sets = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override any config key: --set train.weight-decay=0.001 (repeatable).",
        rich_help_panel=RUN,
    ),
]
Dataset = Annotated[
    str | None,
    typer.Option(
        help="MedMNIST 2D dataset name (default pneumoniamnist), the stem of a MedMNIST-layout .npz, or a "
        "folder data set in --data-dir (image + mask folders like busi, Decathlon like hippocampus, DICOM + SEG).",
        rich_help_panel=DATA,
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option(
        help="Folder holding <dataset>.npz or the <dataset> folder (default $FEDWARD_DATA_DIR, else ~/.fedward/data).",
        rich_help_panel=DATA,
    ),
]
ImageSize = Annotated[
    int | None, typer.Option(help="Model input size in pixels: 28, 64, 128 or 224.", rich_help_panel=DATA)
]
Augment = Annotated[
    bool | None,
    typer.Option("--augment/--no-augment", help="Random flip, rotation and zoom while training.", rich_help_panel=DATA),
]
HospitalDirs = Annotated[
    list[Path] | None,
    typer.Option(
        "--hospital-dir",
        help="Simulate over hospital folders (DICOM/PNG/JPEG with labels.csv, or .npz): one per hospital, repeat it.",
        rich_help_panel=DATA,
    ),
]
Frames = Annotated[
    str | None,
    typer.Option(help="Multi-frame images: 'middle' frame or 'all' frames as samples.", rich_help_panel=DATA),
]
ValFraction = Annotated[
    float | None,
    typer.Option(help="Share of each hospital's images held out for local validation.", rich_help_panel=DATA),
]
Model = Annotated[
    str | None,
    typer.Option(
        help="Classifiers: smallcnn (default), tanhcnn (for DP-SGD), resnet18, densenet121, efficientnet-b0, "
        "unet-encoder "
        "(starts from a unet run's weights with --init-weights), unet-multitask (classes learnt with lesion "
        "masks: --set data.target=class+mask); "
        "segmentation (2D/3D): unet, vnet, segresnet, attention-unet.",
        rich_help_panel=TRAIN,
    ),
]
InitWeights = Annotated[
    Path | None,
    typer.Option(
        help="Start from these weights (.safetensors or .pt); mismatched layers stay fresh.",
        rich_help_panel=TRAIN,
    ),
]
LocalEpochs = Annotated[int | None, typer.Option(help="Epochs each hospital trains per round.", rich_help_panel=TRAIN)]
BatchSize = Annotated[int | None, typer.Option(help="Images per step.", rich_help_panel=TRAIN)]
Optimizer = Annotated[str | None, typer.Option(help="adamw or sgd.", rich_help_panel=TRAIN)]
Lr = Annotated[float | None, typer.Option(help="Base learning rate.", rich_help_panel=TRAIN)]
ScheduleOpt = Annotated[str | None, typer.Option("--schedule", help="cosine or constant.", rich_help_panel=TRAIN)]
ClassWeightingOpt = Annotated[
    str | None, typer.Option("--class-weighting", help="balanced, logit-adjusted or none.", rich_help_panel=TRAIN)
]
Device = Annotated[str | None, typer.Option(help="auto (CUDA when available), cpu or cuda.", rich_help_panel=TRAIN)]
Hospitals = Annotated[int | None, typer.Option(help="Number of hospitals.", rich_help_panel=FED)]
PartitionOpt = Annotated[
    str | None,
    typer.Option("--partition", help="iid, dirichlet (label skew) or quantity (size skew).", rich_help_panel=FED),
]
Alpha = Annotated[
    float | None, typer.Option(help="Dirichlet concentration; smaller is more skewed.", rich_help_panel=FED)
]
Rounds = Annotated[int | None, typer.Option(help="Federated rounds.", rich_help_panel=FED)]
FractionTrain = Annotated[float | None, typer.Option(help="Share of hospitals sampled per round.", rich_help_panel=FED)]
RoundTimeout = Annotated[
    float | None, typer.Option(help="Seconds to wait for hospitals each round.", rich_help_panel=FED)
]
StrategyOpt = Annotated[
    str | None,
    typer.Option(
        "--strategy",
        help="fedavg, fedprox, fedadam, fedyogi, fedavgm, fedmedian, fedtrimmedavg or krum.",
        rich_help_panel=FED,
    ),
]
ProximalMu = Annotated[float | None, typer.Option(help="FedProx proximal weight mu.", rich_help_panel=FED)]
ClientCpus = Annotated[float | None, typer.Option(help="CPU cores per simulated hospital.", rich_help_panel=FED)]
ClientGpus = Annotated[
    float | None, typer.Option(help="GPU fraction per simulated hospital (e.g. 0.25).", rich_help_panel=FED)
]
Seed = Annotated[int | None, typer.Option(help="Seed of every random choice.", rich_help_panel=RUN)]
Name = Annotated[str | None, typer.Option(help="Run name (part of the run directory's name).", rich_help_panel=RUN)]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.", rich_help_panel=RUN)]
OutputDir = Annotated[
    Path | None, typer.Option(help="Parent folder of run directories (default ./runs).", rich_help_panel=RUN)
]
Resume = Annotated[
    Path | None,
    typer.Option(
        "--resume",
        help="Continue an interrupted run from its checkpoint (simulate only; its own config.toml applies).",
        rich_help_panel=RUN,
        file_okay=False,
    ),
]


def overrides_from(flags: dict[str, Any], sets: list[str] | None) -> dict[str, Any]:
    """Config overrides (dotted keys) from the flags the user gave and ``--set`` pairs.

    Raises:
        ConfigError: if a ``--set`` item is not ``section.key=value``.
    """
    out: dict[str, Any] = {}
    for flag, value in flags.items():
        if value is not None and flag in FLAG_KEYS:
            out[FLAG_KEYS[flag]] = str(value) if isinstance(value, Path) else value
    if flags.get("hospital_dirs"):
        dirs = [str(d) for d in flags["hospital_dirs"]]
        out["data.hospital-dirs"] = dirs
        out.setdefault("federation.hospitals", len(dirs))
    out.update(parse_sets(sets or []))
    return out
