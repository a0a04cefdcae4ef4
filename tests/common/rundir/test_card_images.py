"""The Markdown model card states the images the model takes: modality, 2D or 3D, channels and preprocessing."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from fixtures.model_dirs import write_run, write_seg_run

from fedward.common.rundir.card import render_markdown


def test_the_card_names_the_modality_dimensions_and_preprocessing(tmp_path: Path) -> None:
    markdown = (write_run(tmp_path / "run-chest") / "model_card.md").read_text()
    assert "- Images the model takes: **DX** (DICOM Modality), 2D images, grey (1 channel(s))." in markdown
    assert "refuse them with `--strict`" in markdown
    assert "- Preprocessing: resize 28 x 28 px (MONAI Resize); intensity x / 255." in markdown
    volumes = (write_seg_run(tmp_path / "run-mr", spatial_dims=3) / "model_card.md").read_text()
    assert "**MR** (DICOM Modality), 3D volumes, grey" in volumes and "grid 48 x 64 x 48; orientation RAS" in volumes


def test_cards_without_a_modality_still_render(tmp_path: Path) -> None:
    card = json.loads((write_run(tmp_path / "run-old", modality=None) / "model_card.json").read_text())
    assert "modality not recorded, 2D images" in render_markdown(card)
    older = copy.deepcopy(card)
    for key in ("modality", "spatial_dims", "preprocessing"):
        older["dataset"].pop(key)
    markdown = render_markdown(older)
    assert "modality not recorded, 2D images" in markdown and "Preprocessing" not in markdown


def test_a_classification_learnt_with_lesion_masks_says_so(tmp_path: Path) -> None:
    card = json.loads((write_run(tmp_path / "run-busi") / "model_card.json").read_text())
    assert card["training"]["target"] == "auto" and "lesion mask" not in render_markdown(card)
    card["training"]["target"] = "class+mask"
    assert "the class loss plus dice-ce on the masks" in render_markdown(card)
    card["training"].pop("target")  # cards written before 0.2.0
    assert "lesion mask" not in render_markdown(card)
