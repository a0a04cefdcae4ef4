"""Logging setup for fedward's processes (CLI, ServerApp, ClientApp).

Modules log through ``logging.getLogger(__name__)``; this module attaches handlers to
the ``fedward`` logger once per process: a concise stderr handler (captured by Flower
into the run's log stream when running inside a ServerApp or ClientApp) and optionally
a file in the run directory.

What is logged is counts, names of hospitals, metrics, settings and file names: never
pixel values or statistics, never DICOM header content.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_STREAM_MARK = "_fedward_stream"


def configure_logging(level: int = logging.INFO, file: Path | None = None, *, stream: bool = True) -> logging.Logger:
    """Attach handlers to the ``fedward`` logger (idempotent).

    Args:
        level: minimum level of the ``fedward`` logger.
        file: also append records to this file (its folder is created).
        stream: log to stderr.

    Returns:
        The ``fedward`` logger.
    """
    logger = logging.getLogger("fedward")
    logger.setLevel(level)
    logger.propagate = False
    if stream and not any(getattr(h, _STREAM_MARK, False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        setattr(handler, _STREAM_MARK, True)
        logger.addHandler(handler)
    if file is not None:
        target = str(Path(file).resolve())
        if not any(isinstance(h, logging.FileHandler) and h.baseFilename == target for h in logger.handlers):
            Path(file).parent.mkdir(parents=True, exist_ok=True)
            file_handler = logging.FileHandler(target, encoding="utf-8")
            file_handler.setFormatter(logging.Formatter(FORMAT))
            logger.addHandler(file_handler)
    return logger
