"""Shared fixtures: the real data folder and tiny generated MedMNIST-layout files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fixtures.synthetic import write_npz

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
