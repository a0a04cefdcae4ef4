"""The round-to-round state of a Flower strategy, captured for checkpoints and put back on resume.

Flower 1.41 has no strategy-state export; its strategies keep what changes between rounds
in a few attributes (:data:`STATE_ATTRIBUTES`) on themselves and on the strategies they
wrap (:data:`NESTED`). :func:`strategy_state` reads them into arrays and floats that a
:class:`~fedward.common.rundir.checkpoint.Checkpoint` stores; :func:`restore_strategy_state`
sets them again on a freshly built strategy of the same run config.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import Strategy

from fedward.common.rundir.checkpoint import CheckpointError

STATE_ATTRIBUTES = ("m_t", "v_t", "momentum_vector", "current_arrays", "clipping_norm")
"""Attributes of Flower 1.41's strategies and DP wrappers that change from round to round.

``m_t``/``v_t``: FedOpt family moments (dict of arrays); ``momentum_vector``: FedAvgM
(list of arrays); ``current_arrays``: FedOpt/FedAvgM/DP wrappers' copy of the global
model (dict of arrays or ArrayRecord); ``clipping_norm``: adaptive clipping (float).
Everything else on a strategy is configuration, rebuilt from the run config.
"""

NESTED = ("inner", "strategy")
"""Attributes through which wrappers hold the strategy they wrap (fedward's guard, Flower's DP wrappers)."""


def _chain(strategy: Strategy) -> Iterator[tuple[str, Strategy]]:
    """``(path, strategy)`` for ``strategy`` and every strategy it wraps."""
    path, current = "root", strategy
    seen: set[int] = set()
    while id(current) not in seen:
        seen.add(id(current))
        yield path, current
        for attribute in NESTED:
            nested = getattr(current, attribute, None)
            if isinstance(nested, Strategy):
                path, current = f"{path}.{attribute}", nested
                break
        else:
            return


def strategy_state(strategy: Strategy) -> dict[str, Any]:
    """The round-to-round state of ``strategy`` and the strategies it wraps.

    Returns:
        ``<path>.<attribute>`` -> ``{"kind": "dict"|"list"|"arrayrecord", "arrays": {key: array}}``
        or ``{"kind": "float", "value": x}``; attributes that are ``None`` are left out.

    Raises:
        CheckpointError: if a state attribute holds a type this module cannot save
            (a Flower upgrade changed a strategy; refuse rather than resume wrongly).
    """
    state: dict[str, Any] = {}
    for path, current in _chain(strategy):
        for attribute in STATE_ATTRIBUTES:
            value = getattr(current, attribute, None)
            if value is None:
                continue
            key = f"{path}.{attribute}"
            if isinstance(value, ArrayRecord):
                state[key] = {"kind": "arrayrecord", "arrays": {k: a.numpy() for k, a in value.items()}}
            elif isinstance(value, dict):
                state[key] = {"kind": "dict", "arrays": {str(k): np.asarray(v) for k, v in value.items()}}
            elif isinstance(value, list):
                state[key] = {"kind": "list", "arrays": {str(i): np.asarray(v) for i, v in enumerate(value)}}
            elif isinstance(value, int | float) and not isinstance(value, bool):
                state[key] = {"kind": "float", "value": float(value)}
            else:
                kind = type(value).__name__
                raise CheckpointError(f"cannot checkpoint {type(current).__name__}.{attribute} ({kind})")
    return state


def restore_strategy_state(strategy: Strategy, state: Mapping[str, Any]) -> None:
    """Set the attributes :func:`strategy_state` saved on the same chain of strategies.

    Raises:
        CheckpointError: if the checkpoint names a strategy the run does not have (the run
            config changed since the checkpoint was written).
    """
    chain = dict(_chain(strategy))
    for key, entry in state.items():
        path, attribute = key.rsplit(".", 1)
        target = chain.get(path)
        if target is None or attribute not in STATE_ATTRIBUTES:
            raise CheckpointError(f"the checkpoint holds state for {key}, which this run's strategy does not have")
        kind = entry["kind"]
        if kind == "float":
            value: Any = float(entry["value"])
        elif kind == "arrayrecord":
            value = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in entry["arrays"].items()})
        elif kind == "dict":
            value = {k: np.array(v) for k, v in entry["arrays"].items()}
        elif kind == "list":
            value = [np.array(entry["arrays"][str(i)]) for i in range(len(entry["arrays"]))]
        else:
            raise CheckpointError(f"unknown state kind {kind!r} for {key}")
        setattr(target, attribute, value)
