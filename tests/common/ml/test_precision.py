"""Training precision: float16 on CUDA, bfloat16 on CPUs that compute it natively, float32 otherwise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures.synthetic import synthetic_split

from fedward.common.choices import ModelName, Precision, Task
from fedward.common.config import RunConfig
from fedward.common.data.images import ImageDataset, to_model_size
from fedward.common.ml import runtime
from fedward.common.ml.classify import ClassificationHead
from fedward.common.ml.networks import build_network
from fedward.common.ml.runtime import device_label, training_precision
from fedward.common.ml.training import LocalTraining, train_epochs

HEAD = ClassificationHead()
CPU = torch.device("cpu")


def dataset(n: int, seed: int) -> ImageDataset:
    images, labels = synthetic_split(n, np.random.default_rng(seed))
    return ImageDataset(to_model_size(images, 28), labels.astype(np.int64), Task.BINARY, 2)


@pytest.fixture
def native_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend this CPU has native bfloat16 (elsewhere PyTorch emulates it: slower, same arithmetic)."""
    monkeypatch.setattr(runtime, "cpu_has_native_bfloat16", lambda: True)


@pytest.mark.parametrize("native", [True, False])
def test_the_precision_follows_device_amp_and_dpsgd(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(runtime, "cpu_has_native_bfloat16", lambda: native)
    cuda = torch.device("cuda")
    assert training_precision(CPU, amp=True) is (Precision.BFLOAT16 if native else Precision.FLOAT32)
    assert training_precision(cuda, amp=True) is Precision.FLOAT16
    for device in (CPU, cuda):
        assert training_precision(device, amp=False) is Precision.FLOAT32
        assert training_precision(device, amp=True, private=True) is Precision.FLOAT32
    assert device_label(CPU, amp=True) == ("cpu (bfloat16)" if native else "cpu (float32)")
    assert device_label(cuda, amp=True) == "cuda (float16)"
    assert device_label(CPU, amp=True, private=True) == "cpu (float32)"


def test_the_probe_answers_from_pytorchs_own_cpu_checks() -> None:
    expected = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert runtime.cpu_has_native_bfloat16() is bool(expected)


def train(amp: bool) -> tuple[torch.nn.Module, set[torch.dtype], set[torch.dtype], float | None]:
    """Train a seeded smallcnn; the dtypes of its outputs in training and in evaluation, and its AUC."""
    torch.manual_seed(0)
    model = build_network(ModelName.SMALL_CNN, 1, 2)
    dtypes: list[torch.dtype] = []
    model.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    cfg = RunConfig.from_mapping({"train": {"amp": amp}}).train
    plan = LocalTraining(epochs=4, first_epoch=0, total_epochs=4, seed=1)
    train_epochs(model, dataset(256, 0), cfg, plan, CPU, head=HEAD, augment=False)
    trained = set(dtypes)
    dtypes.clear()
    auc = HEAD.evaluate(model, dataset(128, 1), CPU).metrics.auc
    return model, trained, set(dtypes), auc


@pytest.mark.usefixtures("native_bfloat16")
def test_bfloat16_training_learns_keeps_float32_weights_and_reproduces() -> None:
    model, trained, evaluated, auc = train(amp=True)
    assert trained == {torch.bfloat16}, "the training forward passes ran in bfloat16"
    assert evaluated == {torch.float32}, "evaluation stays float32"
    assert all(p.dtype == torch.float32 for p in model.state_dict().values() if p.is_floating_point())
    assert auc is not None and auc > 0.95
    again = train(amp=True)[0]
    assert all(torch.equal(model.state_dict()[k], again.state_dict()[k]) for k in model.state_dict())
    exact, exact_trained, _, _ = train(amp=False)
    assert exact_trained == {torch.float32}
    assert not all(torch.equal(model.state_dict()[k], exact.state_dict()[k]) for k in model.state_dict())
