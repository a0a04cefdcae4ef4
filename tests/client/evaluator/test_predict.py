"""Prediction on files: real DICOM files (pydicom-data), PNG and .npz; failures get a reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures.dicom_folders import pydicom_testdata
from fixtures.model_dirs import write_pngs, write_run
from fixtures.synthetic import write_npz
from typer.testing import CliRunner

from fedward.client.evaluator.loaded_model import LoadedModel, load_model
from fedward.client.evaluator.predict import predict_files
from fedward.common.data.images import to_model_size

pytest.importorskip("data_store", reason="pydicom-data (test extra) is not installed")
DECODE = {
    "RG1_UNCR.dcm": "CR radiograph, MONOCHROME1",
    "RG1_J2KR.dcm": "the same radiograph, JPEG 2000 lossless",
    "US1_J2KR.dcm": "ultrasound, color (YBR_RCT) JPEG 2000, given to a grayscale model",
    "emri_small_RLE.dcm": "multi-frame MR, RLE (middle frame)",
}
FAIL = {
    "rtplan.dcm": "no-pixel-data",
    "emri_small_jpeg_2k_lossless_too_short.dcm": "truncated",
}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model(write_run(tmp_path_factory.mktemp("runs") / "run-predict", seed=5))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Decodable and undecodable files, in an order the report must keep."""
    folder = tmp_path_factory.mktemp("files")
    notes = folder / "notes.txt"
    notes.write_text("not an image")
    files = [pydicom_testdata(name) for name in DECODE]
    files.insert(2, pydicom_testdata("rtplan.dcm"))
    files += [notes, pydicom_testdata("emri_small_jpeg_2k_lossless_too_short.dcm"), folder / "missing.png"]
    return files


def test_dicom_files_decode_or_get_a_reason(loaded: LoadedModel, mixed: list[Path]) -> None:
    report = predict_files(loaded, mixed)
    assert [r.file for r in report.rows] == [str(p) for p in mixed]
    by_name = {Path(r.file).name: r for r in report.rows}
    for name in DECODE:
        row = by_name[name]
        assert row.ok and row.probabilities is not None, name
        assert len(row.probabilities) == 2 and sum(row.probabilities) == pytest.approx(1.0, abs=1e-6)
        assert row.predicted in ("normal", "pneumonia")
    # Lossless twins decode to the same pixels, so to the same probabilities.
    assert by_name["RG1_UNCR.dcm"].probabilities == by_name["RG1_J2KR.dcm"].probabilities
    reasons = {Path(r.file).name: r.reason for r in report.failed}
    assert reasons == {**FAIL, "notes.txt": "not-dicom", "missing.png": "unreadable"}
    assert all(r.message for r in report.failed)


def test_png_and_npz_give_the_training_pipelines_probabilities(loaded: LoadedModel, tmp_path: Path) -> None:
    npz = write_npz(tmp_path / "tiny.npz", sizes=(5, 3, 6))
    test_images = np.load(npz)["test_images"]
    pngs = write_pngs(tmp_path / "pngs", test_images)
    report = predict_files(loaded, [npz, *pngs])
    assert report.notes == [f"{npz}: read test_images (6 images)"]
    assert [r.file for r in report.rows[:6]] == [f"{npz}[test_images:{i}]" for i in range(6)]
    expected = loaded.probabilities(to_model_size(test_images, 28))
    got = np.array([r.probabilities for r in report.rows])
    np.testing.assert_allclose(got[:6], expected, atol=1e-6)
    np.testing.assert_allclose(got[6:], expected, atol=1e-6)  # the same pixels as 8-bit PNGs


def test_npz_layouts_and_bad_archives(loaded: LoadedModel, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    plain = tmp_path / "plain.npz"
    np.savez(plain, images=rng.integers(0, 256, (3, 28, 28), dtype=np.uint8))
    no_test = tmp_path / "no_test.npz"
    np.savez(
        no_test,
        train_images=rng.integers(0, 256, (2, 56, 56), dtype=np.uint8),  # resized to 28 px
        val_images=rng.integers(0, 256, (1, 28, 28, 3), dtype=np.uint8),  # RGB to luma
    )
    floats = tmp_path / "floats.npz"
    np.savez(floats, images=rng.random((2, 28, 28)))
    empty = tmp_path / "labels_only.npz"
    np.savez(empty, labels=np.zeros(3))
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(plain.read_bytes()[:100])
    report = predict_files(loaded, [plain, no_test, floats, empty, corrupt])
    assert report.notes == [
        f"{plain}: read images (3 images)",
        f"{no_test}: read train_images (2 images), val_images (1 images)",
    ]
    assert sum(r.ok for r in report.rows) == 6
    assert [(Path(r.file).name, r.reason) for r in report.failed] == [
        ("floats.npz", "not-an-image"),
        ("labels_only.npz", "not-an-image"),
        ("corrupt.npz", "unreadable"),
    ]


def test_multilabel_models_give_per_label_probabilities(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run-ml", classes=("a", "b", "c"), task="multilabel")
    loaded = load_model(run)
    report = predict_files(loaded, [pydicom_testdata("RG1_UNCR.dcm")], threshold=0.0)
    (row,) = report.rows
    assert row.probabilities is not None and len(row.probabilities) == 3
    assert all(0.0 < p < 1.0 for p in row.probabilities)
    assert row.predicted == "a|b|c"  # every label clears a zero threshold


def test_cli_predict_exit_codes_and_json(loaded: LoadedModel, mixed: list[Path], tmp_path: Path) -> None:
    from fedward.cli.main import app

    runner = CliRunner()
    model_dir = str(loaded.model_dir.path)
    result = runner.invoke(app, ["predict", model_dir, *map(str, mixed), "--json"])
    assert result.exit_code == 1
    doc = json.loads(result.output)
    assert len(doc["predictions"]) == len(DECODE) and len(doc["failed"]) == 4
    assert set(doc["predictions"][0]["probabilities"]) == {"normal", "pneumonia"}
    folder = tmp_path / "good"
    folder.mkdir()
    shutil.copy(pydicom_testdata("RG1_UNCR.dcm"), folder / "a.dcm")
    write_pngs(folder, np.zeros((1, 28, 28), dtype=np.uint8))
    ok = runner.invoke(app, ["predict", model_dir, str(folder)])  # a folder: every file inside
    assert ok.exit_code == 0, ok.output
    assert "a.dcm" in ok.output and "img-000.png" in ok.output
    missing = runner.invoke(app, ["predict", str(tmp_path / "no-model"), str(folder)])
    assert missing.exit_code == 2 and "does not exist" in missing.output
