"""The partition plan of a simulation: which rows of a dataset each simulated hospital holds.

The simulation driver writes it into the run directory (``partitions.json``) before the
run starts; each simulated hospital reads its own share from it. The plan holds indices
into the dataset's official training split and names, never pixels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedward.common.errors import DataError
from fedward.common.fileio import read_json_object

PLAN_FORMAT = "fedward-partitions/1"


@dataclass(frozen=True, slots=True)
class HospitalSplit:
    """One simulated hospital's share of the official training split.

    Attributes:
        name: hospital name (``hospital-0``...).
        train: int64 indices (M,) of its training images.
        val: int64 indices (V,) of its local validation images.
    """

    name: str
    train: np.ndarray
    val: np.ndarray


@dataclass(frozen=True, slots=True)
class PartitionPlan:
    """How a dataset's training split is divided among simulated hospitals.

    Attributes:
        dataset: dataset name.
        source: the ``.npz`` file the indices refer to.
        method: partition method (``iid``, ``dirichlet``, ``quantity``).
        alpha: Dirichlet concentration used (ignored for ``iid``).
        seed: seed the plan was drawn with.
        hospitals: one split per hospital, in partition-id order.
    """

    dataset: str
    source: Path
    method: str
    alpha: float
    seed: int
    hospitals: tuple[HospitalSplit, ...]

    def to_json(self) -> str:
        """The plan as JSON text (indices only, no pixels): what ``partitions.json`` holds."""
        doc: dict[str, Any] = {
            "format": PLAN_FORMAT,
            "dataset": self.dataset,
            "source": str(self.source),
            "method": self.method,
            "alpha": self.alpha,
            "seed": self.seed,
            "hospitals": [{"name": h.name, "train": h.train.tolist(), "val": h.val.tolist()} for h in self.hospitals],
        }
        return json.dumps(doc)

    @classmethod
    def read(cls, path: Path) -> PartitionPlan:
        """Read a plan written by :meth:`write`.

        Raises:
            DataError: if the file is missing or not a partition plan.
        """
        try:
            doc = read_json_object(Path(path))
            if doc.get("format") != PLAN_FORMAT:
                raise ValueError(f"format is {doc.get('format')!r}, expected {PLAN_FORMAT!r}")
            hospitals = tuple(
                HospitalSplit(h["name"], np.asarray(h["train"], dtype=np.int64), np.asarray(h["val"], dtype=np.int64))
                for h in doc["hospitals"]
            )
            return cls(
                doc["dataset"],
                Path(doc["source"]),
                doc["method"],
                float(doc["alpha"]),
                int(doc["seed"]),
                hospitals,
            )
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DataError(f"cannot read partition plan {path}: {err}") from None
