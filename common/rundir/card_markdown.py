"""The model card as Markdown for people: ``model_card.md``, rendered from ``model_card.json``.

One function per section (status, data with the images the model takes, training,
results, privacy, weights, versions); :func:`render_markdown` joins them. Everything
shown comes from the JSON card, so the two files never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Card = Mapping[str, Any]


def render_markdown(card: Card) -> str:
    """The model card as Markdown (a ``fedward-model-card/1`` JSON card in, text out)."""
    parts = (_status, _data, _training, _results, _operating_point, _privacy_and_weights, _versions)
    lines = [f"# Model card: {card['run']['name']}", ""]
    for part in parts:
        lines += part(card)
    return "\n".join(lines) + "\n"


def _status(card: Card) -> list[str]:
    run = card["run"]
    text = (
        f"**Status:** {run['status']}"
        + (f" ({run['stop_reason']})" if run["stop_reason"] else "")
        + f" after {run['rounds_completed']} of {run['rounds_planned']} rounds, {run['wall_time_s']} s ({run['mode']})."
    )
    if run.get("resumed_after_rounds"):
        text += (
            " Resumed from its checkpoint after round(s) "
            + ", ".join(str(r) for r in run["resumed_after_rounds"])
            + " (on a CPU, resuming gives the same model, bit for bit, as an uninterrupted run with the seed)."
        )
    return [text, ""]


def _data(card: Card) -> list[str]:
    data, partition = card["dataset"], card["partition"]
    alpha = f" (alpha {partition['alpha']})" if partition["method"] != "iid" else ""
    lines = [
        "## Data",
        f"- Dataset: **{data['name']}** ({data['task']}, classes: {', '.join(data['classes'])}), "
        f"{data['image_size']} px, {data['channels']} channel(s). Source: {data['source']}; license {data['license']}.",
        *_images(data),
        f"- Partition: {partition['method']}{alpha} over {partition['hospitals']} hospitals; "
        f"{partition['validation_fraction']:.0%} of each hospital's images held out for local validation.",
    ]
    if data.get("test_images"):
        lines.append(f"- Test split evaluated by the server: {data['test_images']} images.")
    if card["hospitals"]:
        lines += [
            "",
            "| hospital | training images | validation images | files skipped | fedward | device |",
            "|---|---:|---:|---:|---|---|",
        ]
        lines += [
            f"| {h['name']} | {h['train_images']} | {h['val_images']} | {h.get('files_skipped', 0)} "
            f"| {h.get('fedward') or '-'} | {h.get('device') or '-'} |"
            for h in card["hospitals"]
        ]
    return [*lines, ""]


def _images(data: Card) -> list[str]:
    """What images the model takes (modality, 2D or 3D, channels) and how they are preprocessed."""
    modality = data.get("modality")
    dims = int(data.get("spatial_dims", 2))
    kind = "3D volumes" if dims == 3 else "2D images"
    colour = "colour" if data["channels"] == 3 else "grey"
    named = f"**{modality}** (DICOM Modality)" if modality else "modality not recorded"
    lines = [
        f"- Images the model takes: {named}, {kind}, {colour} ({data['channels']} channel(s)). "
        "`fedward predict`, `fedward model evaluate` and `fedward client check-data` warn about images "
        "whose header names another modality or whose channels or dimensions differ, and refuse them "
        "with `--strict`."
    ]
    steps = data.get("preprocessing") or {}
    shown = [f"{key.replace('_', ' ')} {_listed(value)}" for key, value in steps.items() if value is not None]
    if shown:
        lines.append(f"- Preprocessing: {'; '.join(shown)}.")
    return lines


def _listed(value: Any) -> str:
    return " x ".join(str(v) for v in value) if isinstance(value, list) else str(value)


def _training(card: Card) -> list[str]:
    model, training = card["model"], card["training"]
    start = f"; started from {model['init_weights']}" if model["init_weights"] else "; random initialisation"
    augmentation = "on" if training["augmentation"] else "off"
    return [
        "## Training",
        f"- Model: {model['name']} — {model['summary']}; {model['parameters']} parameters{start}.",
        f"- Strategy: {card['strategy_name']}; {training['rounds']} rounds x {training['local_epochs']} local epochs; "
        f"{training['optimizer']} lr {training['learning_rate']} ({training['schedule']}), "
        f"batch {training['batch_size']}, "
        f"class weighting {training['class_weighting']}, augmentation {augmentation}.",
        *_auxiliary_masks(training),
        "",
    ]


def _auxiliary_masks(training: Card) -> list[str]:
    """A line for a classification learnt with lesion masks (cards written before 0.2 have no ``target``)."""
    if training.get("target") != "class+mask":
        return []
    return [
        f"- Learnt from each image's class and its lesion mask: the class loss plus {training['seg_loss']} on "
        "the masks (an auxiliary target); the released model classifies and needs no mask."
    ]


def _results(card: Card) -> list[str]:
    selection = card["selection"]
    best, final = card["metrics"]["best"], card["metrics"]["final"]
    value = (
        f" = {selection['value']:.4f}"
        if selection["value"] is not None
        else " (no validation AUC reported; last round)"
    )
    chosen = f"Selected model: round {selection['round']} by {selection['metric']}{value}."
    if selection.get("validation"):
        chosen += f" Validation: {selection['validation']}."
    lines = [
        "## Results",
        f"{chosen} Test metrics never choose a model.",
        "",
        "| metric | selected round | final round |",
        "|---|---:|---:|",
    ]
    keys = [k for k in dict.fromkeys([*best, *final]) if k != "round"]
    lines += [f"| {key} | {_fmt(best.get(key))} | {_fmt(final.get(key))} |" for key in keys]
    return [*lines, ""]


def _operating_point(card: Card) -> list[str]:
    point = card.get("operating_point")
    if not isinstance(point, dict):
        return []
    thresholds = ", ".join(f"{t:.4f}" for t in point["thresholds"]) or "arg-max"
    lines = [
        "## Operating point",
        f"- Decision threshold (calibrated probability): {thresholds}; rule {point['rule']}"
        + (f", target {point['target']:g}" if point.get("target") is not None else "")
        + f"; temperature {point['temperature']:.4g}.",
        f"- {point['note']}",
    ]
    validation = point.get("validation") or {}
    if validation:
        lines.append("- Validation at this point: " + ", ".join(f"{k} {_fmt(v)}" for k, v in validation.items()) + ".")
    return [*lines, ""]


def _privacy_and_weights(card: Card) -> list[str]:
    privacy = card["privacy"]
    lines = ["## Privacy", f"- Differential privacy: {privacy['differential_privacy']}. {privacy['statement']}", ""]
    lines.append("## Weights")
    for kind, info in card["weights"].items():
        lines.append(f"- {kind}: `{info['file']}` (round {info['round']}), sha256 `{info['sha256']}`")
    return [*lines, ""]


def _versions(card: Card) -> list[str]:
    return [
        "## Versions",
        ", ".join(f"{k} {v}" for k, v in card["versions"].items()),
        "",
        "## Intended use and limitations",
        f"- {card['intended_use']}",
        *(f"- {x}" for x in card["limitations"]),
    ]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)
