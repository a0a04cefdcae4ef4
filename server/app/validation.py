"""Check a hospital's training reply before it can touch the global model.

An update is aggregated only if it has exactly one ArrayRecord whose keys, shapes and
dtypes equal the global model's and whose values are all finite, and exactly one
MetricRecord with a finite, positive ``num-examples``. Anything else is rejected with a
reason; one bad update never poisons the global model.
"""

from __future__ import annotations

import math

import numpy as np
from flwr.app import ArrayRecord, RecordDict

from fedward.common.wire import NUM_EXAMPLES


def update_problem(content: RecordDict, reference: ArrayRecord) -> str | None:
    """Why the reply ``content`` cannot be aggregated against ``reference``, or ``None``.

    Args:
        content: the RecordDict of a training reply.
        reference: the global model sent for this round.

    Returns:
        A one-line reason naming the offending array or metric, or ``None`` if the update
        is sound.
    """
    arrays = list(content.array_records.values())
    if len(arrays) != 1:
        return f"expected one ArrayRecord, found {len(arrays)}"
    metrics = list(content.metric_records.values())
    if len(metrics) != 1:
        return f"expected one MetricRecord, found {len(metrics)}"
    weight = metrics[0].get(NUM_EXAMPLES)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) or weight <= 0:
        return f"{NUM_EXAMPLES} must be a positive number, got {weight!r}"
    update = arrays[0]
    missing = sorted(set(reference) - set(update))
    extra = sorted(set(update) - set(reference))
    if missing:
        return f"missing arrays {', '.join(missing[:3])}{'...' if len(missing) > 3 else ''}"
    if extra:
        return f"unexpected arrays {', '.join(extra[:3])}{'...' if len(extra) > 3 else ''}"
    for key, expected in reference.items():
        got = update[key]
        if tuple(got.shape) != tuple(expected.shape):
            return f"array {key} has shape {tuple(got.shape)}, the global model has {tuple(expected.shape)}"
        if got.dtype != expected.dtype:
            return f"array {key} has dtype {got.dtype}, the global model has {expected.dtype}"
        try:
            values = got.numpy()
        except Exception as err:
            return f"array {key} cannot be decoded ({type(err).__name__})"
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            bad = int(values.size - np.isfinite(values).sum())
            return f"array {key} holds {bad} non-finite value(s) (NaN or Inf)"
    return None
