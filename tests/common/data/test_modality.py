"""The modality guard: inputs of another modality, channel count or dimension are named, and refused under --strict."""

from __future__ import annotations

import logging

import pytest

from fedward.common.choices import Modality, Task
from fedward.common.data.modality import InputKind, ModalityMismatchError, guard_input, input_mismatches
from fedward.common.schema import DatasetSchema

CHEST = DatasetSchema(Task.BINARY, ("normal", "pneumonia"), 1, 2, Modality.DX)
HIPPOCAMPUS = DatasetSchema(Task.SEGMENTATION, ("background", "anterior", "posterior"), 1, 3, Modality.MR)


def test_a_colour_ultrasound_does_not_fit_a_chest_xray_model() -> None:
    reasons = input_mismatches(CHEST, InputKind("US", 3, 2))
    assert reasons == [
        "modality US, but the model was trained on DX images",
        "colour image, but the model was trained on grey ones",
    ]


def test_radiography_kinds_are_one_kind_and_headerless_files_are_not_compared() -> None:
    assert input_mismatches(CHEST, InputKind("CR", 1, 2)) == []
    assert input_mismatches(CHEST, InputKind("", 1, 2)) == []
    unknown = DatasetSchema(Task.BINARY, ("a", "b"), 1)
    assert input_mismatches(unknown, InputKind("CT", 1, 2)) == []


def test_dimensions_must_fit() -> None:
    assert input_mismatches(HIPPOCAMPUS, InputKind("MR", 1, 2)) == ["2D input, but the model takes 3D volumes"]
    assert input_mismatches(HIPPOCAMPUS, InputKind("CT", 1, 3)) == [
        "modality CT, but the model was trained on MR images"
    ]


def test_guard_warns_or_refuses(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert guard_input(CHEST, InputKind("US", 1, 2), "US1_UNCR.dcm", strict=False)
    assert "US1_UNCR.dcm: modality US" in caplog.text
    with pytest.raises(ModalityMismatchError, match=r"US1_UNCR.dcm: modality US, .* \(--strict\)"):
        guard_input(CHEST, InputKind("US", 1, 2), "US1_UNCR.dcm", strict=True)
    assert guard_input(CHEST, InputKind("DX", 1, 2), "chest.dcm", strict=True) == []
