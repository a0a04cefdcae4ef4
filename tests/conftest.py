"""Shared fixtures: the real data folder and tiny generated MedMNIST-layout files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.flower import flower_identity  # noqa: F401  (autouse: Flower messages need a task identity)
from fixtures.registry import template  # noqa: F401  (a runs folder with one finished run)
from fixtures.synthetic import write_npz

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def fresh_hospital_runs() -> Iterator[None]:
    """Each test starts with no run cached by the ClientApp (tests reuse run ids)."""
    from fedward.client.hospital.run_cache import forget_runs

    forget_runs()
    yield
    forget_runs()


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """``../shared/data`` holding the real PneumoniaMNIST (skips if absent)."""
    if not (SHARED_DATA / "pneumoniamnist.npz").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA}/pneumoniamnist.npz")
    return SHARED_DATA


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    """A small learnable binary dataset saved as ``<tmp>/data/tinymnist.npz``."""
    return write_npz(tmp_path / "data" / "tinymnist.npz")
