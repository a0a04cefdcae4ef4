"""``fedward data describe|export``: how a data set splits across hospitals, and each hospital's share as a folder.

Registered on the top-level command (with its error handling) by :mod:`fedward.cli.main`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fedward.cli import options as o
from fedward.common.config import load_config
from fedward.common.errors import ConfigError

data_app = typer.Typer(help="Inspect, split and export datasets.", no_args_is_help=True)
console = Console()


@data_app.command("describe")
def data_describe(
    config: o.ConfigFile = None,
    sets: o.Sets = None,
    dataset: o.Dataset = None,
    data_dir: o.DataDir = None,
    val_fraction: o.ValFraction = None,
    hospitals: o.Hospitals = None,
    partition: o.PartitionOpt = None,
    alpha: o.Alpha = None,
    seed: o.Seed = None,
) -> None:
    """Show how the training split would be divided across hospitals (class table)."""
    cfg = load_config(config, o.overrides_from(locals(), sets))
    from fedward.simulation.driver import plan_hospitals, resolve_dataset
    from fedward.simulation.partition import describe_table, label_skew, summarize_plan

    resolved, found = resolve_dataset(cfg)
    plan = plan_hospitals(resolved)
    labels = found.splits["train"].labels
    classes = found.strata
    console.print(describe_table(summarize_plan(plan, labels, len(classes)), classes))
    sizes = {split: len(arrays) for split, arrays in found.splits.items()}
    console.print(
        f"{resolved.cfg.data.dataset} ({resolved.schema.task.value}) from {found.path}: "
        + ", ".join(f"{k} {v}" for k, v in sizes.items())
        + "; label skew (mean total-variation distance to the pooled class mix) "
        + f"{label_skew(plan, labels, len(classes)):.3f}"
    )


@data_app.command("export")
def data_export(
    out: Annotated[Path, typer.Option("--out", help="Folder to create, one sub-folder per hospital.")],
    compression: Annotated[
        str, typer.Option(help="Pixel data encoding of MedMNIST exports: none, rle or jpeg2000.")
    ] = "none",
    include_test: Annotated[
        bool, typer.Option("--include-test", help="Also write the test split to <out>/test.")
    ] = False,
    config: o.ConfigFile = None,
    sets: o.Sets = None,
    dataset: o.Dataset = None,
    data_dir: o.DataDir = None,
    val_fraction: o.ValFraction = None,
    hospitals: o.Hospitals = None,
    partition: o.PartitionOpt = None,
    alpha: o.Alpha = None,
    seed: o.Seed = None,
) -> None:
    """Write each simulated hospital's share of a dataset as the folder a deployed hospital holds.

    MedMNIST: DICOM images with labels.csv. Decathlon NIfTI (3D segmentation): one DICOM MR or
    CT series with a DICOM SEG per case. Image + mask folders (BUSI): the image and mask files
    with splits.csv. The hospitals get exactly the cases a simulation with the same settings
    gives them; read with the same data settings, run.seed and data.val-fraction, they train
    and validate on the same arrays.
    """
    flags = {k: v for k, v in locals().items() if k not in ("out", "compression", "include_test")}
    cfg = load_config(config, o.overrides_from(flags, sets))
    from fedward.common.choices import choose
    from fedward.simulation.dicom_export import Compression, export_plan
    from fedward.simulation.driver import plan_hospitals, resolve_dataset
    from fedward.simulation.mask_export import export_mask_folders
    from fedward.simulation.seg_export import ExportedFolder, ExportKind, array_splits, deployment_settings, export_kind
    from fedward.simulation.volume_export import export_volumes

    encoding = choose(compression, Compression, "--compression")
    resolved, found = resolve_dataset(cfg)
    plan = plan_hospitals(resolved)
    kind = export_kind(found)
    if kind is not ExportKind.CLASSIFICATION and encoding is not Compression.NONE:
        raise ConfigError("--compression is for MedMNIST exports; series and image files are written as they are")
    match kind:
        case ExportKind.CLASSIFICATION:
            paths = export_plan(out, array_splits(found), resolved.schema, plan, encoding, include_test)
            what = f"DICOM files ({encoding.value}) and labels.csv"
            folders = [ExportedFolder(p, {what: sum(1 for _ in (p / "images").iterdir())}) for p in paths]
        case ExportKind.VOLUMES:
            folders = export_volumes(out, found, resolved.cfg, plan, include_test)
        case ExportKind.MASK_FOLDER:
            folders = export_mask_folders(out, found, resolved.cfg, plan, include_test)
    for folder in folders:
        console.print(folder.describe(), highlight=False)
    console.print(f"hospitals read them with {deployment_settings(kind, found, resolved.cfg)}", highlight=False)
