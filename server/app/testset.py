"""Server-side evaluation of the global model on the dataset's test split.

In simulation the coordinator's machine holds the dataset, so after every round the
global model is scored on the official test split (reported, never used to pick a
model). A coordinator without the file simply skips this: hospitals' federated
validation still measures every round.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor

import torch
from flwr.app import ArrayRecord
from torch import nn

from fedward.common.config import RunConfig
from fedward.common.data.images import TaskDataset, make_dataset
from fedward.common.errors import DataError
from fedward.common.ml.scores import EvalResult
from fedward.common.ml.tasks import TaskHead
from fedward.common.runsetup import find_dataset_file
from fedward.common.schema import DatasetSchema
from fedward.common.wire import load_arrays

log = logging.getLogger(__name__)

_NONE: Mapping[str, float] = {}


def load_test_split(cfg: RunConfig, schema: DatasetSchema) -> TaskDataset | None:
    """The test split of the run's dataset if this machine has the file, else ``None``.

    Never downloads. A file that exists but cannot be read is an error.

    Raises:
        DataError: if the file exists but is invalid.
    """
    dataset = find_dataset_file(cfg, ["test"])
    if dataset is None:
        log.info("no test split on the server; server-side evaluation is off")
        return None
    test = dataset.splits.get("test")
    if test is None or len(test) == 0:
        log.info("%s has an empty test split; server-side evaluation is off", dataset.path.name)
        return None
    return make_dataset(test, schema, cfg.data.image_size)


class ServerTestScorer:
    """Scores a model on the test split and returns ``test-*`` metrics.

    Args:
        dataset: the test images.
        head: the run's task head (its metrics).
        device: where to run inference.
    """

    def __init__(self, dataset: TaskDataset, head: TaskHead, device: torch.device) -> None:
        if len(dataset) == 0:
            raise DataError("the test split is empty")
        self.dataset = dataset
        self.head = head
        self.device = device

    def __call__(self, model: nn.Module, federated: Mapping[str, float] = _NONE) -> dict[str, float]:
        """``test-auc``, ``test-accuracy``, ... (``test-dice``, ``test-hd95``... for segmentation) of ``model``.

        Args:
            model: the network to score.
            federated: the round's federated validation metrics; a classifier is scored at
                the operating point they hold (:meth:`~fedward.common.ml.tasks.TaskHead.operate`).
        """
        return self.head.operate(self.score(model), federated)

    def score(self, model: nn.Module) -> EvalResult:
        """The task head's scoring of ``model`` on the test split (before any operating point)."""
        result = self.head.evaluate(model, self.dataset, self.device)
        model.cpu()
        return result


class BackgroundScoring:
    """The server's test-split scores of each round's global model, computed while the hospitals work.

    With evaluation carried by training, round ``r``'s global model goes out in round
    ``r + 1``'s training messages, and its record waits for their replies (the hospitals'
    validation scores). :meth:`start` scores it on the test split in a background thread
    meanwhile, on a network of its own, so the hospitals do not wait for the server's
    scoring between rounds; :meth:`result` hands the scores over when the round is
    recorded (scoring then if nothing was started). One model is scored at a time; the
    scoring leaves PyTorch's global generator as it found it.

    Args:
        scorer: the test-split scorer.
        model: a network of the run's architecture, used only for this scoring.
    """

    def __init__(self, scorer: ServerTestScorer, model: nn.Module) -> None:
        self.scorer, self.model = scorer, model
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedward-test-split")
        self._pending: dict[int, Future[EvalResult]] = {}

    def start(self, server_round: int, arrays: ArrayRecord) -> None:
        """Start scoring round ``server_round``'s global model ``arrays`` in the background."""
        self._pending[server_round] = self._pool.submit(self._score, arrays)

    def result(
        self, server_round: int, arrays: ArrayRecord, federated: Mapping[str, float] = _NONE
    ) -> dict[str, float]:
        """The ``test-*`` metrics of round ``server_round``'s model ``arrays``.

        Args:
            server_round: the round.
            arrays: its global model.
            federated: the round's federated validation metrics (the operating point).

        Raises:
            Exception: whatever the scoring raised.
        """
        pending = self._pending.pop(server_round, None)
        scored = (pending or self._pool.submit(self._score, arrays)).result()
        return self.scorer.head.operate(scored, federated)

    def close(self) -> None:
        """Stop the scoring thread (a score nobody will ask for is abandoned)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _score(self, arrays: ArrayRecord) -> EvalResult:
        load_arrays(self.model, arrays)
        with torch.random.fork_rng(devices=[]):
            return self.scorer.score(self.model)
