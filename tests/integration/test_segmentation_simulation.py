"""Simulated segmentation federations through the installed CLI: BUSI lesions (2D, also with DP-SGD), Hippocampus (3D).

Small subsets of the shared data sets are copied into tmp_path (images with their masks and a
trimmed ``splits.csv``; NIfTI volumes with a trimmed ``dataset.json``): 2 hospitals with a
Dirichlet label skew, 2 rounds of 1 local epoch, a U-Net. Each run must complete and record
Dice and HD95 for every round, pick its best round by validation Dice, describe its data set in
the model card, and keep everything but counts, losses and metrics at the hospitals.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from fixtures.cli import fedward
from fixtures.privacy import HOSPITAL_METRIC_KEYS, RECORD_COLUMNS
from fixtures.seg_folders import BUSI, busi_subset, decathlon_subset, hippocampus_cases

from fedward.common.ml.accounting import DpSgd
from fedward.common.ml.segment import SegmentationHead
from fedward.common.ml.segmetrics import SegmentationSums

pytestmark = pytest.mark.slow

LESION = ("lesion",)
HIPPOCAMPUS_LABELS = ("anterior", "posterior")
FEDERATION = ["--hospitals", "2", "--partition", "dirichlet", "--seed", "0", "--rounds", "2", "--local-epochs", "1"]
BUSI_SETTINGS = ["--dataset", "busi", "--image-size", "64", "--model", "unet", "--set", "data.target=mask"]
BUSI_SETTINGS += ["--set", "data.modality=US"]
HIPPOCAMPUS_SETTINGS = ["--dataset", "hippocampus", "--model", "unet", "--set", "data.volume-size=[48,64,48]"]
HIPPOCAMPUS_SETTINGS += ["--set", "federation.min-hospital-size=8"]  # 24 training cases for 2 hospitals
DPSGD = {"dpsgd": "true", "dpsgd-noise-multiplier": "1.0", "dpsgd-clipping-norm": "1.0", "dpsgd-delta": "1e-5"}
DPSGD_BATCH = 8


# ---------------------------------------------------------------- data subsets


def busi_cases(per_split: dict[str, int]) -> list[str]:
    """The first images of each split of BUSI, as many of each class as its share of the split (largest remainder)."""
    if not (BUSI / "splits.csv").is_file():
        pytest.skip(f"BUSI not found at {BUSI}")
    with open(BUSI / "splits.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    chosen: list[str] = []
    for split, wanted in per_split.items():
        by_class: dict[str, list[str]] = {}
        for row in rows:
            if row["split"] == split:
                by_class.setdefault(row["label"], []).append(row["image"])
        total = sum(len(images) for images in by_class.values())
        shares = {label: wanted * len(images) / total for label, images in sorted(by_class.items())}
        counts = {label: math.floor(share) for label, share in shares.items()}
        for label in sorted(shares, key=lambda c: counts[c] - shares[c])[: wanted - sum(counts.values())]:
            counts[label] += 1
        chosen += [image for label, images in sorted(by_class.items()) for image in images[: counts[label]]]
    return chosen


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``busi/`` (60 train / 20 val / 20 test images) and ``hippocampus/`` (24 / 4 / 6 volumes)."""
    root = tmp_path_factory.mktemp("data")
    busi_subset(root / "busi", busi_cases({"train": 60, "val": 20, "test": 20}))
    decathlon_subset(root / "hippocampus", hippocampus_cases({"train": 24, "val": 4, "test": 6}))
    return root


def simulate(out: Path, data_dir: Path, *settings: str) -> Path:
    cache = out.parent / f"{out.name}-cache"
    result = fedward(
        "simulate", "--data-dir", str(data_dir), *FEDERATION, *settings,
        "--set", f"data.cache-dir={cache}", "--output-dir", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]  # beside it: the runs index (runs.sqlite)
    return run_dir


@pytest.fixture(scope="module")
def busi_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    return simulate(tmp_path_factory.mktemp("busi"), data_dir, *BUSI_SETTINGS)


