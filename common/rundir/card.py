"""Model cards (Mitchell et al., "Model Cards for Model Reporting", FAT* 2019).

Every run directory gets ``model_card.json`` (for machines) and ``model_card.md`` (for
people): what was trained on which data at which hospitals, how the federation ran, how
well the selected model does, what privacy guarantee holds, library versions, and the
SHA-256 of the weights so an evaluator can prove a file is the one the run produced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedward.common.config import RunConfig
from fedward.common.data.catalog import lookup
from fedward.common.ml.networks import REGISTRY
from fedward.common.rundir.manifest import sha256_of
from fedward.common.rundir.recorder import SELECTION_METRIC, RunRecorder, atomic_write, now_iso
from fedward.common.version import library_versions

CARD_FORMAT = "fedward-model-card/1"
REPORTED = ("auc", "accuracy", "sensitivity", "specificity", "f1", "loss")


@dataclass(frozen=True, slots=True)
class HospitalEntry:
    """A hospital as the model card lists it (counts only).

    Attributes:
        name: hospital name.
        train_images: images it trained on.
        val_images: images in its local validation split.
        class_counts: training + validation images per class, if known (simulation).
        files_skipped: image files the hospital could not use (image folders).
    """

    name: str
    train_images: int
    val_images: int
    class_counts: tuple[int, ...] | None = None
    files_skipped: int = 0


def _metrics_at(rows: Sequence[Mapping[str, Any]], server_round: int | None) -> dict[str, Any]:
    for row in rows:
        if row.get("round") == server_round:
            keep = {"round": server_round}
            for split in ("val", "test"):
                for name in REPORTED:
                    key = f"{split}-{name}"
                    if row.get(key) is not None:
                        keep[key] = row[key]
            return keep
    return {}


def build_model_card(
    cfg: RunConfig,
    recorder: RunRecorder,
    *,
    status: str,
    reason: str = "",
    hospitals: Sequence[HospitalEntry] = (),
    parameters: int | None = None,
    test_images: int | None = None,
    privacy: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the model card of a finished (or stopped) run.

    Args:
        cfg: resolved run configuration.
        recorder: the run's recorder (rows, best round, files).
        status: ``completed``, ``failed`` or ``stopped``.
        reason: why the run stopped early, if it did.
        hospitals: the participating hospitals and their sizes.
        parameters: trainable parameter count of the model.
        test_images: size of the server-side test split, if evaluated.
        privacy: the privacy section (:meth:`fedward.server.app.dp_plan.PrivacyPlan.card`);
            ``None`` means no differential privacy.

    Returns:
        A JSON-serialisable dict (see ``CARD_FORMAT``).
    """
    rows = recorder.server_rows
    best_round = recorder.best_round if recorder.best_round is not None else recorder.last_round
    entry = lookup(cfg.data.dataset)
    weights: dict[str, Any] = {}
    if recorder.best_file.is_file():
        weights["best"] = {
            "file": "models/best.safetensors",
            "round": best_round,
            "sha256": sha256_of(recorder.best_file),
        }
    final_file = recorder.round_file(recorder.last_round)
    if recorder.last_round >= 0 and final_file.is_file():
        weights["final"] = {
            "file": f"models/{final_file.name}",
            "round": recorder.last_round,
            "sha256": sha256_of(final_file),
        }
    fed, train, strategy = cfg.federation, cfg.train, cfg.strategy
    strategy_settings = {k: v for k, v in cfg.to_mapping()["strategy"].items()}
    return {
        "format": CARD_FORMAT,
        "run": {
            "name": recorder.run_dir.name,
            "mode": recorder.mode,
            "status": status,
            "stop_reason": reason,
            "started": recorder.started,
            "finished": now_iso(),
            "wall_time_s": round(recorder.wall_seconds(), 1),
            "rounds_completed": max(recorder.last_round, 0),
            "rounds_planned": fed.rounds,
            "seed": cfg.run.seed,
            "resumed_after_rounds": [int(r["after-round"]) for r in recorder.resumed],
        },
        "dataset": {
            "name": cfg.data.dataset,
            "task": cfg.data.task.value if cfg.data.task else None,
            "classes": list(cfg.data.classes),
            "channels": cfg.data.channels,
            "image_size": cfg.data.image_size,
            "source": "MedMNIST v2 (Yang et al., Scientific Data 10, 41, 2023)"
            if entry
            else "user-provided MedMNIST-layout file",
            "license": entry.license if entry else "unknown",
            "test_images": test_images,
        },
        "hospitals": [asdict(h) for h in hospitals],
        "partition": {
            "method": fed.partition.value,
            "alpha": fed.alpha,
            "hospitals": fed.hospitals,
            "validation_fraction": cfg.data.val_fraction,
        },
        "model": {
            "name": cfg.model.name.value,
            "summary": REGISTRY[cfg.model.name].summary,
            "parameters": parameters,
            "init_weights": str(cfg.model.init_weights) if cfg.model.init_weights else None,
        },
        "training": {
            "strategy": strategy_settings,
            "rounds": fed.rounds,
            "local_epochs": train.local_epochs,
            "fraction_train": fed.fraction_train,
            "optimizer": train.optimizer.value,
            "learning_rate": train.lr,
            "schedule": train.schedule.value,
            "batch_size": train.batch_size,
            "class_weighting": train.class_weighting.value,
            "augmentation": cfg.data.augment,
        },
        "selection": {
            "metric": SELECTION_METRIC,
            "round": best_round,
            "value": None if recorder.best_round is None else recorder.best_value,
            "note": "the best round is chosen on validation data; test metrics never choose a model",
        },
        "metrics": {"best": _metrics_at(rows, best_round), "final": _metrics_at(rows, recorder.last_round)},
        "privacy": dict(privacy)
        if privacy is not None
        else {
            "differential_privacy": "none",
            "statement": "Model updates were not noised; no formal (epsilon, delta) guarantee holds. "
            "Images never left the hospitals.",
            "guarantees": [],
        },
        "weights": weights,
        "versions": library_versions(),
        "intended_use": "Research on federated training of medical-image classifiers. Not a medical device; "
        "not for clinical decisions.",
        "limitations": [
            f"Trained on {cfg.data.image_size} px images; performance on other resolutions or sources is unknown.",
            "Metrics come from the dataset's official test split; other hospitals' populations may differ.",
        ],
        "strategy_name": strategy.name.value,
    }


