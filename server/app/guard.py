"""A strategy wrapper that guards aggregation and keeps a per-hospital log of each round.

:class:`GuardedStrategy` wraps any Flower strategy (composition, not inheritance):

* before aggregation every training reply is checked (:func:`update_problem`); an
  update with NaN/Inf values, a missing array, or a shape or dtype that differs from the
  global model is rejected and logged with the hospital's name and node id; the round
  goes on with the rest;
* replies are aggregated in a fixed order (by hospital name), so floating-point sums,
  and therefore whole runs, are reproducible;
* aggregated arrays are cast back to the global model's dtypes;
* federated evaluation metrics are averaged key by key, weighted by ``num-examples``,
  over the hospitals that report the key (a hospital whose validation split holds one
  class reports no AUC rather than a made-up one), whether they came in evaluation
  replies or, for the previous round, in training replies (:meth:`GuardedStrategy.aggregate_validation`);
* everything each hospital reported is kept in :attr:`GuardedStrategy.rounds` for the run
  records.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedward.common.ml.scores import weighted_means
from fedward.common.wire import NUM_EXAMPLES, SITE, SITE_NAME, VALIDATION, cast_like
from fedward.server.app.round_log import Exclusion, RoundLog, SiteReport
from fedward.server.app.validation import update_problem

log = logging.getLogger(__name__)

Federate = Callable[[list[dict[str, float]], Sequence[Mapping[str, Any]]], dict[str, float]]
"""Hospitals' validation metrics and statistics -> the federation's metrics."""


def _weighted_means(reports: list[dict[str, float]], statistics: Sequence[Mapping[str, Any]] = ()) -> dict[str, float]:
    return weighted_means(reports)


SILENT_REASON = "no reply within the round's timeout (federation.round-timeout)"
"""Why a hospital that was asked to train and never answered is recorded as failed."""


def _unchanged(message: Message, reference: ArrayRecord) -> bool:
    arrays = next(iter(message.content.array_records.values()))
    return all(np.array_equal(arrays[k].numpy(), reference[k].numpy()) for k in reference)


def site_name(message: Message, fallback: Callable[[int], str]) -> str:
    """The hospital name a reply carries, else the directory's name for its node."""
    if not message.has_error():
        record = message.content.config_records.get(SITE)
        if isinstance(record, ConfigRecord) and isinstance(record.get(SITE_NAME), str):
            return str(record[SITE_NAME])
    return fallback(message.metadata.src_node_id)


