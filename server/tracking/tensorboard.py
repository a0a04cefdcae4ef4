"""TensorBoard event files in ``<run>/tensorboard/``: every round's server and hospital metrics as scalars.

Keys are those of :mod:`fedward.server.tracking.names` (``val-auc``,
``hospital/hospital-0/val-auc``), the step is the round and the wall time the row's
recorded time; the config is a text summary (``config``). ``tensorboard --logdir runs/``
shows every run. A resumed run purges the steps it writes again, so a round recorded
twice (killed between its record and its checkpoint) shows once. Writing is local and
fast, so it happens on the recording thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedward.common.config.tracking import INSTALL_HINT
from fedward.common.errors import ConfigError
from fedward.common.rundir.layout import TENSORBOARD_DIR
from fedward.server.tracking.names import round_metrics, row_time
from fedward.server.tracking.record import update_tracking

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger(__name__)


class TensorBoardSink:
    """Writes a run's metrics as TensorBoard scalars.

    Args:
        run_dir: the run directory; event files go to its ``tensorboard/`` folder.
        resume: the run continues after a checkpoint: steps from the first round it
            records on are purged from earlier event files.

    Raises:
        ConfigError: naming ``tracking.tensorboard`` when the tensorboard package is missing.
    """

    name = "TensorBoard"

    def __init__(self, run_dir: Path, *, resume: bool = False) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (needs the tensorboard package)
        except ImportError:
            raise ConfigError(f"tracking.tensorboard needs the tensorboard package: {INSTALL_HINT}") from None
        self.folder = Path(run_dir) / TENSORBOARD_DIR
        self.run_dir = Path(run_dir)
        self._resume = resume
        self._writer: SummaryWriter | None = None
        self._params: Mapping[str, str] = {}

    def _open(self, first_step: int) -> SummaryWriter:
        """The writer, created at the first round (a resumed run purges from that round on)."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.folder), purge_step=first_step if self._resume else None)
            if self._params:
                self._writer.add_text("config", _table(self._params), global_step=first_step)
            update_tracking(self.run_dir, "tensorboard", {"dir": TENSORBOARD_DIR})
        return self._writer

    def log_params(self, params: Mapping[str, str]) -> None:
        """Keep the config; written as text with the first round."""
        self._params = dict(params)

    def log_round(
        self, server_round: int, server_metrics: Mapping[str, Any], hospital_rows: Sequence[Mapping[str, Any]]
    ) -> None:
        """Write the round's scalars (step = round) and flush them."""
        writer = self._open(server_round)
        wall = row_time(server_metrics, time.time())
        for key, value in round_metrics(server_metrics, hospital_rows).items():
            writer.add_scalar(key, value, global_step=server_round, walltime=wall)
        writer.flush()

    def log_artifacts(self, run_dir: Path) -> None:
        """Nothing: the plots and weights stay in the run directory beside the event files."""

    def close(self, state: str) -> str:
        """Close the event file; nothing is ever left undelivered."""
        if self._writer is not None:
            self._writer.close()
        return ""


def _table(params: Mapping[str, str]) -> str:
    """The config as a Markdown table (TensorBoard renders text as Markdown)."""
    lines = ["| setting | value |", "|---|---|"]
    lines += [f"| {key} | {value.replace('|', '/')} |" for key, value in params.items()]
    return "\n".join(lines)
