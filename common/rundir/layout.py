"""The layout of a run directory: every file's name, in one place, and how new run directories are named.

::

    <run_dir>/
      config.toml              the user's settings the run used (re-runnable with --config)
      run.json                 what setup found: dataset schema, mode, Flower run id
      partitions.json          simulation only: which images each hospital held (indices)
      status.json              state, round k/N, latest and best metrics (progress displays)
      metrics/server.jsonl|csv one line per round: aggregated and server-side metrics
      metrics/hospitals.jsonl|csv  one line per hospital, round and phase
      hospitals.json           the enrolled hospitals: name, fedward version, device, image counts
      models/round-NNN.safetensors  the global model after every round (000 = initial)
      models/best.safetensors  the round with the best validation AUC (+ best.json)
      models/manifest.json     sha256 and size of every weight file, as written
      checkpoint.safetensors   the state to continue from after the last completed round
      .lock                    held by the process writing the run
      model_card.json|md       what was trained on what, how well, with what guarantees
      plots/learning_curves.png
      tracking.json            what was delivered to MLflow (run id, undelivered rounds)
      tensorboard/             TensorBoard event files ([tracking] tensorboard = true)
      logs/                    server.log, flower.log, superlink.log
      app/                     the Flower app bundle a simulation submitted

Every other module names these files through this one; none spells a file name itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fedward.common.timestamps import run_stamp

CONFIG_FILE = "config.toml"
RUN_FILE = "run.json"
PLAN_FILE = "partitions.json"
STATUS_FILE = "status.json"
CHECKPOINT_FILE = "checkpoint.safetensors"
LOCK_FILE = ".lock"
CARD_JSON = "model_card.json"
CARD_MD = "model_card.md"
METRICS_DIR = "metrics"
MODELS_DIR = "models"
PLOTS_DIR = "plots"
LOGS_DIR = "logs"
APP_DIR = "app"
BEST_WEIGHTS = f"{MODELS_DIR}/best.safetensors"
BEST_RECORD = f"{MODELS_DIR}/best.json"
MANIFEST_FILE = f"{MODELS_DIR}/manifest.json"
CURVES_PNG = f"{PLOTS_DIR}/learning_curves.png"
RELIABILITY_PNG = f"{PLOTS_DIR}/reliability.png"
CALIBRATION_DIR = f"{METRICS_DIR}/calibration"
"""Per round: the federation's merged validation statistics (``round-NNN.json``; sums over fixed bins)."""
SITES_FILE = "hospitals.json"
"""The hospitals enrolled so far (counts and versions only), rewritten when one enrols (federated runs)."""
TRACKING_FILE = "tracking.json"
"""What a tracked run delivered to MLflow: URI, experiment, MLflow run id, undelivered records."""
TENSORBOARD_DIR = "tensorboard"
SERVER_LOG = f"{LOGS_DIR}/server.log"
FLOWER_LOG = f"{LOGS_DIR}/flower.log"
ROUND_WEIGHTS = re.compile(r"round-(\d+)\.safetensors")
"""Name of a round's weight file inside ``models/`` (the round in group 1)."""
ROW_FILES = {"server": ("round",), "hospitals": ("round", "hospital", "phase")}
"""The two metrics tables (``metrics/<name>.jsonl|csv``) and their leading CSV columns."""


def round_weights(server_round: int) -> str:
    """``models/round-NNN.safetensors`` of round ``server_round`` (0 = the initial model)."""
    return f"{MODELS_DIR}/round-{server_round:03d}.safetensors"


@dataclass(frozen=True, slots=True)
class RunDir:
    """The paths of one run directory.

    Attributes:
        root: the run directory.
    """

    root: Path

    def __truediv__(self, name: str) -> Path:
        """``RunDir(root) / layout.STATUS_FILE`` is ``root / "status.json"``."""
        return self.root / name

    def rows(self, table: str) -> Path:
        """``metrics/<table>.jsonl`` (``table``: ``server`` or ``hospitals``)."""
        return self.root / METRICS_DIR / f"{table}.jsonl"

    def csv(self, table: str) -> Path:
        """``metrics/<table>.csv``."""
        return self.root / METRICS_DIR / f"{table}.csv"

    def weights(self, server_round: int) -> Path:
        """The global model's weights after ``server_round``."""
        return self.root / round_weights(server_round)


def is_run_directory(path: Path) -> bool:
    """Whether ``path`` is a run directory (a folder with ``status.json`` or ``config.toml``)."""
    return path.is_dir() and ((path / STATUS_FILE).is_file() or (path / CONFIG_FILE).is_file())


def new_run_dir(output_dir: Path, name: str, suffix: str = "") -> Path:
    """Create a fresh run directory ``<output_dir>/<UTC time>-<name>[-<suffix>]``.

    An existing directory is never reused: a clash gets ``.1``, ``.2``... appended.

    Returns:
        The new directory, resolved.

    Raises:
        OSError: if ``output_dir`` cannot be created.
    """
    base = f"{run_stamp()}-{name}" + (f"-{suffix}" if suffix else "")
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    for attempt in range(1000):
        candidate = root / (base if attempt == 0 else f"{base}.{attempt}")
        try:
            candidate.mkdir()
            return candidate.resolve()
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a new run directory under {root}")  # pragma: no cover
