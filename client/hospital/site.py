"""Which data this hospital trains on, from the SuperNode's node config and the run.

Node config keys (set when the SuperNode starts):

* ``data-dir``: the hospital's data folder (deployment): DICOM/PNG/JPEG with
  ``labels.csv`` or class sub-folders, or a MedMNIST-layout ``.npz``;
* ``hospital-name``: the hospital's name in the coordinator's records (default: the
  folder's name);
* ``cache-dir``: where decoded images are cached (default: ``data.cache-dir`` of the
  run, else ``~/.fedward/cache/decoded``);
* ``threads``: CPU threads training may use (the hospital's own limit);
* ``partition-id`` / ``num-partitions``: set by Flower's simulation runtime; the
  simulated hospital reads folder ``data.hospital-dirs[partition-id]`` when the run lists
  folders, else its share of the run's partition plan (``partitions.json``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedward.common.config import RunSpec
from fedward.common.data.hospital import HospitalData, hospital_from_plan
from fedward.common.data.load import cache_root_for, load_site_folder
from fedward.common.errors import ConfigError, DataError
from fedward.common.rundir.layout import PLAN_FILE

log = logging.getLogger(__name__)

DATA_DIR_KEY = "data-dir"
NAME_KEY = "hospital-name"
CACHE_KEY = "cache-dir"
PARTITION_KEY = "partition-id"
THREADS_KEY = "threads"


def load_site(node: Mapping[str, Any], spec: RunSpec) -> HospitalData:
    """This hospital's training and validation data for the run ``spec``.

    Args:
        node: the SuperNode's node config (``context.node_config``).
        spec: the run.

    Raises:
        DataError: if the node config names no data, or the data cannot be used.
        ConfigError: if a simulated hospital has no folder or partition plan.
    """
    cfg, schema = spec.config, spec.schema
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
        if spec.run_dir is None:
            raise ConfigError("simulated hospitals need the run directory holding partitions.json")
        plan_file, partition = spec.run_dir / PLAN_FILE, int(node[PARTITION_KEY])
        data = hospital_from_plan(plan_file, partition, schema, cfg.data, cache_root_for(cfg, node.get(CACHE_KEY)))
        _log_loaded(data)
        return data
    else:
        raise DataError("this SuperNode has no data: start it with --node-config 'data-dir=\"/path/to/hospital/data\"'")
    override = node.get(CACHE_KEY)
    data = load_site_folder(folder, cfg, schema, name=name, cache_root=cache_root_for(cfg, str(override or "") or None))
    _log_loaded(data)
    return data


def _log_loaded(data: HospitalData) -> None:
    log.info("hospital %s: %d training and %d validation images", data.name, len(data.train), len(data.val))
