"""A hospital's local data: hold-out splits, partition plans, data folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures.synthetic import write_npz

from fedward.common.choices import Task
from fedward.common.config.sections import DataConfig
from fedward.common.data.hospital import holdout_split, hospital_from_folder, hospital_from_plan
from fedward.common.data.plan import HospitalSplit, PartitionPlan
from fedward.common.errors import DataError
from fedward.common.schema import DatasetSchema

BINARY = DatasetSchema(Task.BINARY, ("normal", "pneumonia"), 1)


def test_holdout_is_stratified_disjoint_and_complete() -> None:
    labels = np.array([[0]] * 30 + [[1]] * 70)
    train, val = holdout_split(labels, 0.1, seed=0)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(100))
    assert np.bincount(labels[val, 0]).tolist() == [3, 7]
    again = holdout_split(labels, 0.1, seed=0)
    assert np.array_equal(again[1], val)
    assert not np.array_equal(holdout_split(labels, 0.1, seed=1)[1], val)


def test_holdout_keeps_rare_classes_on_both_sides() -> None:
    labels = np.array([[0], [0], [1], [1], [1], [1], [1], [1], [1], [2]])
    train, val = holdout_split(labels, 0.1, seed=0)
    assert set(labels[val, 0]) >= {0, 1}
    assert 2 in labels[train, 0]


def test_plan_round_trip_and_hospital_loading(tmp_path: Path) -> None:
    source = write_npz(tmp_path / "tinymnist.npz")
    plan = PartitionPlan(
        "tinymnist",
        source,
        "iid",
        0.5,
        0,
        (
            HospitalSplit("hospital-0", np.arange(0, 60), np.arange(60, 66)),
            HospitalSplit("hospital-1", np.arange(66, 120), np.arange(0)),
        ),
    )
    (tmp_path / "partitions.json").write_text(plan.to_json())
    again = PartitionPlan.read(tmp_path / "partitions.json")
    assert again.hospitals[0].name == "hospital-0"
    assert np.array_equal(again.hospitals[1].train, np.arange(66, 120))
    site = hospital_from_plan(tmp_path / "partitions.json", 0, BINARY, DataConfig(), None)
    assert (len(site.train), len(site.val)) == (60, 6)
    assert site.train.images.shape == (60, 1, 28, 28)
    with pytest.raises(DataError, match="partition 5 does not exist"):
        hospital_from_plan(tmp_path / "partitions.json", 5, BINARY, DataConfig(), None)


def test_plan_file_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(DataError, match="cannot read partition plan"):
        PartitionPlan.read(tmp_path / "bad.json")


def test_folder_with_train_and_val(tmp_path: Path) -> None:
    write_npz(tmp_path / "site" / "tinymnist.npz", sizes=(50, 10, 0))
    site = hospital_from_folder(tmp_path / "site", "tinymnist", BINARY, 28, 0.1, 0, "st-mary")
    assert (site.name, len(site.train), len(site.val)) == ("st-mary", 50, 10)


def test_folder_without_val_holds_out_part_of_train(tmp_path: Path) -> None:
    write_npz(tmp_path / "site" / "tinymnist.npz", sizes=(50, 0, 0))
    site = hospital_from_folder(tmp_path / "site", "tinymnist", BINARY, 28, 0.2, 0, "h")
    assert len(site.val) == 10 and len(site.train) == 40


def test_folder_whose_labels_do_not_fit_the_federation(tmp_path: Path) -> None:
    write_npz(tmp_path / "site" / "tinymnist.npz", classes=3)
    with pytest.raises(DataError, match="not one of the federation's 2 classes"):
        hospital_from_folder(tmp_path / "site", "tinymnist", BINARY, 28, 0.1, 0, "h")
    write_npz(tmp_path / "rgb" / "tinymnist.npz", rgb=True)
    with pytest.raises(DataError, match="channel"):
        hospital_from_folder(tmp_path / "rgb", "tinymnist", BINARY, 28, 0.1, 0, "h")


def test_folder_without_the_file(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"tinymnist\.npz not found"):
        hospital_from_folder(tmp_path / "empty", "tinymnist", BINARY, 28, 0.1, 0, "h")
