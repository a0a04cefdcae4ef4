"""Tests of fedward.simulation.partition: coverage, reproducibility, skew, plans, tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from fedward.common.choices import Partition
from fedward.common.config.sections import FederationConfig
from fedward.common.data.plan import PartitionPlan
from fedward.common.errors import ConfigError
from fedward.simulation.partition import (
    HospitalSummary,
    describe_table,
    label_skew,
    make_plan,
    partition_indices,
    summarize_plan,
)

REAL_FILE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pneumoniamnist.npz"
METHODS = list(Partition)


@pytest.fixture(scope="module")
def real_labels() -> np.ndarray:
    """PneumoniaMNIST training labels, uint8 (4708, 1)."""
    if not REAL_FILE.is_file():
        pytest.skip(f"real data not found at {REAL_FILE} (expected ../shared/data from the repository root)")
    with np.load(REAL_FILE) as npz:
        return np.asarray(npz["train_labels"])


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    """Synthetic imbalanced 3-class labels, uint8 (1000, 1)."""
    rng = np.random.default_rng(123)
    return rng.choice(3, size=(1000, 1), p=[0.5, 0.3, 0.2]).astype(np.uint8)


@pytest.fixture(scope="module")
def multilabels() -> np.ndarray:
    """Synthetic multi-label labels, uint8 (600, 4), about 30 % of rows without a finding."""
    rng = np.random.default_rng(7)
    return (rng.random((600, 4)) < 0.25).astype(np.uint8)


def _check_cover(parts: list[np.ndarray], n_rows: int, n_hospitals: int) -> None:
    assert len(parts) == n_hospitals
    assert sum(p.size for p in parts) == n_rows
    joined = np.concatenate(parts)
    assert np.array_equal(np.sort(joined), np.arange(n_rows))  # disjoint and complete
    for p in parts:
        assert p.dtype == np.int64
        assert np.all(np.diff(p) > 0)  # sorted


def _size_spread(parts: list[np.ndarray]) -> float:
    sizes = np.array([p.size for p in parts], dtype=float)
    return float(sizes.std() / sizes.mean())


# ------------------------------------------------------------------ coverage & determinism
@pytest.mark.parametrize("method", METHODS)
def test_partition_covers_every_row_once(labels: np.ndarray, method: Partition) -> None:
    parts = partition_indices(labels, 7, method, alpha=0.5, seed=0, min_size=10)
    _check_cover(parts, len(labels), 7)


@pytest.mark.parametrize("method", METHODS)
def test_multilabel_partition_covers_every_row_once(multilabels: np.ndarray, method: Partition) -> None:
    parts = partition_indices(multilabels, 4, method, alpha=0.5, seed=1, min_size=10)
    _check_cover(parts, len(multilabels), 4)


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_partition_other_seed_differs(labels: np.ndarray, method: Partition) -> None:
    first = partition_indices(labels, 5, method, alpha=1.0, seed=3, min_size=10)
    again = partition_indices(labels, 5, method, alpha=1.0, seed=3, min_size=10)
    other = partition_indices(labels, 5, method, alpha=1.0, seed=4, min_size=10)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_iid_sizes_near_equal_and_labels_close_to_global(labels: np.ndarray) -> None:
    parts = partition_indices(labels, 6, Partition.IID, alpha=0.1, seed=0, min_size=1)
    sizes = [p.size for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert label_skew(parts, labels, 3) < 0.06
    # the shuffle happens before sharding: no hospital holds a contiguous block of rows
    assert all(p[-1] - p[0] > 2 * p.size for p in parts)


def test_single_hospital_gets_everything(labels: np.ndarray) -> None:
    for method in METHODS:
        (only,) = partition_indices(labels, 1, method, alpha=0.5, seed=0, min_size=1)
        assert np.array_equal(only, np.arange(len(labels)))


# ------------------------------------------------------------------ skew
def test_dirichlet_label_skew_grows_as_alpha_falls(real_labels: np.ndarray) -> None:
    skew = {
        alpha: label_skew(partition_indices(real_labels, 5, Partition.DIRICHLET, alpha, 0, 20), real_labels, 2)
        for alpha in (100.0, 1.0, 0.1)
    }
    assert skew[100.0] < skew[1.0] < skew[0.1]
    assert skew[100.0] < 0.05
    assert skew[0.1] > 0.3


def test_dirichlet_multilabel_skew(multilabels: np.ndarray) -> None:
    iid = partition_indices(multilabels, 4, Partition.IID, alpha=1.0, seed=0, min_size=10)
    skewed = partition_indices(multilabels, 4, Partition.DIRICHLET, alpha=0.1, seed=0, min_size=10)
    assert label_skew(skewed, multilabels, 4) > label_skew(iid, multilabels, 4) + 0.2


def test_quantity_size_spread_grows_labels_stay_global(real_labels: np.ndarray) -> None:
    spread: dict[float, float] = {}
    for alpha in (100.0, 1.0, 0.1):
        runs = [partition_indices(real_labels, 5, Partition.QUANTITY, alpha, seed, 20) for seed in range(10)]
        spread[alpha] = float(np.mean([_size_spread(parts) for parts in runs]))
        assert max(label_skew(parts, real_labels, 2) for parts in runs) < 0.07
    assert spread[100.0] < spread[1.0] < spread[0.1]
    assert spread[100.0] < 0.2


def test_label_skew_known_values() -> None:
    y = np.array([[0], [0], [1], [1]])
    assert label_skew([np.array([0, 2]), np.array([1, 3])], y, 2) == pytest.approx(0.0)
    assert label_skew([np.array([0, 1]), np.array([2, 3])], y, 2) == pytest.approx(0.5)
    assert label_skew([np.array([0, 1, 2, 3]), np.array([], dtype=np.int64)], y, 2) == pytest.approx(0.0)


# ------------------------------------------------------------------ constraints
@pytest.mark.parametrize(("method", "alphas"), [(Partition.DIRICHLET, (0.5, 2.0)), (Partition.QUANTITY, (0.05, 0.5))])
def test_min_size_respected(real_labels: np.ndarray, method: Partition, alphas: tuple[float, ...]) -> None:
    for alpha in alphas:
        parts = partition_indices(real_labels, 5, method, alpha, seed=2, min_size=300)
        assert min(p.size for p in parts) >= 300
        _check_cover(parts, len(real_labels), 5)


def test_quantity_rebalances_when_no_draw_fits(labels: np.ndarray) -> None:
    # 9 x 110 of 1000 rows: Dirichlet(0.01) draws essentially never fit, the rebalance must.
    parts = partition_indices(labels, 9, Partition.QUANTITY, alpha=0.01, seed=0, min_size=110)
    assert min(p.size for p in parts) >= 110
    _check_cover(parts, len(labels), 9)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("hospitals", "alpha", "min_size", "match"),
    [
        (1001, 0.5, 1, "federation.hospitals"),
        (0, 0.5, 1, "federation.hospitals"),
        (5, 0.0, 1, "federation.alpha"),
        (5, -1.0, 1, "federation.alpha"),
        (5, float("nan"), 1, "federation.alpha"),
        (5, 0.5, 201, "min-hospital-size"),
    ],
)
def test_impossible_settings_raise(
    labels: np.ndarray, method: Partition, hospitals: int, alpha: float, min_size: int, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        partition_indices(labels, hospitals, method, alpha, seed=0, min_size=min_size)


def test_unreachable_dirichlet_min_size_is_a_config_error(labels: np.ndarray) -> None:
    with pytest.raises(ConfigError) as info:
        partition_indices(labels, 20, Partition.DIRICHLET, alpha=0.01, seed=0, min_size=40)
    message = str(info.value)
    assert "fewer hospitals" in message
    assert "federation.alpha" in message
    assert "federation.min-hospital-size" in message


def test_partitioning_prints_nothing(labels: np.ndarray, capfd: pytest.CaptureFixture[str]) -> None:
    for method in METHODS:
        partition_indices(labels, 3, method, alpha=0.5, seed=0, min_size=5)
    out, err = capfd.readouterr()
    assert out == ""
    assert err == ""


# ------------------------------------------------------------------ plans & summaries
@pytest.fixture(scope="module")
def real_plan(real_labels: np.ndarray) -> PartitionPlan:
    federation = FederationConfig(hospitals=5, partition=Partition.DIRICHLET, alpha=0.5, min_hospital_size=20)
    return make_plan("pneumoniamnist", REAL_FILE, real_labels, federation, val_fraction=0.1, seed=0)


def test_make_plan_val_splits(real_plan: PartitionPlan, real_labels: np.ndarray, tmp_path: Path) -> None:
    assert [h.name for h in real_plan.hospitals] == [f"hospital-{i}" for i in range(5)]
    assert (real_plan.method, real_plan.alpha, real_plan.seed) == ("dirichlet", 0.5, 0)
    assert real_plan.dataset == "pneumoniamnist"
    assert real_plan.source == REAL_FILE
    expected = partition_indices(real_labels, 5, Partition.DIRICHLET, 0.5, 0, 20)
    for hospital, part in zip(real_plan.hospitals, expected, strict=True):
        assert hospital.val.size > 0
        assert np.intersect1d(hospital.train, hospital.val).size == 0
        assert np.array_equal(np.union1d(hospital.train, hospital.val), part)
        # stratified: each class with >= 2 images keeps round(10 %) (at least 1) in val
        local = real_labels[part, 0]
        held = real_labels[hospital.val, 0]
        for cls in (0, 1):
            count = int((local == cls).sum())
            if count >= 2:
                assert (held == cls).sum() == min(max(round(0.1 * count), 1), count - 1)
    (tmp_path / "partitions.json").write_text(real_plan.to_json())
    again = PartitionPlan.read(tmp_path / "partitions.json")
    assert all(np.array_equal(a.val, b.val) for a, b in zip(again.hospitals, real_plan.hospitals, strict=True))


def test_make_plan_reproducible(real_labels: np.ndarray, real_plan: PartitionPlan) -> None:
    federation = FederationConfig(hospitals=5, partition=Partition.DIRICHLET, alpha=0.5, min_hospital_size=20)
    again = make_plan("pneumoniamnist", REAL_FILE, real_labels, federation, val_fraction=0.1, seed=0)
    for a, b in zip(real_plan.hospitals, again.hospitals, strict=True):
        assert np.array_equal(a.train, b.train)
        assert np.array_equal(a.val, b.val)


def test_summarize_plan_counts_add_up(real_plan: PartitionPlan, real_labels: np.ndarray) -> None:
    summaries = summarize_plan(real_plan, real_labels, 2)
    assert [s.name for s in summaries] == [h.name for h in real_plan.hospitals]
    for s, h in zip(summaries, real_plan.hospitals, strict=True):
        assert (s.train, s.val) == (h.train.size, h.val.size)
        assert sum(s.class_counts) == s.train + s.val
    assert sum(s.train + s.val for s in summaries) == len(real_labels)
    totals = np.sum([s.class_counts for s in summaries], axis=0)
    assert np.array_equal(totals, np.bincount(real_labels[:, 0], minlength=2))
    assert label_skew(real_plan, real_labels, 2) == pytest.approx(
        label_skew([np.union1d(h.train, h.val) for h in real_plan.hospitals], real_labels, 2)
    )


def test_summarize_multilabel_counts_positives(multilabels: np.ndarray) -> None:
    federation = FederationConfig(hospitals=3, partition=Partition.DIRICHLET, alpha=1.0, min_hospital_size=10)
    plan = make_plan("chestlike", Path("chest.npz"), multilabels, federation, val_fraction=0.2, seed=5)
    summaries = summarize_plan(plan, multilabels, 4)
    assert all(s.val > 0 for s in summaries)
    totals = np.sum([s.class_counts for s in summaries], axis=0)
    assert np.array_equal(totals, multilabels.sum(axis=0))


def test_describe_table_renders_with_total_row() -> None:
    summaries = [
        HospitalSummary("hospital-0", 90, 10, (25, 75)),
        HospitalSummary("hospital-1", 45, 5, (40, 10)),
    ]
    console = Console(record=True, width=160, color_system=None)
    console.print(describe_table(summaries, ["normal", "pneumonia"]))
    text = console.export_text()
    for needle in ("hospital", "train", "val", "normal", "pneumonia", "hospital-0", "hospital-1"):
        assert needle in text
    assert "25 (25.0%)" in text
    assert "10 (20.0%)" in text
    total_line = next(line for line in text.splitlines() if "total" in line)
    for cell in ("135", "15", "65 (43.3%)", "85 (56.7%)"):
        assert cell in total_line
    lines = [line for line in text.splitlines() if line.strip()]
    assert "total" in lines[-2]  # last row before the table's bottom border


def test_describe_table_rejects_wrong_class_count() -> None:
    with pytest.raises(ValueError, match="class"):
        describe_table([HospitalSummary("hospital-0", 1, 0, (1,))], ["a", "b"])
