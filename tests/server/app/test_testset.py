"""The server's test-split scoring, in the background while hospitals train."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from fedward.common.choices import ModelName, Task
from fedward.common.data.images import ImageDataset
from fedward.common.ml.networks import build_network
from fedward.common.ml.tasks import ClassificationHead
from fedward.common.wire import model_to_arrays
from fedward.server.app.testset import BackgroundScoring, ServerTestScorer


@pytest.fixture
def scoring() -> tuple[BackgroundScoring, ServerTestScorer, torch.nn.Module]:
    generator = np.random.default_rng(0)
    images = torch.from_numpy(generator.integers(0, 256, (48, 1, 28, 28), dtype=np.uint8))
    labels = np.tile([[0], [1]], (24, 1)).astype(np.int64)
    scorer = ServerTestScorer(
        ImageDataset(images, labels, Task.BINARY, 2), ClassificationHead(("a", "b")), torch.device("cpu")
    )
    torch.manual_seed(3)
    model = build_network(ModelName.SMALL_CNN, 1, 2)
    return BackgroundScoring(scorer, copy.deepcopy(model)), scorer, model


def test_background_scores_equal_scores_taken_in_line(
    scoring: tuple[BackgroundScoring, ServerTestScorer, torch.nn.Module],
) -> None:
    background, scorer, model = scoring
    arrays = model_to_arrays(model)
    torch.manual_seed(11)
    before = torch.get_rng_state()
    background.start(4, arrays)
    scores = background.result(4, arrays)
    assert torch.equal(torch.get_rng_state(), before), "scoring leaves the global generator as it was"
    assert scores == scorer(copy.deepcopy(model))
    assert set(scores) >= {"test-auc", "test-accuracy"}
    assert background.result(5, arrays) == scores, "a round nobody started is scored when asked"
    background.close()


def test_a_failed_scoring_raises_when_its_round_is_recorded(
    scoring: tuple[BackgroundScoring, ServerTestScorer, torch.nn.Module],
) -> None:
    background = scoring[0]
    arrays = model_to_arrays(build_network(ModelName.SMALL_CNN, 3, 2))  # wrong input channels
    background.start(2, arrays)
    with pytest.raises(Exception):  # noqa: B017 - whatever the load raised
        background.result(2, arrays)
    background.close()
