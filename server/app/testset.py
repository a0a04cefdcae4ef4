"""Server-side evaluation of the global model on the dataset's test split.

In simulation the coordinator's machine holds the dataset, so after every round the
global model is scored on the official test split (reported, never used to pick a
model). A coordinator without the file simply skips this: hospitals' federated
validation still measures every round.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from fedward.common.config import RunConfig
from fedward.common.data.images import TaskDataset, make_dataset
from fedward.common.errors import DataError
from fedward.common.ml.tasks import TaskHead
from fedward.common.runsetup import find_dataset_file
from fedward.common.schema import DatasetSchema

log = logging.getLogger(__name__)


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

    def __call__(self, model: nn.Module) -> dict[str, float]:
        """``test-auc``, ``test-accuracy``, ... (``test-dice``, ``test-hd95``... for segmentation) of ``model``."""
        result = self.head.evaluate(model, self.dataset, self.device)
        model.cpu()
        return result.metrics.as_dict("test")
