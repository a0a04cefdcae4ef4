"""What travels in Flower messages: record keys, metric names, weight conversions.

Both sides import these names, so a key is spelled once. Replies from a hospital carry
model weights (an ``ArrayRecord``), numbers (a ``MetricRecord``: counts, losses, AUCs)
and the hospital's name (a ``ConfigRecord``) — never images, pixel statistics, file
paths or anything read from a DICOM header.

Metric keys follow Flower's convention (kebab-case); Flower's strategies weight averages
by ``num-examples``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import Array, ArrayRecord

if TYPE_CHECKING:  # the coordinator's first steps (enrolment) read these keys before PyTorch is loaded
    import torch
    from torch import nn

# Record keys inside a Message's RecordDict (the first two are Flower's defaults).
ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
SITE = "site"
VALIDATION = "validation"  # train reply: the received model's validation metrics (EVALUATE_FIRST)

# Keys of the SITE ConfigRecord.
SITE_NAME = "name"
SITE_VERSION = "fedward-version"
SITE_DEVICE = "device"

# Keys of the train/evaluate ConfigRecord sent by the server.
SERVER_ROUND = "server-round"  # injected by Flower's strategies
PROXIMAL_MU = "proximal-mu"  # injected by FedProx
EVALUATE_FIRST = "evaluate-first"  # train: score the received model on validation before training

# Metric keys.
NUM_EXAMPLES = "num-examples"
TRAIN_LOSS = "train-loss"
DPSGD_EPSILON = "dpsgd-epsilon"  # the hospital's record-level epsilon so far (DP-SGD)
TRAIN_SECONDS = "train-seconds"
TRAIN_EXAMPLES = "train-examples"
VAL_EXAMPLES = "val-examples"
EVAL_SECONDS = "eval-seconds"
FILES_USED = "files-used"
FILES_SKIPPED = "files-skipped"
SKIPPED_PREFIX = "skipped-"  # + a fedward.common.data.dicom.Reason value

IDENTITY_KEYS = frozenset({NUM_EXAMPLES})
"""Metric keys that are weights or counts, not averaged as quality metrics."""


def metric_key(split: str, name: str) -> str:
    """``metric_key("val", "auc") == "val-auc"``."""
    return f"{split}-{name}"


def model_to_arrays(model: nn.Module) -> ArrayRecord:
    """The model's state dict (parameters and buffers) as an ArrayRecord, on the CPU."""
    state = OrderedDict((k, v.detach().cpu().contiguous()) for k, v in model.state_dict().items())
    return ArrayRecord(state)


def arrays_to_state_dict(arrays: ArrayRecord) -> OrderedDict[str, torch.Tensor]:
    """An ArrayRecord as a PyTorch state dict (tensors on the CPU)."""
    return arrays.to_torch_state_dict()


def load_arrays(model: nn.Module, arrays: ArrayRecord) -> None:
    """Copy weights from ``arrays`` into ``model`` (strict: every key must match)."""
    model.load_state_dict(arrays_to_state_dict(arrays), strict=True)


def cast_like(arrays: ArrayRecord, reference: ArrayRecord) -> ArrayRecord:
    """Return ``arrays`` with each array cast to the dtype of the same key in ``reference``.

    Aggregation computes in floating point; integer buffers (BatchNorm's
    ``num_batches_tracked``) come back as float64. Casting keeps the global model's
    schema fixed for the whole run.
    """
    out = OrderedDict()
    for key, array in arrays.items():
        value = array.numpy()
        target = np.dtype(reference[key].dtype) if key in reference else value.dtype
        if value.dtype != target:
            value = np.rint(value).astype(target) if np.issubdtype(target, np.integer) else value.astype(target)
        out[key] = Array(np.array(value, order="C", copy=True))
    return ArrayRecord(out)
