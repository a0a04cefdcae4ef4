"""What a hospital keeps across the messages of one run: the parsed run, its device and its data.

Every message of a run carries the same run config; parsing and validating it, and loading
(decoding, resizing) the hospital's images, happen once per run and node, not per message.
In simulation Flower's Ray actors are long-lived, so a simulated hospital pays this once
per run; in deployment the hospital's warm worker (:mod:`fedward.client.hospital.worker`)
serves every message of the run, so it pays it once too (with ``--no-warm-worker`` each
message's fresh ``flwr-clientapp`` process pays it). A new run (a new run id) parses and
loads afresh, so data changed between runs is seen by the next run; within a run the data
stays as it was when the run first touched it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TypeVar

import torch
from flwr.app import Context

from fedward.client.hospital.site import PARTITION_KEY, THREADS_KEY, load_site
from fedward.common.choices import DeviceChoice
from fedward.common.config import RunSpec
from fedward.common.data.hospital import HospitalData
from fedward.common.ml.runtime import resolve_device, set_cpu_threads

K = TypeVar("K")
V = TypeVar("V")

MAX_CACHED = 8
"""Runs x nodes kept in one process (a Ray actor serves several simulated hospitals)."""

_SPECS: OrderedDict[int, RunSpec] = OrderedDict()
_RUNS: OrderedDict[tuple[int, int], HospitalRun] = OrderedDict()


@dataclass(frozen=True, slots=True)
class HospitalRun:
    """One run as this hospital serves it.

    Attributes:
        spec: the run.
        site: the hospital's training and validation data.
        device: where it trains.
        threads: CPU threads PyTorch uses for it (0: PyTorch's default).
    """

    spec: RunSpec
    site: HospitalData
    device: torch.device
    threads: int


def run_spec(context: Context) -> RunSpec:
    """The run of ``context``, parsed and validated once per run id.

    Raises:
        ConfigError: if the run config is invalid.
    """
    spec = _SPECS.get(context.run_id)
    if spec is None:
        spec = RunSpec.from_flower(context.run_config)
        _remember(_SPECS, context.run_id, spec)
    return spec


def hospital_run(context: Context) -> HospitalRun:
    """The run, device and data of this hospital for ``context``'s run, loaded once per run and node.

    The process's PyTorch thread count is set on every call (another run may have changed it).

    Raises:
        ConfigError: if the run config is invalid, or ``cuda`` is asked for without a GPU.
        DataError: if the hospital's data cannot be used.
    """
    key = (context.run_id, context.node_id)
    cached = _RUNS.get(key)
    if cached is not None:
        set_cpu_threads(cached.threads)
        return cached
    spec = run_spec(context)
    threads = _threads(context, spec)
    set_cpu_threads(threads)  # before decoding: resizing runs on these threads too
    cached = HospitalRun(spec, load_site(context.node_config, spec), _device(context, spec), threads)
    _remember(_RUNS, key, cached)
    return cached


def _threads(context: Context, spec: RunSpec) -> int:
    """The hospital's own limit, else ``train.threads``, else (simulation) its CPU share."""
    cfg = spec.config
    simulated = PARTITION_KEY in context.node_config
    site_threads = int(context.node_config.get(THREADS_KEY, 0))
    return site_threads or cfg.train.threads or (max(1, int(cfg.simulation.client_cpus)) if simulated else 0)


def _device(context: Context, spec: RunSpec) -> torch.device:
    cfg = spec.config
    choice = cfg.train.device
    if PARTITION_KEY in context.node_config and cfg.simulation.client_gpus == 0 and choice is DeviceChoice.AUTO:
        choice = DeviceChoice.CPU  # no GPU share from Ray: do not crowd a GPU the scheduler did not assign
    return resolve_device(choice)


def _remember(cache: OrderedDict[K, V], key: K, value: V) -> None:
    cache[key] = value
    while len(cache) > MAX_CACHED:
        cache.popitem(last=False)


def forget_runs() -> None:
    """Drop every cached run (tests; a process that must re-read its data)."""
    _SPECS.clear()
    _RUNS.clear()
