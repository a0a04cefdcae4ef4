"""Segmentation model directories (random weights) shared by the evaluator's segmentation tests."""

from __future__ import annotations

import pytest
from fixtures.model_dirs import write_seg_run

from fedward.client.evaluator.loaded_model import LoadedModel, load_model


@pytest.fixture(scope="module")
def seg2d(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """A 2D U-Net for BUSI-like images (background, lesion) on a 64 px grid."""
    return load_model(write_seg_run(tmp_path_factory.mktemp("runs") / "run-seg2d", seed=1))


@pytest.fixture(scope="module")
def seg3d(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """A 3D U-Net for Hippocampus-like MR volumes (background, anterior, posterior) on a 48 x 64 x 48 grid."""
    return load_model(write_seg_run(tmp_path_factory.mktemp("runs") / "run-seg3d", spatial_dims=3, seed=2))
