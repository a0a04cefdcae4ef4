"""Segmentation evaluation: Dice and HD95 per label with bootstrap intervals over cases, overlays, results.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.model_dirs import Threshold, write_seg_run
from fixtures.seg_folders import busi_subset, decathlon_subset
from PIL import Image
from typer.testing import CliRunner

from fedward.client.evaluator.labelled_masks import load_labelled_masks
from fedward.client.evaluator.loaded_model import LoadedModel, load_model
from fedward.client.evaluator.overlay import FILL_ALPHA, PALETTE, draw_overlay, overlay_slice
from fedward.client.evaluator.seg_evaluate import MEAN, evaluate_segmentation
from fedward.common.errors import DataError
from fedward.common.ml.segment import segment
from fedward.common.ml.segscores import bootstrap_interval, per_image_dice

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_mask_folder_gives_dice_and_hd95_per_label_with_intervals(seg2d: LoadedModel, tmp_path: Path) -> None:
    folder = busi_subset(tmp_path / "busi", splits=False)  # six cases, one of them without a lesion
    result = evaluate_segmentation(seg2d, folder, out_dir=tmp_path / "eval", resamples=200, seed=3, overlays=2)
    masks = result.data.masks
    assert result.data.split == "all" and len(masks) == 6 and result.hd95_unit == "px"
    with torch.no_grad():
        predicted = segment(seg2d.network, torch.from_numpy(masks.images), 2).argmax(dim=1)
    dice = per_image_dice(predicted, torch.from_numpy(masks.masks), 1)[:, 0]
    lesion = result.dice["lesion"]
    assert lesion.cases == 5  # the normal case's empty truth leaves Dice undefined
    assert lesion.value == pytest.approx(float(np.nanmean(dice)))
    assert lesion.ci95 == bootstrap_interval(dice, samples=200, seed=3)
    assert result.dice[MEAN] == lesion  # one label: the mean is that label
    doc = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert doc["metrics"]["dice"]["lesion"] == {"value": lesion.value, "ci95": list(lesion.ci95 or ()), "cases": 5}
    assert set(doc["metrics"]["hd95"]) == {MEAN, "lesion"} and doc["hd95_unit"] == "px"
    assert doc["bootstrap"] == {
        "method": "percentile",
        "unit": "case",
        "resamples": 200,
        "confidence": 0.95,
        "seed": 3,
    }
    assert [Path(p).name for p in doc["overlays"]] == ["overlay-000.png", "overlay-001.png"]
    assert all(Path(p).read_bytes().startswith(PNG_MAGIC) for p in doc["overlays"])


def test_decathlon_folder_scores_every_label_in_mm(tmp_path: Path) -> None:
    folder = decathlon_subset(tmp_path / "hippocampus", splits=False)
    model = load_model(write_seg_run(tmp_path / "run", spatial_dims=3))
    model.network = Threshold(0.0, 1.0)  # z-scored MR: a label map with both structures in every case
    result = evaluate_segmentation(model, folder, resamples=100, seed=0)
    assert result.hd95_unit == "mm" and result.results_json is None and result.overlays == ()
    assert set(result.dice) == {MEAN, "anterior", "posterior"} == set(result.hd95)
    for name in ("anterior", "posterior"):
        dice, hd95 = result.dice[name], result.hd95[name]
        assert dice.cases == 4 and dice.value is not None and 0.0 < dice.value < 1.0
        assert dice.ci95 is not None and dice.ci95[0] <= dice.value <= dice.ci95[1]
        assert hd95.value is not None and hd95.value > 0 and hd95.ci95 is not None
    means = [result.dice[n].value or 0.0 for n in ("anterior", "posterior")]
    assert result.dice[MEAN].value == pytest.approx(sum(means) / 2)  # both labels defined in every case


def test_labelled_masks_refuse_what_the_model_cannot_score(seg2d: LoadedModel, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_labelled_masks(tmp_path / "missing", seg2d.model_dir)
    busi = busi_subset(tmp_path / "busi")  # with splits.csv
    assert load_labelled_masks(busi, seg2d.model_dir, "val").split == "val"
    hippocampus = decathlon_subset(tmp_path / "hippocampus")
    with pytest.raises(DataError, match="3D segmentation data"):
        load_labelled_masks(hippocampus, seg2d.model_dir)
    other = load_model(write_seg_run(tmp_path / "run", classes=("background", "tumour")))
    with pytest.raises(DataError, match="model's labels are background, tumour"):
        load_labelled_masks(busi, other.model_dir, "val")


def test_overlay_fills_predictions_and_outlines_truth() -> None:
    image = np.linspace(0, 1, 16 * 16, dtype=np.float32).reshape(1, 16, 16)
    truth = np.zeros((16, 16), np.uint8)
    truth[4:12, 4:12] = 1
    predicted = np.zeros_like(truth)
    predicted[0:3, 0:3] = 1
    rgb = draw_overlay(*overlay_slice(image, truth, predicted))
    scale = 16  # 16 px enlarged to 256
    assert rgb.shape == (256, 256, 3)
    np.testing.assert_array_equal(rgb[4 * scale, 8 * scale], PALETTE[0])  # the truth's outline, opaque
    grey = rgb[8 * scale, 8 * scale]
    assert grey[0] == grey[1] == grey[2]  # inside the truth: the image only
    grey_level = 17.0  # pixel (1, 1) is the 17th of 256 evenly spaced values: grey 17 of 255
    expected = np.rint((1 - FILL_ALPHA) * grey_level + FILL_ALPHA * PALETTE[0])
    np.testing.assert_array_equal(rgb[scale, scale], expected)  # predicted: the colour blended over the image
    volume = np.zeros((1, 8, 8, 6), np.float32)
    labels = np.zeros((8, 8, 6), np.uint8)
    labels[2:5, 2:5, 4] = 1
    plane, shown, _ = overlay_slice(volume, labels, np.zeros_like(labels))
    assert plane.shape == (8, 8) and shown.sum() == 9  # the axial slice with the most truth


def test_cli_evaluate_prints_json_and_a_table(seg2d: LoadedModel, tmp_path: Path) -> None:
    from fedward.cli.main import app

    folder = busi_subset(tmp_path / "busi", splits=False)
    out = tmp_path / "out"
    args = ["model", "evaluate", str(seg2d.model_dir.path), "--data", str(folder), "--resamples", "50"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--overlays", "1", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["task"] == "segmentation" and doc["cases"] == 6
    assert set(doc["metrics"]["dice"]["lesion"]) == {"value", "ci95", "cases"}
    assert (out / "results.json").is_file() and (out / "overlay-000.png").is_file()
    assert not (out / "overlay-001.png").exists()
    assert Image.open(out / "overlay-000.png").mode == "RGB"
    table = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert table.exit_code == 0, table.output
    assert "Dice" in table.output and "HD95 (px)" in table.output and "lesion" in table.output
