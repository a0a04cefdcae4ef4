"""``fedward model ...`` and ``fedward predict``: the evaluators' command group, with export, evaluate and predict.

Thin like the rest of the CLI: parse, call the evaluator's room, print. :data:`model_app`
is the ``fedward model`` group; ``export`` and ``evaluate`` are defined here, ``list`` and
``pull`` (a model registry) in :mod:`fedward.cli.model_registry_commands`; ``predict`` is a
top-level command wired by :mod:`fedward.cli.main`. Heavy imports stay inside the
commands so that ``fedward --help`` stays fast.

A model directory (``DIR``) is a folder written by ``fedward model pull`` or a run
directory; ``--round N`` picks ``models/round-NNN.safetensors`` of a run directory
instead of its best model.

``predict`` and ``evaluate`` look at the model's task once, where they start: segmentation
models go to :mod:`fedward.client.evaluator.seg_predict` and
:mod:`fedward.client.evaluator.seg_evaluate`, classifiers to
:mod:`fedward.client.evaluator.predict` and :mod:`fedward.client.evaluator.evaluate`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

if TYPE_CHECKING:
    from fedward.client.evaluator.evaluate import Evaluation
    from fedward.client.evaluator.loaded_model import LoadedModel
    from fedward.client.evaluator.predict import PredictionReport
    from fedward.client.evaluator.seg_evaluate import SegEvaluation
    from fedward.client.evaluator.seg_predict import SegPredictionReport

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
StrictOpt = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="Refuse images whose header names another modality than the model's, or whose channels or "
        "dimensionality differ (default: use them with a warning).",
    ),
]


ThresholdOpt = Annotated[
    float | None,
    typer.Option("--threshold", help="Decision threshold of every label (default: the model's operating point)."),
]


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

    Classifiers take scaled images, float32 (B, C, S, S) in [0, 1] (pixels / 255 at the
    training size), and output class probabilities (B, K). Segmentation models take
    normalised images or volume windows on the training grid and output label
    probabilities (B, K, *S); ONNX is for 2D models, the MONAI bundle writes label maps.
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
        console.print(f"checked against PyTorch: max |difference| {result.max_abs_diff:.2g} on random input")
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
        typer.Option(
            "--data",
            help="MedMNIST-layout .npz, or a hospital folder (labels.csv or class sub-folders); segmentation: "
            "an image + mask folder (BUSI layout) or a Decathlon folder.",
        ),
    ],
    split: Annotated[
        str, typer.Option("--split", help="val or test (folders: rows of that split, if assigned).")
    ] = "test",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for results.json and roc.png or overlays (default DIR/evaluations/<data>-<split>).",
        ),
    ] = None,
    round_: RoundOpt = None,
    resamples: Annotated[int, typer.Option("--resamples", min=1, help="Bootstrap resamples.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed.")] = 0,
    threshold: ThresholdOpt = None,
    overlays: Annotated[
        int, typer.Option("--overlays", min=0, help="Segmentation: overlay PNGs of this many cases.")
    ] = 4,
    device: DeviceOpt = "cpu",
    strict: StrictOpt = False,
    as_json: AsJson = False,
) -> None:
    """Classifiers: AUC, accuracy, sensitivity, specificity and F1 with 95% bootstrap intervals, and a ROC curve PNG.

    Classifiers: at the operating point the run chose on validation (else T 1, threshold 0.5)
    or at --threshold, with the ECE and Brier score of the calibrated probabilities.

    Segmentation models: Dice and HD95 per label and their means with 95% bootstrap
    intervals over cases, and overlay PNGs of a few cases (image content: they are
    written only into the output folder on this machine).

    Images of another modality or channels than the model's are warnings; with --strict an
    image folder's are left out (skipped, modality-mismatch; exit code 2 if none is left)
    and a folder data set (mask, Decathlon, DICOM series) of another kind is refused (2).
    """
    from fedward.client.evaluator.evaluate import default_out_dir, evaluate_model
    from fedward.client.evaluator.loaded_model import load_model
    from fedward.common.choices import Task
    from fedward.common.errors import ConfigError

    if split not in ("val", "test"):
        raise ConfigError(f"--split must be val or test; got {split!r}")
    loaded = load_model(model_dir, round_, device)
    target = out if out is not None else default_out_dir(loaded.model_dir, data, split)
    if loaded.model_dir.task is Task.SEGMENTATION:
        _evaluate_segmentation(loaded, data, split, target, (resamples, seed, overlays, strict), as_json)
        return
    result = evaluate_model(
        loaded, data, split=split, out_dir=target, resamples=resamples, seed=seed, threshold=threshold, strict=strict
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
    for name, value in (*result.metrics.items(), *result.calibration.items()):
        interval = boot.intervals.get(name)
        shown = "-" if interval is None else f"{interval[0]:.4f} - {interval[1]:.4f}"
        table.add_row(name, _fmt(value), shown)
    console.print(escape(result.model.describe()), highlight=False)
    console.print(f"operating point: {escape(result.operating.describe())}", highlight=False)
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
    _print_data_warnings([(p.file, p.message) for p in result.data.warnings])
    if result.roc_png is not None:
        console.print(f"ROC curve: {escape(str(result.roc_png))}", highlight=False)
    console.print(f"results: {escape(str(result.results_json))}", highlight=False)


def _print_data_warnings(warnings: list[tuple[str, str]], shown: int = 10) -> None:
    """The first ``shown`` images (or data set) that may not fit the model, one yellow line each."""
    if not warnings:
        return
    console.print(f"[yellow]{len(warnings)} evaluated images may not fit the model[/] (see results.json)")
    _print_warnings(list(warnings[:shown]))
    if len(warnings) > shown:
        console.print(f"... and {len(warnings) - shown} more", highlight=False)


def _evaluate_segmentation(
    loaded: LoadedModel, data: Path, split: str, out: Path, settings: tuple[int, int, int, bool], as_json: bool
) -> None:
    """Score a segmentation model and print the result; ``settings`` is (resamples, seed, overlays, strict)."""
    from fedward.client.evaluator.seg_evaluate import evaluate_segmentation

    resamples, seed, overlays, strict = settings
    result = evaluate_segmentation(
        loaded, data, split=split, out_dir=out, resamples=resamples, seed=seed, overlays=overlays, strict=strict
    )
    if as_json:
        console.print_json(json.dumps(result.to_json()))
    else:
        _print_seg_evaluation(result)


def _print_seg_evaluation(result: SegEvaluation) -> None:
    """Dice and HD95 per label with their intervals, and the files written."""
    table = Table(
        "label",
        "Dice",
        "95% CI",
        f"HD95 ({result.hd95_unit})",
        "95% CI",
        "cases",
        title=f"{len(result.data.masks)} cases of {escape(result.data.source)}",
    )
    for name, dice in result.dice.items():
        hd95 = result.hd95[name]
        table.add_row(
            escape(name),
            _fmt(dice.value),
            _interval(dice.ci95),
            _fmt(hd95.value, 2),
            _interval(hd95.ci95, 2),
            str(dice.cases),
        )
    console.print(escape(result.model.describe()), highlight=False)
    console.print(table)
    console.print(f"bootstrap: {result.resamples} percentile resamples of cases (seed {result.seed})", highlight=False)
    if result.data.problems:
        console.print(f"[yellow]{len(result.data.problems)} cases or files skipped[/] (see results.json)")
    for problem in result.data.warnings:
        _print_warnings([(result.data.source, problem.message)])
    for png in result.overlays:
        console.print(f"overlay: {escape(str(png))}", highlight=False)
    console.print(f"results: {escape(str(result.results_json))}", highlight=False)


def _interval(interval: tuple[float, float] | None, digits: int = 4) -> str:
    return "-" if interval is None else f"{interval[0]:.{digits}f} - {interval[1]:.{digits}f}"


def predict(
    model_dir: ModelDirArg,
    files: Annotated[
        list[Path],
        typer.Argument(
            help="DICOM, PNG/JPEG or .npz files (folders: every file inside); segmentation of volumes: NIfTI "
            "files or DICOM series folders."
        ),
    ],
    round_: RoundOpt = None,
    threshold: ThresholdOpt = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Segmentation: folder for the label maps (default DIR/predictions)."),
    ] = None,
    device: DeviceOpt = "cpu",
    strict: StrictOpt = False,
    as_json: AsJson = False,
) -> None:
    """Print each image's class probabilities, or write each input's label map; unreadable inputs get a reason.

    Classifiers: calibrated probabilities and the class decided at the operating point the
    run chose on validation (else temperature 1, threshold 0.5), or at --threshold.

    Segmentation models write a PNG mask per 2D image, a NIfTI label map per NIfTI volume
    (its shape and affine) and a DICOM SEG per DICOM series, and print each output and the
    volume of every label (mm³, or pixels for 2D images).

    An input whose DICOM header names another modality than the model was trained on, or
    whose channels (grey, colour) or dimensionality (2D, 3D) differ, is predicted with a
    warning; with --strict it is refused (reason modality-mismatch).

    Exit code 0 when every file was predicted, 1 when some could not be (or were refused),
    2 on bad arguments.
    """
    from fedward.client.evaluator.loaded_model import load_model
    from fedward.client.evaluator.predict import predict_files
    from fedward.common.choices import Task

    loaded = load_model(model_dir, round_, device)
    if loaded.model_dir.task is Task.SEGMENTATION:
        _predict_segmentation(loaded, files, out, as_json, strict)
    report = predict_files(loaded, files, threshold, strict=strict)
    if as_json:
        console.print_json(json.dumps(report.to_json()))
    else:
        _print_predictions(report)
    raise typer.Exit(1 if report.failed else 0)


def _print_predictions(report: PredictionReport) -> None:
    """The probabilities table, a warning line per image that may not fit the model, and the failures."""
    console.print(escape(report.model), highlight=False)
    if report.operating is not None:
        console.print(f"operating point: {escape(report.operating.describe())}", highlight=False)
    for note in report.notes:
        console.print(escape(note), highlight=False)
    table = Table(Column("file", overflow="fold"), *(escape(c) for c in report.classes), "predicted")
    for row in report.rows:
        if row.probabilities is not None:
            table.add_row(escape(row.file), *(f"{p:.4f}" for p in row.probabilities), escape(row.predicted or ""))
    if table.rows:
        console.print(table)
    _print_warnings([(row.file, row.warning) for row in report.warned])
    if report.failed:
        title = f"{len(report.failed)} files could not be predicted"
        failed = Table(Column("file", overflow="fold"), "reason", "detail", title=title)
        for row in report.failed:
            failed.add_row(escape(row.file), row.reason or "", escape(row.message or ""))
        err_console.print(failed)


def _print_warnings(warnings: list[tuple[str, str | None]]) -> None:
    """One yellow line per input that may not fit the model: ``warning: <input>: <reasons>``."""
    for where, warning in warnings:
        console.print(
            f"[yellow]warning:[/] {escape(where)}: {escape(warning or '')}; its result may be meaningless",
            highlight=False,
            soft_wrap=True,
        )


def _predict_segmentation(
    loaded: LoadedModel, files: list[Path], out: Path | None, as_json: bool, strict: bool
) -> NoReturn:
    """Write the label maps and print them (output and label volumes per case); always raises :class:`typer.Exit`."""
    from fedward.client.evaluator.seg_predict import predict_segmentations

    target = out if out is not None else loaded.model_dir.path / "predictions"
    report = predict_segmentations(loaded, files, target, strict=strict)
    if as_json:
        console.print_json(json.dumps(report.to_json()))
    else:
        _print_seg_predictions(report)
    raise typer.Exit(1 if report.failed else 0)


def _print_seg_predictions(report: SegPredictionReport) -> None:
    console.print(escape(report.model), highlight=False)
    for note in report.notes:
        console.print(escape(note), highlight=False)
    names = report.classes[1:]
    table = Table(Column("output", overflow="fold"), *(escape(n) for n in names), "unit")
    for case in report.cases:
        if case.output is not None:
            table.add_row(escape(str(case.output)), *(f"{case.volumes[n]:.1f}" for n in names), case.unit)
    if table.rows:
        console.print(table)
    _print_warnings([(case.input, case.warning) for case in report.warned])
    if report.failed:
        failed = Table(
            Column("input", overflow="fold"), "reason", "detail", title=f"{len(report.failed)} inputs not segmented"
        )
        for case in report.failed:
            failed.add_row(escape(case.input), case.reason or "", escape(case.message or ""))
        err_console.print(failed)
