"""Find a dataset file on disk, or download it once from the official MedMNIST record.

Lookup order for the folder: the ``data_dir`` argument (``--data-dir``), else the
``FEDWARD_DATA_DIR`` environment variable, else ``~/.fedward/data``.

In that folder the file at the requested size wins (``pneumoniamnist_64.npz`` for 64 px),
then the 28 px file (``pneumoniamnist.npz``, resized when loaded). If neither is there and
the dataset is in the MedMNIST catalog, the native file is downloaded with :mod:`pooch`
and its MD5 checked. Offline, or behind a firewall, that fails with one line saying
where to put the file: hospitals and CI machines never need the network.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from fedward.common.data.catalog import catalog, dataset_file_name, lookup
from fedward.common.data.sources import folder_layout
from fedward.common.errors import ConfigError, DataError, DownloadError

log = logging.getLogger(__name__)

DATA_DIR_ENV = "FEDWARD_DATA_DIR"
"""Environment variable naming the default data folder."""

DOWNLOAD_TIMEOUT_S = 30.0
"""Seconds to wait for the download server to answer before giving up."""


def default_data_dir() -> Path:
    """``$FEDWARD_DATA_DIR`` if set, else ``~/.fedward/data``."""
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".fedward" / "data"


def locate_dataset(
    dataset: str,
    image_size: int,
    data_dir: Path | None = None,
    *,
    download: bool = True,
) -> Path:
    """Return the path of the ``.npz`` file (or the folder data set) for ``dataset``, downloading it if allowed.

    A folder ``<data_dir>/<dataset>`` in a layout :func:`~fedward.common.data.sources.folder_layout`
    recognises (image + mask folders, Decathlon, DICOM series with SEG) is returned as it is.

    Args:
        dataset: MedMNIST name or the stem of a MedMNIST-layout ``.npz``.
        image_size: requested model input size in pixels.
        data_dir: folder to look in; ``None`` uses :func:`default_data_dir`.
        download: try the official record when the file is missing.

    Returns:
        Path of an existing file (the native-size file if present, else the 28 px file) or folder.

    Raises:
        DataError: if an explicitly given ``data_dir`` does not exist or is not a folder.
        DataError: if the file is missing and ``download`` is false.
        ConfigError: if the file is missing and ``dataset`` is not a MedMNIST 2D dataset.
        DownloadError: if the file is missing and could not be downloaded; the message
            says where to put it.
    """
    name = dataset.strip().lower()
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        if not folder.exists():
            raise DataError(f"data directory {folder} does not exist")
        if not folder.is_dir():
            raise DataError(f"data directory {folder} is not a folder")
    else:
        folder = default_data_dir()

    if folder_layout(folder / dataset.strip()) is not None:  # a folder data set (segmentation, BUSI...)
        return folder / dataset.strip()
    candidates = [dataset_file_name(name, image_size)]
    if image_size != 28:
        candidates.append(dataset_file_name(name, 28))
    for candidate in candidates:
        if (folder / candidate).is_file():
            return folder / candidate

    if not download:
        raise DataError(f"{candidates[0]} not found in {folder}: put it there or pass --data-dir")
    entry = lookup(name)
    if entry is None:
        known = ", ".join(sorted(catalog()))
        raise ConfigError(
            f"unknown dataset {dataset!r}: not a MedMNIST 2D dataset ({known}) and no {candidates[0]} in {folder}"
        )
    target = entry.file_name(image_size)
    where = f"put {target} in {folder} or pass --data-dir"
    return _download(entry.url(image_size), entry.md5[image_size], folder, target, where)


def _download(url: str, md5: str, folder: Path, target: str, where: str) -> Path:
    import pooch  # imported lazily: only the download path needs it

    log.info("downloading %s from the MedMNIST record into %s", target, folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = pooch.retrieve(
            url,
            known_hash=f"md5:{md5}",
            fname=target,
            path=folder,
            progressbar=False,
            downloader=pooch.HTTPDownloader(timeout=DOWNLOAD_TIMEOUT_S, progressbar=False),
        )
    except Exception as err:
        reason = _short_reason(err)
        raise DownloadError(f"{target} is not on disk and could not be downloaded ({reason}): {where}") from None
    return Path(path)


def _short_reason(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    if "hash" in text.lower() or "md5" in text.lower():
        return "checksum mismatch"
    if len(text) > 120:
        text = text[:117] + "..."
    return f"{type(err).__name__}: {text}"
