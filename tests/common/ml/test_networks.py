"""Networks by name: classifiers give (B, K) logits, segmentation networks (B, K, *S); tasks and sizes are checked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fedward.common.choices import Modality, ModelName, Task
from fedward.common.config.checks import check_image_size
from fedward.common.errors import ConfigError, ModelError
from fedward.common.ml.networks import (
    NETWORKS,
    build_network,
    check_network_fits,
    load_initial_weights,
    read_state_dict,
)
from fedward.common.schema import DatasetSchema

LESION = DatasetSchema(Task.SEGMENTATION, ("background", "lesion"), 1, 2, Modality.US)
HIPPOCAMPUS = DatasetSchema(Task.SEGMENTATION, ("background", "anterior", "posterior"), 1, 3, Modality.MR)


CLASSIFIERS = [name for name, spec in NETWORKS.items() if not spec.segments]
SEGMENTERS = [name for name, spec in NETWORKS.items() if spec.segments]


@pytest.mark.parametrize("name", CLASSIFIERS)
@pytest.mark.parametrize(("channels", "outputs"), [(1, 2), (3, 5)])
def test_output_shape_at_min_and_64px(name: ModelName, channels: int, outputs: int) -> None:
    torch.manual_seed(0)
    model = build_network(name, channels, outputs).eval()
    for size in sorted({NETWORKS[name].min_image_size, 64}):
        with torch.no_grad():
            logits = model(torch.rand(2, channels, size, size))
        assert logits.shape == (2, outputs)
        assert logits.dtype == torch.float32


@pytest.mark.parametrize("name", SEGMENTERS)
@pytest.mark.parametrize(("dims", "grid"), [(2, (32, 48)), (3, (16, 32, 16))])
def test_segmentation_networks_give_label_map_logits(name: ModelName, dims: int, grid: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = build_network(name, 1, 3, spatial_dims=dims).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 1, *grid))
    assert logits.shape == (2, 3, *grid) and logits.dtype == torch.float32


def test_networks_must_fit_the_task() -> None:
    check_network_fits(ModelName.UNET, LESION, 128)
    check_network_fits(ModelName.VNET, HIPPOCAMPUS)
    with pytest.raises(ModelError, match="cannot learn a 2D segmentation task; choose one of unet"):
        check_network_fits(ModelName.SMALL_CNN, LESION)
    with pytest.raises(ModelError, match="cannot learn a 2D binary task"):
        check_network_fits(ModelName.UNET, DatasetSchema(Task.BINARY, ("normal", "pneumonia"), 1))
    with pytest.raises(ModelError, match="multiples of 16"):
        check_network_fits(ModelName.UNET, LESION, 28)
    with pytest.raises(ModelError, match="takes 2D inputs, not 3D"):
        build_network(ModelName.SMALL_CNN, 1, 2, spatial_dims=3)


@pytest.mark.parametrize("name", [ModelName.SMALL_CNN, ModelName.TANH_CNN, ModelName.RESNET18])
def test_cpu_models_take_28px(name: ModelName) -> None:
    model = build_network(name, 1, 2).train()
    assert model(torch.rand(4, 1, 28, 28)).shape == (4, 2)


@pytest.mark.parametrize("name", [ModelName.DENSENET121, ModelName.EFFICIENTNET_B0])
def test_models_refuse_too_small_images_at_config_time(name: ModelName) -> None:
    with pytest.raises(ConfigError, match=f"at least {NETWORKS[name].min_image_size} px"):
        check_image_size(name, 28)
    check_image_size(name, 64)


def test_bad_channels_or_outputs() -> None:
    with pytest.raises(ModelError):
        build_network(ModelName.SMALL_CNN, 2, 2)
    with pytest.raises(ModelError):
        build_network(ModelName.SMALL_CNN, 1, 0)


def test_same_seed_same_initial_weights() -> None:
    torch.manual_seed(3)
    a = build_network(ModelName.SMALL_CNN, 1, 2).state_dict()
    torch.manual_seed(3)
    b = build_network(ModelName.SMALL_CNN, 1, 2).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def saved_network(name: ModelName, outputs: int, path: Path) -> torch.nn.Module:
    """A seeded network of ``name`` whose weights are saved to ``path`` (.safetensors)."""
    torch.manual_seed(0)
    network = build_network(name, 1, outputs)
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(path))
    return network


def test_transfer_learning_keeps_fitting_layers_and_skips_the_head(tmp_path: Path) -> None:
    path = tmp_path / "pretrained.safetensors"
    source = saved_network(ModelName.SMALL_CNN, 10, path)
    target = build_network(ModelName.SMALL_CNN, 1, 2)
    report = load_initial_weights(target, path)
    assert "classifier.1.weight" in report.skipped
    assert torch.equal(target.state_dict()["features.0.conv.weight"], source.state_dict()["features.0.conv.weight"])
    pt = tmp_path / "pretrained.pt"
    torch.save({"state_dict": source.state_dict()}, pt)
    assert load_initial_weights(build_network(ModelName.SMALL_CNN, 1, 2), pt).loaded == report.loaded


def test_unusable_weight_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        read_state_dict(tmp_path / "none.pt")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a tensor file")
    with pytest.raises(ModelError, match="cannot read weights file"):
        read_state_dict(junk)
    other = tmp_path / "other.safetensors"
    save_file({"unrelated": torch.zeros(3)}, str(other))
    with pytest.raises(ModelError, match="no tensor"):
        load_initial_weights(build_network(ModelName.SMALL_CNN, 1, 2), other)


def test_unet_encoder_starts_from_a_lesion_unet_and_skips_its_decoder(tmp_path: Path) -> None:
    path = tmp_path / "best.safetensors"
    lesion = saved_network(ModelName.UNET, 2, path)
    classifier = build_network(ModelName.UNET_ENCODER, 1, 3)
    report = load_initial_weights(classifier, path)
    own = classifier.state_dict()
    encoder = {k for k in own if not k.startswith("head.")}
    assert set(report.loaded) == encoder  # every encoder tensor comes from the U-Net
    assert all(torch.equal(own[k], lesion.state_dict()[k]) for k in encoder)
    assert report.skipped and all(k not in own for k in report.skipped)  # decoder and segmentation head
    assert set(own) - encoder == {"head.3.weight", "head.3.bias"}
    classifier.eval()
    with torch.no_grad():
        assert classifier(torch.rand(2, 1, 128, 128)).shape == (2, 3)


def test_unet_encoder_trains_under_dp_sgd() -> None:
    from opacus import GradSampleModule

    model = GradSampleModule(build_network(ModelName.UNET_ENCODER, 1, 2, private=True))
    model(torch.rand(3, 1, 32, 32)).sum().backward()
    assert all(p.grad_sample is not None and p.grad_sample.shape[0] == 3 for p in model.parameters())


def test_tanh_cnn_is_the_papers_small_network_and_takes_larger_images() -> None:
    model = build_network(ModelName.TANH_CNN, 1, 2)
    assert sum(p.numel() for p in model.parameters()) == 25_746  # Papernot et al. (2021), two classes
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm | torch.nn.GroupNorm) for m in model.modules())
    assert build_network(ModelName.TANH_CNN, 3, 4)(torch.rand(2, 3, 64, 64)).shape == (2, 4)
    with pytest.raises(ConfigError, match="at least 28 px"):
        check_image_size(ModelName.TANH_CNN, 24)


def test_tanh_cnn_trains_under_dp_sgd() -> None:
    from opacus import GradSampleModule

    model = GradSampleModule(build_network(ModelName.TANH_CNN, 1, 2, private=True))
    model(torch.rand(3, 1, 28, 28)).sum().backward()
    assert all(p.grad_sample is not None and p.grad_sample.shape[0] == 3 for p in model.parameters())