@pytest.fixture(scope="module")
def busi_dpsgd_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    privacy = [arg for key, value in DPSGD.items() for arg in ("--set", f"privacy.{key}={value}")]
    return simulate(
        tmp_path_factory.mktemp("busi-dpsgd"), data_dir, *BUSI_SETTINGS, "--batch-size", str(DPSGD_BATCH), *privacy
    )


@pytest.fixture(scope="module")
def hippocampus_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    return simulate(tmp_path_factory.mktemp("hippocampus"), data_dir, *HIPPOCAMPUS_SETTINGS)


# ---------------------------------------------------------------- what every segmentation run records


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def hospital_keys(names: tuple[str, ...]) -> frozenset[str]:
    """Every key a hospital's row may hold: bookkeeping, counts, losses, timings and segmentation metrics."""
    plain = {key for key in HOSPITAL_METRIC_KEYS if not key.startswith("val-")}
    finished = {f"val-{metric}" for metric in ("dice", "pooled-dice", "hd95", "loss")}
    per_label = {f"val-{metric}-{name}" for metric in ("dice", "pooled-dice", "hd95") for name in names}
    sums = set(SegmentationSums.zeros(len(names)).to_wire("val", names))
    return frozenset(RECORD_COLUMNS | plain | finished | per_label | sums)


def check_segmentation_run(run_dir: Path, names: tuple[str, ...], spatial_dims: int, modality: str) -> None:
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "completed", status

    rows = jsonl(run_dir / "metrics" / "server.jsonl")
    assert [row["round"] for row in rows] == [0, 1, 2]
    for row in rows:  # the server's test split, every round
        for key in ("test-dice", "test-hd95", *[f"test-dice-{n}" for n in names], *[f"test-hd95-{n}" for n in names]):
            assert isinstance(row.get(key), float) and math.isfinite(row[key]), (row["round"], key)
        assert 0.0 <= row["test-dice"] <= 1.0 and row["test-hd95"] >= 0.0
    hospitals = jsonl(run_dir / "metrics" / "hospitals.jsonl")
    head = SegmentationHead(names)
    for row in rows[1:]:  # the hospitals' validation splits, every training round
        for key in ("val-dice", "val-hd95", *[f"val-dice-{n}" for n in names]):
            assert isinstance(row.get(key), float) and math.isfinite(row[key]), (row["round"], key)
        assert 0.0 <= row["val-dice"] <= 1.0
        assert row["hospitals-trained"] == 2 and row["hospitals-evaluated"] == 2
        replies = [h for h in hospitals if h["round"] == row["round"] and h["phase"] == "evaluate"]
        federated = head.federate([{k: v for k, v in h.items() if k not in RECORD_COLUMNS} for h in replies])
        for key in ("val-dice", *[f"val-dice-{n}" for n in names]):  # the pooled images' Dice, from the sums
            assert row[key] == pytest.approx(federated[key], rel=1e-9), (row["round"], key)

    best = json.loads((run_dir / "models" / "best.json").read_text())
    assert best["metric"] == "val-dice"
    dice = [row["val-dice"] for row in rows[1:]]
    assert best["round"] == 1 + dice.index(max(dice)) and best["value"] == pytest.approx(max(dice))
    assert (run_dir / "models" / "best.safetensors").is_file()

    card = json.loads((run_dir / "model_card.json").read_text())
    dataset = card["dataset"]
    assert dataset["task"] == "segmentation" and dataset["spatial_dims"] == spatial_dims
    assert dataset["modality"] == modality and dataset["classes"] == ["background", *names]
    assert card["run"]["status"] == "completed" and card["run"]["rounds_completed"] == 2
    assert [h["name"] for h in card["hospitals"]] == ["hospital-0", "hospital-1"]


