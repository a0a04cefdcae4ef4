"""Model directories shared by the evaluator's tests: segmentation (random weights) and operating points."""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixtures.model_dirs import write_run, write_seg_run
from fixtures.synthetic import write_npz

from fedward.client.evaluator.loaded_model import LoadedModel, load_model
from fedward.common.data.images import to_model_size

TEMPERATURE = 2.0
"""Temperature of the ``calibrated`` model's operating point."""


@pytest.fixture(scope="module")
def seg2d(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """A 2D U-Net for BUSI-like images (background, lesion) on a 64 px grid."""
    return load_model(write_seg_run(tmp_path_factory.mktemp("runs") / "run-seg2d", seed=1))


@pytest.fixture(scope="module")
def seg3d(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """A 3D U-Net for Hippocampus-like MR volumes (background, anterior, posterior) on a 48 x 64 x 48 grid."""
    return load_model(write_seg_run(tmp_path_factory.mktemp("runs") / "run-seg3d", spatial_dims=3, seed=2))


def set_operating_point(model_dir: Path, entry: Any) -> Path:
    """Write (or replace) the ``operating_point`` entry of ``model_dir/model_card.json``.

    The card records the weights' hashes but is not hashed itself: the directory still
    opens verified.
    """
    card_file = model_dir / "model_card.json"
    card = json.loads(card_file.read_text(encoding="utf-8"))
    card["operating_point"] = entry
    card_file.write_text(json.dumps(card, indent=2), encoding="utf-8")
    return model_dir


def operating_entry(threshold: float, temperature: float = TEMPERATURE, round: int | None = 1) -> dict[str, Any]:
    """A card's ``operating_point`` entry as the server writes it (youden, chosen for ``round``)."""
    entry: dict[str, Any] = {
        "rule": "youden",
        "thresholds": [threshold],
        "temperature": temperature,
        "target": None,
        "validation": {"sensitivity": 0.95, "specificity": 0.81, "ece": 0.08, "ece-calibrated": 0.02},
        "note": "chosen on the federated validation split",
    }
    return entry if round is None else {**entry, "round": round}


@pytest.fixture(scope="session")
def with_operating_point() -> Callable[[Path, Any], Path]:
    """:func:`set_operating_point`, for test modules (they cannot import this conftest)."""
    return set_operating_point


@pytest.fixture(scope="session")
def make_entry() -> Callable[..., dict[str, Any]]:
    """:func:`operating_entry`, for test modules."""
    return operating_entry


@pytest.fixture(scope="module")
def operating_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A binary run directory (best round 1) whose card has no operating point, and a .npz of 12 test images."""
    root = tmp_path_factory.mktemp("operating")
    return write_run(root / "run-plain", seed=5), write_npz(root / "tiny.npz", sizes=(4, 4, 12))


@pytest.fixture(scope="module")
def calibrated(operating_run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedModel, float]:
    """A copy of ``operating_run`` whose card records temperature 2 and a youden threshold for round 1.

    The threshold lies between two of the 12 test images' calibrated P(class 1), on the
    other side of some of them than 0.5: deciding at it and at 0.5 differs.

    Returns:
        The loaded model and its threshold.
    """
    plain, npz = operating_run
    run = Path(shutil.copytree(plain, tmp_path_factory.mktemp("operating") / "run-calibrated"))
    set_operating_point(run, operating_entry(0.5))
    scores = load_model(run).probabilities(to_model_size(np.load(npz)["test_images"], 28))[:, 1]
    threshold = differing_threshold(scores)
    set_operating_point(run, operating_entry(threshold))
    return load_model(run), threshold


def differing_threshold(scores: np.ndarray) -> float:
    """A threshold between two distinct ``scores`` at which some, not all, decisions differ from 0.5's.

    Raises:
        ValueError: if there is none (fewer than two distinct scores).
    """
    ordered = np.unique(scores.astype(np.float64))
    for low, high in itertools.pairwise(ordered):
        cut = float((low + high) / 2)
        changed = (scores >= cut) != (scores >= 0.5)
        if changed.any() and not changed.all():
            return cut
    raise ValueError(f"no threshold decides differently from 0.5 on {scores!r}")
