"""The MedMNIST v2 2D catalog: tasks, class names, split sizes and download checksums.

Source: the MedMNIST v3 release on Zenodo (record 10519652; Yang et al., "MedMNIST v2",
Scientific Data 10, 41, 2023). Files are ``<name>.npz`` at 28 px and ``<name>_<size>.npz``
at 64, 128 and 224 px (MedMNIST+). The catalog ships as ``medmnist_catalog.json`` so
that fedward does not depend on the ``medmnist`` package (which pulls a torchvision that
does not import beside the pinned torch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from fedward.common.choices import Modality, Task

_TASKS = {"binary": Task.BINARY, "multiclass": Task.MULTICLASS, "multilabel": Task.MULTILABEL}


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One MedMNIST 2D dataset.

    Attributes:
        name: lower-case dataset name (``pneumoniamnist``).
        task: classification task (ordinal regression is treated as multi-class).
        channels: image channels, 1 (grayscale) or 3 (RGB).
        classes: class names (labels for multi-label), index order.
        samples: official split sizes, ``{"train": n, "val": n, "test": n}``.
        license: data license.
        md5: MD5 of the official file per image size in pixels.
        modality: the source images' DICOM modality (chest X-rays DX, breast ultrasound US,
            abdominal CT organs CT; OT for photographs, microscopy and OCT).
    """

    name: str
    task: Task
    channels: int
    classes: tuple[str, ...]
    samples: dict[str, int]
    license: str
    md5: dict[int, str]
    modality: Modality = Modality.OT

    def file_name(self, image_size: int) -> str:
        """The official file name at ``image_size`` pixels."""
        return dataset_file_name(self.name, image_size)

    def url(self, image_size: int) -> str:
        """The official download address of the file at ``image_size`` pixels."""
        return str(_raw()["record_url"]).format(file=self.file_name(image_size))


def dataset_file_name(name: str, image_size: int) -> str:
    """``pneumoniamnist.npz`` at 28 px, ``pneumoniamnist_64.npz`` at 64 px (MedMNIST naming)."""
    return f"{name}.npz" if image_size == 28 else f"{name}_{image_size}.npz"


@cache
def _raw() -> dict[str, object]:
    text = resources.files("fedward.common.data").joinpath("medmnist_catalog.json").read_text("utf-8")
    return json.loads(text)  # type: ignore[no-any-return]


@cache
def catalog() -> dict[str, CatalogEntry]:
    """All MedMNIST 2D datasets by name."""
    entries: dict[str, CatalogEntry] = {}
    for name, info in _raw()["datasets"].items():  # type: ignore[attr-defined]
        entries[name] = CatalogEntry(
            name=name,
            task=_TASKS[info["task"]],
            channels=int(info["channels"]),
            classes=tuple(info["classes"]),
            samples=dict(info["samples"]),
            license=info["license"],
            md5={int(size): md5 for size, md5 in info["md5"].items()},
            modality=Modality(info.get("modality", "OT")),
        )
    return entries


def lookup(name: str) -> CatalogEntry | None:
    """The catalog entry for ``name`` (case-insensitive), or ``None`` for other datasets."""
    return catalog().get(name.strip().lower())
