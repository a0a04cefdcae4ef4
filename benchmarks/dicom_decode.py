"""DICOM decoding speed for real radiographs: first epoch (decode) vs cached epoch.

Builds hospital folders of real computed radiographs from ``pydicom-data`` (RG1: 1955 x
1841, 15-bit; RG3: 1760 x 1760, 10-bit; both MONOCHROME1 with a VOI window), once
uncompressed and once JPEG 2000 lossless, then loads each folder twice through the same
code a hospital runs (``fedward.common.data.load``): the first load decodes, applies the
modality/VOI LUTs and resizes every file and fills the on-disk cache; the second reads
the cache. Prints images/s for both and their ratio.

Usage::

    python benchmarks/dicom_decode.py [--copies 12] [--image-size 224]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fedward.common.choices import FrameMode, Task
from fedward.common.data.load import load_image_folder
from fedward.common.schema import DatasetSchema

SOURCES = {
    "uncompressed": ("RG1_UNCR.dcm", "RG3_UNCR.dcm"),
    "JPEG 2000 lossless": ("RG1_J2KR.dcm", "RG3_J2KR.dcm"),
}
SCHEMA = DatasetSchema(Task.BINARY, ("normal", "abnormal"), 1)


def data_path() -> Path:
    try:
        import data_store
    except ImportError:
        raise SystemExit("this benchmark reads real radiographs from pydicom-data: pip install pydicom-data") from None
    return Path(data_store.DataStore().data_path)


def build_folder(root: Path, sources: tuple[str, ...], copies: int) -> Path:
    folder = root / "hospital"
    (folder / "images").mkdir(parents=True)
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        for i in range(copies):
            for j, name in enumerate(sources):
                relative = f"images/{i:03d}-{name}"
                shutil.copyfile(data_path() / name, folder / relative)
                writer.writerow([relative, SCHEMA.classes[(i + j) % 2], "train"])
    return folder


def timed_load(folder: Path, cache: Path, image_size: int) -> tuple[float, int]:
    started = time.perf_counter()
    data = load_image_folder(
        folder, SCHEMA, image_size, frames=FrameMode.MIDDLE, val_fraction=0.1, seed=0, name="bench", cache_root=cache
    )
    return time.perf_counter() - started, len(data.train) + len(data.val)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=12, help="copies of each radiograph per folder")
    parser.add_argument("--image-size", type=int, default=224, help="model input size (pixels)")
    args = parser.parse_args()
    console = Console()
    table = Table(title=f"Radiograph decoding into {args.image_size} px model input (fedward.common.data.load)")
    for column in ("pixel data", "files", "first epoch (images/s)", "cached epoch (images/s)", "cached / first"):
        table.add_column(column, justify="right" if column != "pixel data" else "left")
    for label, sources in SOURCES.items():
        with tempfile.TemporaryDirectory(prefix="fedward-bench-") as tmp:
            folder = build_folder(Path(tmp), sources, args.copies)
            cache = Path(tmp) / "cache"
            first_s, images = timed_load(folder, cache, args.image_size)
            cached_s, again = timed_load(folder, cache, args.image_size)
            assert images == again
            table.add_row(
                label, str(images), f"{images / first_s:.1f}", f"{images / cached_s:.1f}", f"{first_s / cached_s:.1f}x"
            )
    console.print(table)


if __name__ == "__main__":
    main()
