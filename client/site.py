"""Which data this hospital trains on, read once per process from the node config.

Node config keys (set when the SuperNode starts):

* ``data-dir``: the hospital's data folder (deployment). ``hospital-name`` names the
  hospital in the coordinator's records (default: the folder's name).
* ``partition-id`` / ``num-partitions``: set by Flower's simulation runtime; the
  hospital reads its share from the run's partition plan (``partitions.json``).

Loaded data is cached for the life of the process: a simulated hospital's Ray worker
serves many rounds, and decoding and resizing should happen once.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

from flwr.app import Context

from fedward.common.config import RunConfig
from fedward.common.data.hospital import PLAN_FILE, HospitalData, hospital_from_folder, hospital_from_plan
from fedward.common.data.npz import DatasetSchema
from fedward.common.errors import ConfigError, DataError
from fedward.common.runtime import derive_seed

log = logging.getLogger(__name__)

DATA_DIR_KEY = "data-dir"
NAME_KEY = "hospital-name"
PARTITION_KEY = "partition-id"


def load_site(context: Context, cfg: RunConfig) -> HospitalData:
    """This hospital's training and validation data.

    Raises:
        DataError: if the node config names no data, or the data cannot be used.
        ConfigError: if the run config lacks the dataset schema.
    """
    schema = cfg.data.schema()
    node = context.node_config
    if DATA_DIR_KEY in node:
        folder = Path(str(node[DATA_DIR_KEY])).expanduser()
        name = str(node.get(NAME_KEY) or folder.resolve().name)
        stamp = _stamp(folder)
        return _from_folder(
            str(folder),
            stamp,
            cfg.data.dataset,
            schema,
            cfg.data.image_size,
            cfg.data.val_fraction,
            cfg.run.seed,
            name,
        )
    if PARTITION_KEY in node:
        if cfg.run.dir is None:
            raise ConfigError("simulated hospitals need run.dir (the run directory holding partitions.json)")
        plan = cfg.run.dir / PLAN_FILE
        return _from_plan(str(plan), _stamp(plan), int(node[PARTITION_KEY]), schema, cfg.data.image_size)
    raise DataError("this SuperNode has no data: start it with --node-config 'data-dir=\"/path/to/hospital/data\"'")


def _stamp(path: Path) -> tuple[int, int]:
    """(mtime_ns, size) of a file, or of the newest entry of a folder: cache invalidation."""
    try:
        if path.is_dir():
            stats = [p.stat() for p in path.iterdir() if p.is_file()]
            return (max((s.st_mtime_ns for s in stats), default=0), sum(s.st_size for s in stats))
        stat = path.stat()
        return (stat.st_mtime_ns, stat.st_size)
    except OSError:
        return (0, 0)


@lru_cache(maxsize=4)
def _from_folder(
    folder: str,
    stamp: tuple[int, int],
    dataset: str,
    schema: DatasetSchema,
    image_size: int,
    val_fraction: float,
    seed: int,
    name: str,
) -> HospitalData:
    del stamp  # part of the cache key only
    data = hospital_from_folder(
        Path(folder), dataset, schema, image_size, val_fraction, derive_seed(seed, "holdout"), name
    )
    log.info("hospital %s: %d training and %d validation images", data.name, len(data.train), len(data.val))
    return data


@lru_cache(maxsize=8)
def _from_plan(
    plan: str, stamp: tuple[int, int], partition_id: int, schema: DatasetSchema, image_size: int
) -> HospitalData:
    del stamp
    data = hospital_from_plan(Path(plan), partition_id, schema, image_size)
    log.info("hospital %s: %d training and %d validation images", data.name, len(data.train), len(data.val))
    return data
