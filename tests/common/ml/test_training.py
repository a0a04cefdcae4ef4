"""Training loops: learn, reproduce bit for bit, follow the schedule, weight classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures.synthetic import synthetic_split

from fedward.common.choices import ModelName, Task
from fedward.common.config import RunConfig
from fedward.common.config.sections import TrainConfig
from fedward.common.data.images import ImageDataset, to_model_size
from fedward.common.errors import DataError
from fedward.common.ml.classify import ClassificationHead, class_weights
from fedward.common.ml.networks import build_network
from fedward.common.ml.training import LocalTraining, learning_rate, train_epochs

HEAD = ClassificationHead()
evaluate = HEAD.evaluate

CPU = torch.device("cpu")


def dataset(n: int, seed: int) -> ImageDataset:
    images, labels = synthetic_split(n, np.random.default_rng(seed))
    return ImageDataset(to_model_size(images, 28), labels.astype(np.int64), Task.BINARY, 2)


def fresh_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network(ModelName.SMALL_CNN, 1, 2)


def test_training_learns_a_separable_task() -> None:
    train, test = dataset(256, 0), dataset(128, 1)
    model = fresh_model()
    before = evaluate(model, test, CPU).metrics
    cfg = RunConfig().train
    result = train_epochs(
        model, train, cfg, LocalTraining(epochs=4, first_epoch=0, total_epochs=4, seed=1), CPU, head=HEAD, augment=False
    )
    after = evaluate(model, test, CPU).metrics
    assert result.num_examples == 256 and result.steps == 4 * 4
    assert before.auc is not None and after.auc is not None
    assert after.auc > 0.95 > before.auc
    assert result.loss < 0.5


def test_same_seed_gives_bit_identical_weights() -> None:
    train = dataset(96, 0)
    cfg = RunConfig().train
    plan = LocalTraining(epochs=2, first_epoch=0, total_epochs=4, seed=7)
    states = []
    for _ in range(2):
        model = fresh_model()
        train_epochs(model, train, cfg, plan, CPU, head=HEAD, augment=True)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    other = fresh_model()
    train_epochs(
        other, train, cfg, LocalTraining(epochs=2, first_epoch=0, total_epochs=4, seed=8), CPU, head=HEAD, augment=True
    )
    assert not all(torch.equal(states[0][k], other.state_dict()[k]) for k in states[0])


def test_fedprox_term_keeps_weights_near_the_start() -> None:
    train = dataset(96, 0)
    cfg = RunConfig().train

    def drift(mu: float) -> float:
        model = fresh_model()
        start = [p.detach().clone() for p in model.parameters()]
        train_epochs(model, train, cfg, LocalTraining(2, 0, 2, proximal_mu=mu, seed=1), CPU, head=HEAD, augment=False)
        return float(sum(((p.detach() - s) ** 2).sum() for p, s in zip(model.parameters(), start, strict=True)))

    assert drift(10.0) < drift(0.0)


def test_cosine_schedule() -> None:
    cfg = TrainConfig(lr=0.1)
    assert learning_rate(cfg, 0, 10) == pytest.approx(0.1)
    assert learning_rate(cfg, 5, 10) == pytest.approx(0.05)
    assert learning_rate(cfg, 10, 10) == pytest.approx(0.0)
    constant = RunConfig.from_mapping({"train": {"schedule": "constant", "lr": 0.1}}).train
    assert learning_rate(constant, 7, 10) == pytest.approx(0.1)


def test_balanced_class_weights() -> None:
    weights = class_weights(Task.BINARY, np.array([100, 300]), 400)
    assert weights.tolist() == pytest.approx([2.0, 400 / 600])
    capped = class_weights(Task.BINARY, np.array([1, 999]), 1000)
    assert float(capped.max()) == pytest.approx(10.0)
    absent = class_weights(Task.MULTICLASS, np.array([0, 10, 10]), 20)
    assert float(absent[0]) == 1.0
    pos = class_weights(Task.MULTILABEL, np.array([10, 50]), 100)
    assert pos.tolist() == pytest.approx([9.0, 1.0])


def test_empty_datasets_are_refused() -> None:
    empty = ImageDataset(torch.zeros(0, 1, 28, 28, dtype=torch.uint8), np.zeros((0, 1), np.int64), Task.BINARY, 2)
    with pytest.raises(DataError):
        train_epochs(fresh_model(), empty, RunConfig().train, LocalTraining(1, 0, 1), CPU, head=HEAD, augment=False)
    with pytest.raises(DataError):
        evaluate(fresh_model(), empty, CPU)
