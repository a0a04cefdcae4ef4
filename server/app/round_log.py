"""What the hospitals sent in one round, and how it becomes run records.

:class:`RoundLog` is filled by :class:`~fedward.server.app.guard.GuardedStrategy` while a
round aggregates (who trained, who evaluated, who was rejected or failed and why) and
handed to the run session at the end of the round, which records
:meth:`RoundLog.rows` in ``metrics/hospitals.jsonl`` and :meth:`RoundLog.metrics` in
``metrics/server.jsonl``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from fedward.common.wire import NUM_EXAMPLES, VAL_EXAMPLES


@dataclass(frozen=True, slots=True)
class SiteReport:
    """What one hospital reported in one phase of a round.

    Attributes:
        name: hospital name.
        node_id: Flower node id of its SuperNode.
        metrics: its MetricRecord as floats (counts, losses, AUCs).
        statistics: its list-valued entries (validation statistics for the operating
            point); kept for the round's aggregation only, never recorded.
    """

    name: str
    node_id: int
    metrics: dict[str, float]
    statistics: dict[str, list[float]] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class Exclusion:
    """A hospital left out of a round's aggregation, and why."""

    name: str
    node_id: int
    reason: str


@dataclass(slots=True)
class RoundLog:
    """Everything the hospitals sent in one round."""

    train: list[SiteReport] = field(default_factory=list)
    evaluate: list[SiteReport] = field(default_factory=list)
    rejected: list[Exclusion] = field(default_factory=list)
    failed: list[Exclusion] = field(default_factory=list)
    train_metrics: dict[str, float] = field(default_factory=dict)
    evaluate_metrics: dict[str, float] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """Per-hospital rows of the round for ``metrics/hospitals.jsonl`` (train, evaluate, rejected, failed)."""
        rows: list[dict[str, Any]] = []
        for phase, reports in (("train", self.train), ("evaluate", self.evaluate)):
            rows += [{"hospital": r.name, "phase": phase, "node-id": r.node_id, **r.metrics} for r in reports]
        for phase, exclusions in (("rejected", self.rejected), ("failed", self.failed)):
            rows += [{"hospital": x.name, "phase": phase, "node-id": x.node_id, "reason": x.reason} for x in exclusions]
        return rows

    def metrics(self) -> dict[str, float]:
        """Aggregated metrics of the round (``train-*``, ``val-*``, hospitals trained/evaluated/rejected/failed)."""
        metrics: dict[str, float] = {k: v for k, v in self.train_metrics.items() if k != NUM_EXAMPLES}
        for key, value in self.evaluate_metrics.items():
            metrics[VAL_EXAMPLES if key == NUM_EXAMPLES else key] = value
        metrics["hospitals-trained"] = len(self.train)
        metrics["hospitals-evaluated"] = len(self.evaluate)
        metrics["hospitals-rejected"] = len(self.rejected)
        metrics["hospitals-failed"] = len(self.failed)
        return metrics

    def to_json(self) -> dict[str, Any]:
        """The log as JSON values (a checkpoint keeps the log of a round whose evaluation is still owed).

        The hospitals' validation statistics are left out (a round whose evaluation is owed
        has none yet).
        """
        data = asdict(self)
        for report in (*data["train"], *data["evaluate"]):
            report.pop("statistics", None)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RoundLog:
        """The log :meth:`to_json` wrote.

        Raises:
            KeyError, TypeError: if ``data`` is not such a log.
        """
        return cls(
            train=[SiteReport(**r) for r in data["train"]],
            evaluate=[SiteReport(**r) for r in data["evaluate"]],
            rejected=[Exclusion(**x) for x in data["rejected"]],
            failed=[Exclusion(**x) for x in data["failed"]],
            train_metrics=dict(data["train_metrics"]),
            evaluate_metrics=dict(data["evaluate_metrics"]),
        )
