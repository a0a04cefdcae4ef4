"""Which data this hospital trains on, read once per process from the node config.

Node config keys (set when the SuperNode starts):

* ``data-dir``: the hospital's data folder (deployment): DICOM/PNG/JPEG with
  ``labels.csv`` or class sub-folders, or a MedMNIST-layout ``.npz``;
* ``hospital-name``: the hospital's name in the coordinator's records (default: the
  folder's name);
* ``cache-dir``: where decoded images are cached (default: ``data.cache-dir`` of the
  run, else ``~/.fedward/cache/decoded``);
* ``partition-id`` / ``num-partitions``: set by Flower's simulation runtime; the
  simulated hospital reads folder ``data.hospital-dirs[partition-id]`` when the run lists
  folders, else its share of the run's partition plan (``partitions.json``).

Loaded data is kept for the life of the process (a simulated hospital's Ray worker
serves many rounds); it is reloaded when a file in the folder changes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from flwr.app import Context

from fedward.common.choices import FrameMode
from fedward.common.config import RunConfig
from fedward.common.data.cache import default_cache_root
from fedward.common.data.hospital import PLAN_FILE, HospitalData, hospital_from_plan
from fedward.common.data.load import load_hospital_folder
from fedward.common.data.npz import DatasetSchema
from fedward.common.errors import ConfigError, DataError
from fedward.common.ml.runtime import derive_seed

log = logging.getLogger(__name__)

DATA_DIR_KEY = "data-dir"
NAME_KEY = "hospital-name"
CACHE_KEY = "cache-dir"
PARTITION_KEY = "partition-id"
THREADS_KEY = "threads"


@dataclass(frozen=True, slots=True)
class FolderRequest:
    """Everything that decides what a folder loads to (hashable, for the process cache)."""

    folder: str
    dataset: str
    schema: DatasetSchema
    image_size: int
    frames: FrameMode
    val_fraction: float
    seed: int
    name: str
    cache_root: str | None


def load_site(context: Context, cfg: RunConfig) -> HospitalData:
    """This hospital's training and validation data.

    Raises:
        DataError: if the node config names no data, or the data cannot be used.
        ConfigError: if the run config lacks the dataset schema or a simulated hospital's
            folder.
    """
    schema = cfg.data.schema()
    node = context.node_config
    if DATA_DIR_KEY in node:
        folder = Path(str(node[DATA_DIR_KEY])).expanduser()
        name = str(node.get(NAME_KEY) or folder.resolve().name)
    elif PARTITION_KEY in node and cfg.data.hospital_dirs:
        partition = int(node[PARTITION_KEY])
        if not 0 <= partition < len(cfg.data.hospital_dirs):
            raise ConfigError(f"simulated hospital {partition} has no folder in data.hospital-dirs")
        folder = cfg.data.hospital_dirs[partition]
        name = folder.name
    elif PARTITION_KEY in node:
        if cfg.run.dir is None:
            raise ConfigError("simulated hospitals need run.dir (the run directory holding partitions.json)")
        plan = cfg.run.dir / PLAN_FILE
        return _from_plan(str(plan), _stamp(plan), int(node[PARTITION_KEY]), schema, cfg.data.image_size)
    else:
        raise DataError("this SuperNode has no data: start it with --node-config 'data-dir=\"/path/to/hospital/data\"'")
    cache_root = None
    if cfg.data.cache:
        cache_root = str(Path(str(node.get(CACHE_KEY) or cfg.data.cache_dir or default_cache_root())).expanduser())
    request = FolderRequest(
        str(folder),
        cfg.data.dataset,
        schema,
        cfg.data.image_size,
        cfg.data.frames,
        cfg.data.val_fraction,
        derive_seed(cfg.run.seed, "holdout"),
        name,
        cache_root,
    )
    return _from_folder(request, _stamp(folder))


def _stamp(path: Path) -> tuple[int, int, int]:
    """(newest mtime_ns, total size, file count) below ``path``: reload when files change."""
    try:
        if path.is_dir():
            stats = [p.stat() for p in path.rglob("*") if p.is_file()]
            return (max((s.st_mtime_ns for s in stats), default=0), sum(s.st_size for s in stats), len(stats))
        stat = path.stat()
        return (stat.st_mtime_ns, stat.st_size, 1)
    except OSError:
        return (0, 0, 0)


@lru_cache(maxsize=4)
def _from_folder(request: FolderRequest, stamp: tuple[int, int, int]) -> HospitalData:
    del stamp  # part of the cache key only
    data = load_hospital_folder(
        Path(request.folder),
        request.dataset,
        request.schema,
        request.image_size,
        frames=request.frames,
        val_fraction=request.val_fraction,
        seed=request.seed,
        name=request.name,
        cache_root=Path(request.cache_root) if request.cache_root else None,
    )
    log.info("hospital %s: %d training and %d validation images", data.name, len(data.train), len(data.val))
    return data


@lru_cache(maxsize=8)
def _from_plan(
    plan: str, stamp: tuple[int, int, int], partition_id: int, schema: DatasetSchema, image_size: int
) -> HospitalData:
    del stamp
    data = hospital_from_plan(Path(plan), partition_id, schema, image_size)
    log.info("hospital %s: %d training and %d validation images", data.name, len(data.train), len(data.val))
    return data
