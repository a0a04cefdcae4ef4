"""Open a data set found on this machine, whatever its form: a MedMNIST ``.npz`` file or a folder data set.

A run's data set (``data.dataset`` in ``data.data-dir``) is either a MedMNIST-layout
``.npz`` (classification) or a folder in one of the layouts of
:mod:`fedward.common.data.sources` (image + mask folders, Decathlon NIfTI, DICOM series
with SEG). :func:`open_dataset` reads either into splits and its schema, so run setup,
the simulated hospitals and the server's test split read data sets one way.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fedward.common.config.sections import DataConfig
from fedward.common.data.masksplit import MaskSplit
from fedward.common.data.npz import SPLITS, ArraySplit, infer_schema, read_npz
from fedward.common.data.sources import read_folder_dataset
from fedward.common.errors import DataError
from fedward.common.schema import DatasetSchema

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OpenedDataset:
    """A data set read from this machine.

    Attributes:
        path: the ``.npz`` file or the folder, absolute.
        schema: what the data says of its task, labels, channels, dimensions and modality.
        splits: the requested splits it holds (a folder may lack ``val`` or ``test``).
        skipped: files or cases that could not be used, by reason (folders only).
        strata: names of the groups the splits' ``labels`` index, which partitioning
            balances or skews: the classes of a classification; for segmentation the
            images' classes where the data set has them (BUSI), else one group.
    """

    path: Path
    schema: DatasetSchema
    splits: dict[str, ArraySplit | MaskSplit]
    skipped: dict[str, int]
    strata: tuple[str, ...]


def open_dataset(
    path: Path, data: DataConfig, splits: Sequence[str] = SPLITS, *, cache_root: Path | None
) -> OpenedDataset:
    """Read the data set at ``path`` with the run's data settings.

    Args:
        path: a MedMNIST-layout ``.npz`` or a folder data set.
        data: the run's data section (image size, grid, target, intensity...).
        splits: which splits to return.
        cache_root: where folder data sets keep their prepared arrays (``None``: no cache).

    Raises:
        DataError: if the file or folder cannot be read, or a folder has no training split.
    """
    path = Path(path).resolve()
    if not path.is_dir():
        arrays = read_npz(path, splits)
        schema = infer_schema(data.dataset, arrays)
        return OpenedDataset(path, schema, dict(arrays), {}, schema.classes)
    read = read_folder_dataset(path, data, cache_root=cache_root)
    if "train" not in read.splits:
        raise DataError(f"{path.name} holds no usable training case ({len(read.problems)} files or cases skipped)")
    skipped = Counter(p.reason.value for p in read.problems)
    if skipped:
        log.warning(
            "%s: %d files or cases skipped (%s)",
            path.name,
            len(read.problems),
            ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())),
        )
    chosen = {name: split for name, split in read.splits.items() if name in splits}
    return OpenedDataset(path, read.schema, chosen, dict(skipped), read.strata or ("all cases",))
