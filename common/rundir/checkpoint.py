"""Checkpoints: everything a run needs to continue after its last completed round, in one file.

Flower has no checkpoint/resume of its own. After every round (round 0 = the initial
model) the ServerApp writes ``<run_dir>/checkpoint.safetensors``, one file:

* tensors: the global model (``model/<key>``), the strategy's state (``strategy/...``:
  FedAdam/FedYogi/FedAdagrad moments ``m_t``/``v_t``, FedAvgM's momentum, the strategies'
  current global arrays) and PyTorch's CPU RNG state;
* metadata (JSON): format, round, the state of Python's and NumPy's global generators
  (Flower samples hospitals with :mod:`random`; its DP wrappers draw noise from
  ``numpy.random``), scalar strategy state (the adaptive clipping norm) and the run's own
  counters (the largest DP-SGD epsilon reported so far).

The privacy accountant needs no state of its own: fedward's client-level epsilon is a
pure function of the config and the round (:mod:`fedward.server.app.dp_plan`).

The file is written to a temporary name, fsynced and renamed over the previous one, and
the directory entry is fsynced: after a crash (even SIGKILL or power loss) the run
directory holds either the previous checkpoint or the new one, whole. Tensors use
safetensors, so loading a checkpoint never unpickles anything.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from fedward.common.errors import FedwardError
from fedward.common.fileio import write_atomically
from fedward.common.rundir.layout import CHECKPOINT_FILE

log = logging.getLogger(__name__)

FORMAT = "fedward-checkpoint/1"


class CheckpointError(FedwardError):
    """A run cannot be resumed: no checkpoint, or one that does not fit the run."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A run's state after ``server_round``.

    Attributes:
        server_round: the last completed round (0 = only the initial model).
        model: the global model, key -> array (the state dict's dtypes and shapes).
        strategy: strategy state, ``<path>.<attribute>`` -> encoded value
            (see :func:`fedward.server.app.strategy_state.strategy_state`).
        rng: generator states (see :func:`capture_rng`).
        extra: the run's own counters, JSON values.
    """

    server_round: int
    model: dict[str, np.ndarray]
    strategy: dict[str, Any] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def model_state(self) -> dict[str, torch.Tensor]:
        """The global model as a PyTorch state dict (CPU tensors, keys in the state dict's order)."""
        return {k: torch.from_numpy(np.ascontiguousarray(v).copy()) for k, v in self.model.items()}


# ------------------------------------------------------------------------------------ RNG
def capture_rng() -> dict[str, Any]:
    """The state of Python's, NumPy's (legacy global) and PyTorch's CPU generators."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": [version, list(internal), gauss],
        "numpy": [str(name), np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state().numpy().copy(),
    }


def restore_rng(state: Mapping[str, Any]) -> None:
    """Put the generators back in the state :func:`capture_rng` saw."""
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(torch.from_numpy(np.asarray(state["torch"], dtype=np.uint8).copy()))


# ------------------------------------------------------------------------------ file I/O
def save_checkpoint(run_dir: Path, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` to ``<run_dir>/checkpoint.safetensors`` atomically.

    Returns:
        The checkpoint file.
    """
    tensors: dict[str, np.ndarray] = {f"model/{k}": np.ascontiguousarray(v) for k, v in checkpoint.model.items()}
    strategy_meta: dict[str, Any] = {}
    for key, entry in checkpoint.strategy.items():
        if entry["kind"] == "float":
            strategy_meta[key] = entry
            continue
        keys = list(entry["arrays"])
        strategy_meta[key] = {"kind": entry["kind"], "keys": keys}
        for index, name in enumerate(keys):
            tensors[f"strategy/{key}/{index}"] = np.ascontiguousarray(entry["arrays"][name])
    rng = dict(checkpoint.rng)
    numpy_state = list(rng.get("numpy", []))
    if numpy_state:
        tensors["rng/numpy"] = np.asarray(numpy_state[1], dtype=np.uint32)
        numpy_state[1] = None
    if "torch" in rng:
        tensors["rng/torch"] = np.asarray(rng["torch"], dtype=np.uint8)
    meta = {
        "format": FORMAT,
        "round": checkpoint.server_round,
        "model-keys": list(checkpoint.model),
        "strategy": strategy_meta,
        "rng": {"python": rng.get("python"), "numpy": numpy_state or None},
        "extra": checkpoint.extra,
    }
    path = Path(run_dir) / CHECKPOINT_FILE
    write_atomically(
        path, lambda tmp: save_file(tensors, str(tmp), metadata={"fedward": json.dumps(meta)}), durable=True
    )
    return path


def load_checkpoint(run_dir: Path) -> Checkpoint:
    """Read ``<run_dir>/checkpoint.safetensors``.

    Raises:
        CheckpointError: if the run directory has no checkpoint, or it is unreadable or
            of another format.
    """
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{run_dir} has no {CHECKPOINT_FILE}: it was not written by a fedward ServerApp that checkpoints "
            "(fedward >= 0.1 writes one after every round), or the run never finished its round 0"
        )
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as handle:
            raw = (handle.metadata() or {}).get("fedward", "")
        tensors = load_file(str(path))
        meta = json.loads(raw)
    except (OSError, ValueError, SafetensorError) as err:
        raise CheckpointError(f"{path} is unreadable ({err}); the previous round's weights are in models/") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} checkpoint")
    model = {k: tensors[f"model/{k}"] for k in meta["model-keys"]}
    strategy: dict[str, Any] = {}
    for key, entry in meta["strategy"].items():
        if entry["kind"] == "float":
            strategy[key] = entry
        else:
            arrays = {name: tensors[f"strategy/{key}/{i}"] for i, name in enumerate(entry["keys"])}
            strategy[key] = {"kind": entry["kind"], "arrays": arrays}
    rng: dict[str, Any] = {}
    if meta["rng"].get("python") is not None:
        rng["python"] = meta["rng"]["python"]
    if meta["rng"].get("numpy") is not None:
        numpy_state = list(meta["rng"]["numpy"])
        numpy_state[1] = tensors["rng/numpy"]
        rng["numpy"] = numpy_state
    if "rng/torch" in tensors:
        rng["torch"] = tensors["rng/torch"]
    return Checkpoint(int(meta["round"]), model, strategy, rng, dict(meta.get("extra", {})))