def render_markdown(card: Mapping[str, Any]) -> str:
    """The model card as Markdown for people."""
    run, data, model, training = card["run"], card["dataset"], card["model"], card["training"]
    best, final = card["metrics"]["best"], card["metrics"]["final"]
    lines = [
        f"# Model card: {run['name']}",
        "",
        f"**Status:** {run['status']}"
        + (f" ({run['stop_reason']})" if run["stop_reason"] else "")
        + f" after {run['rounds_completed']} of {run['rounds_planned']} rounds, "
        f"{run['wall_time_s']} s ({run['mode']})."
        + (
            " Resumed from its checkpoint after round(s) "
            + ", ".join(str(r) for r in run["resumed_after_rounds"])
            + " (on a CPU, resuming gives the same model, bit for bit, as an uninterrupted run with the seed)."
            if run.get("resumed_after_rounds")
            else ""
        ),
        "",
        "## Data",
        f"- Dataset: **{data['name']}** ({data['task']}, classes: {', '.join(data['classes'])}), "
        f"{data['image_size']} px, {data['channels']} channel(s). Source: {data['source']}; license {data['license']}.",
        f"- Partition: {card['partition']['method']}"
        + (f" (alpha {card['partition']['alpha']})" if card["partition"]["method"] != "iid" else "")
        + " over "
        f"{card['partition']['hospitals']} hospitals; {card['partition']['validation_fraction']:.0%} of each "
        "hospital's images held out for local validation.",
    ]
    if data.get("test_images"):
        lines.append(f"- Test split evaluated by the server: {data['test_images']} images.")
    if card["hospitals"]:
        lines += ["", "| hospital | training images | validation images | files skipped |", "|---|---:|---:|---:|"]
        lines += [
            f"| {h['name']} | {h['train_images']} | {h['val_images']} | {h.get('files_skipped', 0)} |"
            for h in card["hospitals"]
        ]
    lines += [
        "",
        "## Training",
        f"- Model: {model['name']} — {model['summary']}; {model['parameters']} parameters"
        + (f"; started from {model['init_weights']}" if model["init_weights"] else "; random initialisation")
        + ".",
        f"- Strategy: {card['strategy_name']}; {training['rounds']} rounds x {training['local_epochs']} local epochs; "
        f"{training['optimizer']} lr {training['learning_rate']} ({training['schedule']}), "
        f"batch {training['batch_size']}, "
        f"class weighting {training['class_weighting']}, augmentation {'on' if training['augmentation'] else 'off'}.",
        "",
        "## Results",
        f"Selected model: round {card['selection']['round']} by {card['selection']['metric']}"
        + (
            f" = {card['selection']['value']:.4f}"
            if card["selection"]["value"] is not None
            else " (no validation AUC reported; last round)"
        )
        + ". Test metrics never choose a model.",
        "",
        "| metric | selected round | final round |",
        "|---|---:|---:|",
    ]
    keys = [k for k in dict.fromkeys([*best, *final]) if k != "round"]
    for key in keys:
        lines.append(f"| {key} | {_fmt(best.get(key))} | {_fmt(final.get(key))} |")
    lines += [
        "",
        "## Privacy",
        f"- Differential privacy: {card['privacy']['differential_privacy']}. {card['privacy']['statement']}",
        "",
        "## Weights",
    ]
    for kind, info in card["weights"].items():
        lines.append(f"- {kind}: `{info['file']}` (round {info['round']}), sha256 `{info['sha256']}`")
    lines += ["", "## Versions", ", ".join(f"{k} {v}" for k, v in card["versions"].items()), ""]
    lines += ["## Intended use and limitations", f"- {card['intended_use']}"] + [f"- {x}" for x in card["limitations"]]
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def finish_run(
    cfg: RunConfig,
    recorder: RunRecorder,
    *,
    status: str,
    reason: str = "",
    hospitals: Sequence[HospitalEntry] = (),
    parameters: int | None = None,
    test_images: int | None = None,
    privacy: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Close a run: final status and plots, then the model card (JSON and Markdown).

    Arguments as :func:`build_model_card`. Returns the card.
    """
    recorder.finish(status, reason)
    card = build_model_card(
        cfg,
        recorder,
        status=status,
        reason=reason,
        hospitals=hospitals,
        parameters=parameters,
        test_images=test_images,
        privacy=privacy,
    )
    write_model_card(recorder.run_dir, card)
    return card


def write_model_card(run_dir: Path, card: Mapping[str, Any]) -> None:
    """Write ``model_card.json`` and ``model_card.md`` into ``run_dir``."""
    import json

    atomic_write(Path(run_dir) / "model_card.json", json.dumps(card, indent=2))
    atomic_write(Path(run_dir) / "model_card.md", render_markdown(card))