def check_hospital_rows_hold_only_numbers_and_names(run_dir: Path, names: tuple[str, ...]) -> None:
    """What reached the server from a hospital: counts, losses, timings, metric sums; never a file name or pixel."""
    text = (run_dir / "metrics" / "hospitals.jsonl").read_text()
    rows = [json.loads(line) for line in text.splitlines()]
    assert {(row["round"], row["phase"]) for row in rows} == {(r, p) for r in (1, 2) for p in ("train", "evaluate")}
    allowed = hospital_keys(names)
    for row in rows:
        assert set(row) <= allowed, sorted(set(row) - allowed)
        for key, value in row.items():
            if key == "hospital":
                assert re.fullmatch(r"hospital-\d+", value)
            elif key in ("phase", "reason"):
                assert isinstance(value, str) and not re.search(r"[./\\]", value), (key, value)
            else:
                assert isinstance(value, int | float) and not isinstance(value, bool), (key, value)
    for record in (text, (run_dir / "metrics" / "server.jsonl").read_text()):
        assert not re.search(r"\.(png|nii|gz|dcm)\b|benign|malignant|hippocampus_\d", record, re.IGNORECASE)


# ---------------------------------------------------------------- the runs


def test_busi_lesion_federation_records_dice_and_hd95(busi_run: Path) -> None:
    check_segmentation_run(busi_run, LESION, 2, "US")
    card = json.loads((busi_run / "model_card.json").read_text())
    assert card["dataset"]["preprocessing"]["grid"] == [64, 64]
    assert card["dataset"]["test_images"] == 20


def test_busi_hospitals_sent_only_numbers_and_names(busi_run: Path) -> None:
    check_hospital_rows_hold_only_numbers_and_names(busi_run, LESION)


def test_busi_lesion_federation_with_dpsgd_records_each_hospital_s_epsilon(busi_dpsgd_run: Path) -> None:
    check_segmentation_run(busi_dpsgd_run, LESION, 2, "US")
    check_hospital_rows_hold_only_numbers_and_names(busi_dpsgd_run, LESION)
    rows = jsonl(busi_dpsgd_run / "metrics" / "server.jsonl")
    hospitals = jsonl(busi_dpsgd_run / "metrics" / "hospitals.jsonl")
    for row in rows[1:]:
        trained = [h for h in hospitals if h["round"] == row["round"] and h["phase"] == "train"]
        assert len(trained) == 2
        for reply in trained:  # what the accountant gives for the hospital's own number of images
            plan = DpSgd.plan(
                images=int(reply["num-examples"]), batch_size=DPSGD_BATCH, local_epochs=1, rounds=2,
                clipping_norm=1.0, delta=1e-5, noise_multiplier=1.0,
            )  # fmt: skip
            assert reply["dpsgd-epsilon"] == pytest.approx(plan.epsilon(row["round"]), rel=1e-6)
        assert row["dpsgd-epsilon"] == pytest.approx(max(h["dpsgd-epsilon"] for h in trained))
    assert 0 < rows[1]["dpsgd-epsilon"] < rows[2]["dpsgd-epsilon"]
    (guarantee,) = json.loads((busi_dpsgd_run / "model_card.json").read_text())["privacy"]["guarantees"]
    assert guarantee["unit"] == "image" and guarantee["noise_multiplier"] == 1.0 and guarantee["delta"] == 1e-5
    assert guarantee["epsilon"] == pytest.approx(rows[2]["dpsgd-epsilon"])


def test_hippocampus_federation_records_dice_and_hd95_per_structure(hippocampus_run: Path) -> None:
    check_segmentation_run(hippocampus_run, HIPPOCAMPUS_LABELS, 3, "MR")
    card = json.loads((hippocampus_run / "model_card.json").read_text())
    preprocessing = card["dataset"]["preprocessing"]
    assert preprocessing["grid"] == [48, 64, 48] and preprocessing["orientation"] == "RAS"
    assert card["dataset"]["test_images"] == 6


def test_hippocampus_hospitals_sent_only_numbers_and_names(hippocampus_run: Path) -> None:
    check_hospital_rows_hold_only_numbers_and_names(hippocampus_run, HIPPOCAMPUS_LABELS)
