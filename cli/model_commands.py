"""``fedward model ...`` and ``fedward predict``: the evaluators' command group, with export, evaluate and predict.

Thin like the rest of the CLI: parse, call the evaluator's room, print. :data:`model_app`
is the ``fedward model`` group; ``export`` and ``evaluate`` are defined here, ``list`` and
``pull`` (a model registry) in :mod:`fedward.cli.model_registry_commands`; ``predict`` is a
top-level command wired by :mod:`fedward.cli.main`. Heavy imports stay inside the
commands so that ``fedward --help`` stays fast.

A model directory (``DIR``) is a folder written by ``fedward model pull`` or a run
directory; ``--round N`` picks ``models/round-NNN.safetensors`` of a run directory
instead of its best model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

if TYPE_CHECKING:
    from fedward.client.evaluator.evaluate import Evaluation

__all__ = ["model_app", "predict"]

model_app = typer.Typer(help="Evaluators: pull, export, evaluate and use a global model.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)

ModelDirArg = Annotated[
    Path, typer.Argument(help="A model directory: a pulled model (fedward model pull) or a run directory.")
]
RoundOpt = Annotated[
    int | None,
    typer.Option("--round", min=0, help="Run directories: use the global model of this round instead of the best."),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda or auto.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@model_app.command("export")
def model_export(
    model_dir: ModelDirArg,
    fmt: Annotated[str, typer.Option("--format", "-f", help="onnx, torchscript or monai-bundle.")] = "onnx",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Output file (onnx, torchscript) or folder (monai-bundle); default DIR/export/..."),
    ] = None,
    round_: RoundOpt = None,
    as_json: AsJson = False,
) -> None:
    """Export a global model for deployment: ONNX, TorchScript or a MONAI bundle.

    The export takes scaled images, float32 (B, C, S, S) in [0, 1] (pixels / 255 at the
    training size), and outputs class probabilities (B, K).
    """
    from fedward.client.evaluator.export_formats import ExportFormat
    from fedward.client.evaluator.loaded_model import load_model
    from fedward.client.evaluator.model_export import export_model
    from fedward.common.choices import choose

    export_format = choose(fmt, ExportFormat, "--format")
    loaded = load_model(model_dir, round_)
    result = export_model(loaded, export_format, out)
    if as_json:
        doc = {
            "format": result.format.value,
            "path": str(result.path),
            "files": [str(f) for f in result.files],
            "exporter": result.exporter,
            "max_abs_diff": result.max_abs_diff,
            "model": loaded.model_dir.describe(),
        }
        console.print_json(json.dumps(doc))
        return
    console.print(escape(loaded.model_dir.describe()), highlight=False)
    console.print(f"{result.format.value} ({result.exporter}): [bold]{escape(str(result.path))}[/]", highlight=False)
    if result.max_abs_diff is not None:
        console.print(f"checked against PyTorch: max |difference| {result.max_abs_diff:.2g} on random images")
    elif result.format is ExportFormat.ONNX:
        console.print("not checked against PyTorch (install onnxruntime to check)")
    if result.format is ExportFormat.MONAI_BUNDLE:
        console.print(
            f"run it: cd {escape(str(result.path))} && python -m monai.bundle run "
            "--config_file configs/inference.json --input_dir IMAGES --output_dir RESULTS",
            highlight=False,
        )


@model_app.command("evaluate")
def model_evaluate(
    model_dir: ModelDirArg,
    data: Annotated[
        Path,
        typer.Option("--data", help="MedMNIST-layout .npz, or a hospital folder (labels.csv or class sub-folders)."),
    ],
    split: Annotated[
        str, typer.Option("--split", help="val or test (folders: rows of that split, if assigned).")
    ] = "test",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Folder for results.json and roc.png (default DIR/evaluations/<data>-<split>)."),
    ] = None,
    round_: RoundOpt = None,
    resamples: Annotated[int, typer.Option("--resamples", min=1, help="Bootstrap resamples.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed.")] = 0,
    threshold: Annotated[float, typer.Option("--threshold", help="Decision threshold (binary, multi-label).")] = 0.5,
    device: DeviceOpt = "cpu",
    as_json: AsJson = False,
) -> None:
    """AUC, accuracy, sensitivity, specificity and F1 with 95% bootstrap intervals, and a ROC curve PNG."""
    from fedward.client.evaluator.evaluate import default_out_dir, evaluate_model
    from fedward.client.evaluator.loaded_model import load_model
    from fedward.common.errors import ConfigError

    if split not in ("val", "test"):
        raise ConfigError(f"--split must be val or test; got {split!r}")
    loaded = load_model(model_dir, round_, device)
    target = out if out is not None else default_out_dir(loaded.model_dir, data, split)
    result = evaluate_model(
        loaded, data, split=split, out_dir=target, resamples=resamples, seed=seed, threshold=threshold
    )
    if as_json:
        console.print_json(json.dumps(result.to_json()))
        return
    _print_evaluation(result)


def _print_evaluation(result: Evaluation) -> None:
    """The metrics table, per-class AUC, bootstrap details and the files written."""
    boot = result.bootstrap
    table = Table(
        "metric",
        "value",
        f"{boot.confidence:.0%} CI",
        title=f"{len(result.data.dataset)} images of {escape(result.data.source)}",
    )
    for name, value in result.metrics.items():
        interval = boot.intervals.get(name)
        shown = "-" if interval is None else f"{interval[0]:.4f} - {interval[1]:.4f}"
        table.add_row(name, _fmt(value), shown)
    console.print(escape(result.model.describe()), highlight=False)
    console.print(table)
    if len(result.class_auc) > 1:
        console.print("AUC per class: " + ", ".join(f"{escape(c)} {_fmt(v)}" for c, v in result.class_auc.items()))
    console.print(
        f"bootstrap: {boot.resamples} percentile resamples (seed {boot.seed}); "
        f"{boot.skipped['auc']} skipped for AUC (a single class)",
        highlight=False,
    )
    if result.data.problems:
        console.print(f"[yellow]{len(result.data.problems)} files or rows skipped[/] (see results.json)")
    if result.roc_png is not None:
        console.print(f"ROC curve: {escape(str(result.roc_png))}", highlight=False)
    console.print(f"results: {escape(str(result.results_json))}", highlight=False)


def predict(
    model_dir: ModelDirArg,
    files: Annotated[list[Path], typer.Argument(help="DICOM, PNG/JPEG or .npz files (folders: every file inside).")],
    round_: RoundOpt = None,
    threshold: Annotated[float, typer.Option("--threshold", help="Decision threshold (binary, multi-label).")] = 0.5,
    device: DeviceOpt = "cpu",
    as_json: AsJson = False,
) -> None:
    """Print each image's class probabilities; files that cannot be read get a reason.

    Exit code 0 when every file was predicted, 1 when some could not be, 2 on bad arguments.
    """
    from fedward.client.evaluator.loaded_model import load_model
    from fedward.client.evaluator.predict import predict_files

    loaded = load_model(model_dir, round_, device)
    report = predict_files(loaded, files, threshold)
    if as_json:
        console.print_json(json.dumps(report.to_json()))
    else:
        console.print(escape(report.model), highlight=False)
        for note in report.notes:
            console.print(escape(note), highlight=False)
        table = Table(Column("file", overflow="fold"), *(escape(c) for c in report.classes), "predicted")
        for row in report.rows:
            if row.probabilities is not None:
                table.add_row(escape(row.file), *(f"{p:.4f}" for p in row.probabilities), escape(row.predicted or ""))
        if table.rows:
            console.print(table)
        if report.failed:
            failed = Table(
                Column("file", overflow="fold"),
                "reason",
                "detail",
                title=f"{len(report.failed)} files could not be predicted",
            )
            for row in report.failed:
                failed.add_row(escape(row.file), row.reason or "", escape(row.message or ""))
            err_console.print(failed)
    raise typer.Exit(1 if report.failed else 0)
