"""Hospital image folders: manifests, class folders, labels, splits, the decode cache."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.dicom_folders import learnable_pixels, write_dicom_folder, write_image
from PIL import Image

from fedward.common.choices import FrameMode, Task
from fedward.common.config import RunConfig
from fedward.common.data.dicom import Reason
from fedward.common.data.folder import scan_folder
from fedward.common.data.load import load_image_folder, load_site_folder
from fedward.common.errors import DataError
from fedward.common.schema import DatasetSchema

BINARY = DatasetSchema(Task.BINARY, ("normal", "pneumonia"), 1)


def load(folder: Path, cache: Path | None = None, **kwargs: object) -> object:
    options = {"frames": FrameMode.MIDDLE, "val_fraction": 0.2, "seed": 0, "name": "h", "cache_root": cache} | kwargs
    return load_image_folder(folder, BINARY, 28, **options)  # type: ignore[arg-type]


def test_manifest_with_splits(tmp_path: Path) -> None:
    data = load(write_dicom_folder(tmp_path / "h", n=20))
    assert (len(data.train), len(data.val)) == (16, 4)  # type: ignore[attr-defined]
    assert data.train.images.shape == (16, 1, 28, 28)  # type: ignore[attr-defined]
    assert data.inventory == {"files-used": 20, "files-skipped": 0}  # type: ignore[attr-defined]


def test_manifest_without_splits_draws_a_stratified_validation_set(tmp_path: Path) -> None:
    data = load(write_dicom_folder(tmp_path / "h", n=20, splits=False))
    assert (len(data.train), len(data.val)) == (16, 4)  # type: ignore[attr-defined]
    assert sorted(data.val.labels[:, 0].tolist()) == [0, 0, 1, 1]  # type: ignore[attr-defined]


def test_labels_by_index_and_case(tmp_path: Path) -> None:
    folder = write_dicom_folder(tmp_path / "h", n=10, classes=("NORMAL", "1"))
    data = load(folder)
    assert set(data.train.labels[:, 0].tolist()) == {0, 1}  # type: ignore[attr-defined]


def test_unknown_labels_fail_before_training_naming_them(tmp_path: Path) -> None:
    folder = write_dicom_folder(tmp_path / "h", n=10, classes=("normal", "covid"))
    with pytest.raises(DataError) as err:
        load(folder)
    assert "'covid' (5 files)" in str(err.value) and "normal, pneumonia" in str(err.value)


def test_sop_instance_uid_manifest(tmp_path: Path) -> None:
    folder = write_dicom_folder(tmp_path / "h", n=6)
    import pydicom

    rows = list(csv.DictReader((folder / "labels.csv").read_text().splitlines()))
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sop_instance_uid", "label"])
        for row in rows:
            writer.writerow([pydicom.dcmread(folder / row["path"]).SOPInstanceUID, row["label"]])
        writer.writerow(["1.2.3.4.5.6.7", "normal"])
    scan = scan_folder(folder)
    assert len(scan.samples) == 6
    assert [p.reason for p in scan.problems] == [Reason.MISSING_FILE]


def test_manifest_problems_are_listed(tmp_path: Path) -> None:
    folder = write_dicom_folder(tmp_path / "h", n=4)
    with open(folder / "labels.csv", "a", newline="") as handle:
        csv.writer(handle).writerows(
            [
                ["dicom/ghost.dcm", "normal", "train"],
                ["../escape.dcm", "normal", "train"],
                ["dicom/case-000.dcm", "normal", "later"],
            ]
        )
    write_image(folder / "dicom" / "stray.dcm", np.zeros((28, 28), np.uint8))
    reasons = sorted(p.reason.value for p in scan_folder(folder).problems)
    assert reasons == ["bad-manifest-row", "bad-manifest-row", "file-without-manifest-row", "manifest-row-without-file"]


def test_manifest_without_required_columns(tmp_path: Path) -> None:
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "labels.csv").write_text("file,diagnosis\na.dcm,normal\n")
    with pytest.raises(DataError, match="needs a 'label' column"):
        scan_folder(tmp_path / "h")


def test_class_folders_of_png_and_jpeg(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for cls, label in (("normal", 0), ("pneumonia", 1)):
        for i in range(6):
            pixels = learnable_pixels(label, rng, size=40)
            suffix = "png" if i % 2 else "jpg"
            (tmp_path / "h" / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(tmp_path / "h" / cls / f"{i}.{suffix}")
    (tmp_path / "h" / "normal" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(10))
    data = load(tmp_path / "h")
    assert len(data.train) + len(data.val) == 12  # type: ignore[attr-defined]
    assert data.inventory["files-skipped"] == 1  # type: ignore[attr-defined]
    assert data.train.images.shape[1:] == (1, 28, 28)  # type: ignore[attr-defined]


def test_corrupt_files_are_skipped_and_counted(tmp_path: Path) -> None:
    folder = write_dicom_folder(tmp_path / "h", n=10)
    path = folder / "dicom" / "case-001.dcm"
    path.write_bytes(path.read_bytes()[:-300])
    data = load(folder)
    assert data.inventory == {"files-used": 9, "files-skipped": 1, "skipped-truncated": 1}  # type: ignore[attr-defined]


def test_every_frame_as_samples(tmp_path: Path) -> None:
    from fedward.simulation.dicom_export import secondary_capture

    folder = tmp_path / "h"
    (folder / "x").mkdir(parents=True)
    frames = np.stack([np.full((8, 8), v, np.uint8) for v in (10, 20, 30)])
    ds = secondary_capture(frames[0], patient_name="A^B", patient_id="1", institution="h")
    ds.NumberOfFrames = 3
    ds.PixelData = frames.tobytes()
    ds.save_as(folder / "x" / "cine.dcm", enforce_file_format=True)
    (folder / "labels.csv").write_text("path,label,split\nx/cine.dcm,normal,train\n")
    assert len(load(folder, frames=FrameMode.ALL).train) == 3  # type: ignore[attr-defined]
    assert len(load(folder, frames=FrameMode.MIDDLE).train) == 1  # type: ignore[attr-defined]


def test_decode_cache_is_reused_and_invalidated(tmp_path: Path) -> None:
    folder = write_dicom_folder(tmp_path / "h", n=10)
    cache = tmp_path / "cache"
    first = load(folder, cache)
    again = load(folder, cache)
    assert torch.equal(first.train.images, again.train.images)  # type: ignore[attr-defined]
    assert len(list(cache.rglob("*.npy"))) == 10
    changed = folder / "dicom" / "case-002.dcm"
    write_image(changed, np.full((28, 28), 255, np.uint8))
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after = load(folder, cache)
    assert not torch.equal(first.train.images, after.train.images)  # type: ignore[attr-defined]
    assert len(list(cache.rglob("*.npy"))) == 11


def test_decode_cache_entries_cut_short_are_misses_and_rewritten(tmp_path: Path) -> None:
    folder = write_dicom_folder(tmp_path / "h", n=3)
    cache = tmp_path / "cache"
    first = load(folder, cache)
    entries = sorted(cache.rglob("*.npy"))
    assert len(entries) == 3
    assert not [p for p in cache.rglob("*") if p.name.startswith(".")]  # no temporary files left
    entries[0].write_bytes(b"")  # a power cut after the rename, before the data reached the disk
    entries[1].write_bytes(entries[1].read_bytes()[:100])
    again = load(folder, cache)
    assert torch.equal(first.train.images, again.train.images)  # type: ignore[attr-defined]
    assert all(p.stat().st_size == entries[2].stat().st_size for p in entries)


def test_decode_cache_that_cannot_be_written_only_costs_speed(tmp_path: Path) -> None:
    folder = write_dicom_folder(tmp_path / "h", n=3)
    cache = tmp_path / "cache"
    cache.write_text("not a folder")  # every entry's folder fails to be made
    cached, uncached = load(folder, cache), load(folder, None)
    assert torch.equal(cached.train.images, uncached.train.images)  # type: ignore[attr-defined]
    assert cache.read_text() == "not a folder"


def test_npz_folders_still_load(tmp_path: Path) -> None:
    from fixtures.synthetic import write_npz

    write_npz(tmp_path / "h" / "pneumoniamnist.npz", sizes=(30, 5, 0))
    cfg = RunConfig.from_mapping({"data": {"dataset": "pneumoniamnist", "val-fraction": 0.1}})
    data = load_site_folder(tmp_path / "h", cfg, BINARY, name="h", cache_root=None)
    assert (len(data.train), len(data.val)) == (30, 5)