def _float_metrics(record: MetricRecord) -> dict[str, float]:
    return {k: float(v) for k, v in record.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _list_entries(record: MetricRecord) -> dict[str, list[float]]:
    """The list-valued entries of a reply (validation statistics), as floats."""
    return {k: [float(x) for x in v] for k, v in record.items() if isinstance(v, list)}


def _report(name: str, node_id: int, record: MetricRecord) -> SiteReport:
    return SiteReport(name, node_id, _float_metrics(record), _list_entries(record))


class GuardedStrategy(Strategy):
    """Wrap ``inner`` with update validation, ordered aggregation and a round log.

    Args:
        inner: the Flower strategy that samples hospitals and aggregates.
        names: node id -> hospital name, for replies that carry none (errors).
        averaged_buffers: array keys aggregated by a plain weighted mean whatever
            ``inner`` does. Server optimizers (FedAvgM, FedAdam, FedYogi) extrapolate, which
            is right for weights but can drive BatchNorm's running variance negative and
            the model to NaN; its statistics are averaged instead.
        reject_unchanged: reject an update identical to the global model. Flower's
            server-side clipping divides by the update's norm, so one such update would
            fail the whole round's aggregation.
        federate: combines the hospitals' validation metrics (and their list-valued
            statistics) into the federation's (the task head's
            :meth:`~fedward.common.ml.tasks.TaskHead.federate`); default: means weighted by
            ``num-examples``.
    """

    def __init__(
        self,
        inner: Strategy,
        names: Callable[[int], str] | None = None,
        averaged_buffers: frozenset[str] = frozenset(),
        reject_unchanged: bool = False,
        federate: Federate = _weighted_means,
    ) -> None:
        self.inner = inner
        self.federate = federate
        self.reject_unchanged = reject_unchanged
        self.names = names or (lambda node_id: f"node-{node_id}")
        self.averaged_buffers = averaged_buffers
        self.rounds: dict[int, RoundLog] = {}
        self._reference: ArrayRecord | None = None
        self._sampled: dict[int, list[int]] = {}

    def log_for(self, server_round: int) -> RoundLog:
        """The (possibly empty) log of ``server_round``, as it fills."""
        return self.rounds.setdefault(server_round, RoundLog())

    def take_log(self, server_round: int) -> RoundLog:
        """Hand the finished log of ``server_round`` over (the guard keeps no record of it)."""
        return self.rounds.pop(server_round, RoundLog())

    # -------------------------------------------------------------- training
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the global model sent this round, then let ``inner`` sample and configure."""
        self._reference = arrays
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        self._sampled[server_round] = [m.metadata.dst_node_id for m in messages]
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate replies, aggregate the sound ones with ``inner``, log every hospital."""
        entry = self.log_for(server_round)
        replies = list(replies)
        for message in replies:  # validation metrics nobody asked for are not aggregated as training's
            if not message.has_error():
                message.content.pop(VALIDATION, None)
        self._note_silent(server_round, replies, entry)
        accepted = [m for m in self._ordered(replies) if self._admit(server_round, m, entry)]
        if not accepted:
            log.error("round %d: no update could be aggregated; the global model stays as it was", server_round)
            return None, None
        buffers = weighted_array_means(accepted, self.averaged_buffers)
        try:
            arrays, metrics = self.inner.aggregate_train(server_round, accepted)
        except Exception as err:
            log.error(
                "round %d: aggregation failed (%s: %s); the global model stays as it was",
                *(server_round, type(err).__name__, err),
            )
            return None, None
        if arrays is not None:
            arrays = self._finished(server_round, arrays, buffers)
            if arrays is None:
                return None, None
        if metrics is not None:
            entry.train_metrics = _float_metrics(metrics)
        return arrays, metrics

    def _admit(self, server_round: int, message: Message, entry: RoundLog) -> bool:
        """Whether a training reply may be aggregated; a failure or rejection is logged with its reason."""
        name, node_id = site_name(message, self.names), message.metadata.src_node_id
        if message.has_error():
            entry.failed.append(Exclusion(name, node_id, message.error.reason or "unknown error"))
            log.warning(
                "round %d: hospital %s (node %d) failed to train: %s", server_round, name, node_id, message.error.reason
            )
            return False
        reference = self._reference
        problem = update_problem(message.content, reference) if reference is not None else None
        if problem is None and self.reject_unchanged and reference is not None and _unchanged(message, reference):
            problem = "the update leaves the model unchanged (nothing to clip)"
        if problem is not None:
            entry.rejected.append(Exclusion(name, node_id, problem))
            log.warning(
                "round %d: rejected update from hospital %s (node %d): %s", server_round, name, node_id, problem
            )
            return False
        reported = next(iter(message.content.metric_records.values()))
        entry.train.append(SiteReport(name, node_id, _float_metrics(reported)))
        return True

    def _note_silent(self, server_round: int, replies: list[Message], entry: RoundLog) -> None:
        """Record each hospital asked to train that did not answer before the round's timeout as failed."""
        answered = {m.metadata.src_node_id for m in replies}
        for node_id in sorted(set(self._sampled.pop(server_round, [])) - answered):
            name = self.names(node_id)
            entry.failed.append(Exclusion(name, node_id, SILENT_REASON))
            log.warning(
                "round %d: hospital %s (node %d) failed to train: %s", server_round, name, node_id, SILENT_REASON
            )

    def _finished(self, server_round: int, arrays: ArrayRecord, buffers: dict[str, np.ndarray]) -> ArrayRecord | None:
        """The aggregate with averaged buffers, in the global model's dtypes; ``None`` if it is not finite."""
        if buffers:
            arrays = ArrayRecord({k: Array(buffers[k]) if k in buffers else v for k, v in arrays.items()})
        broken = [k for k, v in arrays.items() if not _finite(v)]
        if broken:
            log.error(
                "round %d: the aggregated model holds non-finite values (%s); the global model stays as it was",
                *(server_round, ", ".join(broken[:3])),
            )
            return None
        return cast_like(arrays, self._reference) if self._reference is not None else arrays

    # -------------------------------------------------------------- evaluation
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Let ``inner`` sample hospitals for federated evaluation."""
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Combine the hospitals' validation metrics (:attr:`federate`) over those that report them."""
        entry = self.log_for(server_round)
        for message in self._ordered(replies):
            name, node_id = site_name(message, self.names), message.metadata.src_node_id
            if message.has_error():
                log.warning(
                    "round %d: hospital %s (node %d) failed to evaluate: %s",
                    *(server_round, name, node_id, message.error.reason),
                )
                continue
            records = list(message.content.metric_records.values())
            if len(records) != 1:
                log.warning(
                    "round %d: evaluation reply from %s (node %d) ignored: %d MetricRecords",
                    *(server_round, name, node_id, len(records)),
                )
                continue
            entry.evaluate.append(_report(name, node_id, records[0]))
        return self._federated(entry)

    def aggregate_validation(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Take the validation metrics that training replies of the next round carry for ``server_round``.

        A train message with ``evaluate-first`` asks each hospital to score the model it
        receives (the global model after ``server_round``) before training; its reply holds
        those metrics as a second MetricRecord (:data:`~fedward.common.wire.VALIDATION`).
        They are removed from the replies here, so the training replies reach
        :meth:`aggregate_train` with the one MetricRecord Flower's strategies expect, and
        combined as :meth:`aggregate_evaluate` combines evaluation replies. A hospital that
        failed to train sent none.
        """
        entry = self.log_for(server_round)
        for message in self._ordered(replies):
            if message.has_error():
                continue
            record = message.content.metric_records.get(VALIDATION)
            message.content.pop(VALIDATION, None)
            if record is not None:
                name = site_name(message, self.names)
                entry.evaluate.append(_report(name, message.metadata.src_node_id, record))
        return self._federated(entry)

    def _federated(self, entry: RoundLog) -> MetricRecord | None:
        if not entry.evaluate:
            return None
        aggregated = self.federate([r.metrics for r in entry.evaluate], [r.statistics for r in entry.evaluate])
        entry.evaluate_metrics = aggregated
        return MetricRecord(aggregated)  # type: ignore[arg-type]

    def summary(self) -> None:
        """Log ``inner``'s summary."""
        self.inner.summary()

    # -------------------------------------------------------------- helpers
    def _ordered(self, replies: Iterable[Message]) -> list[Message]:
        return sorted(replies, key=lambda m: (site_name(m, self.names), m.metadata.src_node_id))


def _finite(array: Array) -> bool:
    values = array.numpy()
    return not np.issubdtype(values.dtype, np.floating) or bool(np.isfinite(values).all())


def weighted_array_means(messages: list[Message], keys: frozenset[str]) -> dict[str, np.ndarray]:
    """Mean of the arrays under ``keys`` across training replies, weighted by ``num-examples``.

    Args:
        messages: validated training replies (one ArrayRecord and MetricRecord each).
        keys: array names to average.

    Returns:
        float64 arrays by name (cast back to the model's dtypes by the caller).
    """
    if not keys or not messages:
        return {}
    weights = np.array([float(next(iter(m.content.metric_records.values()))[NUM_EXAMPLES]) for m in messages])  # type: ignore[arg-type]
    weights /= weights.sum()
    out: dict[str, np.ndarray] = {}
    for weight, message in zip(weights, messages, strict=True):
        arrays = next(iter(message.content.array_records.values()))
        for key in keys & set(arrays):
            out[key] = np.asarray(out.get(key, 0.0) + weight * arrays[key].numpy().astype(np.float64))
    return out
