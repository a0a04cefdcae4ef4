"""The model registry: CNNs by name, built from MONAI networks and blocks.

=================  ==============================================  ========  ===========
name               network                                         min size  parameters*
=================  ==============================================  ========  ===========
smallcnn           5 conv blocks (MONAI ``Convolution``), GAP, FC  8 px      ~0.14 M
resnet18           ``monai.networks.nets.resnet18`` (He, 2016)     16 px     ~11.2 M
densenet121        ``monai.networks.nets.DenseNet121`` (Huang,     32 px     ~7.0 M
                   2017)
efficientnet-b0    ``monai.networks.nets.EfficientNetBN`` (Tan &   32 px     ~4.0 M
                   Le, 2019)
=================  ==============================================  ========  ===========

\\* one input channel, two classes.

``smallcnn`` is the default: fast enough for 28 px on a CPU. The others are for larger
inputs and GPUs. No network downloads pretrained weights (hospitals run offline); start
from your own weights with :func:`load_initial_weights` (``--init-weights FILE``).

Every network maps a float32 batch of shape (B, C, H, W) to float32 logits of shape
(B, K): K classes for binary and multi-class tasks (softmax), K labels for multi-label
tasks (sigmoid).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from monai.networks.blocks import Convolution
from monai.networks.nets import DenseNet121, EfficientNetBN, resnet18
from torch import nn

from fedward.common.choices import ModelName
from fedward.common.config import IMAGE_SIZES
from fedward.common.errors import ConfigError, ModelError

log = logging.getLogger(__name__)


class SmallCNN(nn.Module):
    """A small VGG-style CNN for 28 px images on a CPU.

    Two stages of two 3x3 convolutions (batch norm, ReLU) with 2x2 max pooling, one
    more convolution, global average pooling, dropout and a linear classifier.

    Args:
        in_channels: image channels C (1 or 3).
        num_outputs: logits K.
        width: channels of the first stage; later stages use 2x and 4x.
        dropout: dropout probability before the classifier.

    Shapes:
        input (B, C, H, W) float32 with H, W >= 8; output (B, K) float32 logits.
    """

    def __init__(self, in_channels: int, num_outputs: int, width: int = 32, dropout: float = 0.2) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Module:
            return Convolution(2, cin, cout, kernel_size=3, act="RELU", norm="BATCH", bias=False)

        self.features = nn.Sequential(
            block(in_channels, width),
            block(width, width),
            nn.MaxPool2d(2),
            block(width, 2 * width),
            block(2 * width, 2 * width),
            nn.MaxPool2d(2),
            block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * width, num_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape (B, K) for images of shape (B, C, H, W)."""
        return self.classifier(self.features(x))  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One registry entry.

    Attributes:
        name: registry name.
        min_image_size: smallest square input (pixels) every downsampling stage can take.
        summary: one line for tables and model cards.
        build: ``(in_channels, num_outputs) -> nn.Module``.
    """

    name: ModelName
    min_image_size: int
    summary: str
    build: Callable[[int, int], nn.Module]


REGISTRY: dict[ModelName, ModelSpec] = {
    ModelName.SMALL_CNN: ModelSpec(
        ModelName.SMALL_CNN,
        8,
        "small VGG-style CNN (MONAI Convolution blocks)",
        lambda c, k: SmallCNN(c, k),
    ),
    ModelName.RESNET18: ModelSpec(
        ModelName.RESNET18,
        16,
        "ResNet-18 (MONAI)",
        lambda c, k: resnet18(spatial_dims=2, n_input_channels=c, num_classes=k),
    ),
    ModelName.DENSENET121: ModelSpec(
        ModelName.DENSENET121,
        32,
        "DenseNet-121 (MONAI)",
        lambda c, k: DenseNet121(spatial_dims=2, in_channels=c, out_channels=k),
    ),
    ModelName.EFFICIENTNET_B0: ModelSpec(
        ModelName.EFFICIENTNET_B0,
        32,
        "EfficientNet-B0 (MONAI EfficientNetBN, no pretrained weights)",
        lambda c, k: EfficientNetBN("efficientnet-b0", pretrained=False, spatial_dims=2, in_channels=c, num_classes=k),
    ),
}


def check_image_size(name: ModelName, image_size: int) -> None:
    """Refuse, at config time, an image size the network cannot take.

    Raises:
        ConfigError: if ``image_size`` is below the network's minimum; the message names
            the minimum and the allowed sizes that satisfy it.
    """
    spec = REGISTRY[name]
    if image_size < spec.min_image_size:
        fits = ", ".join(str(s) for s in IMAGE_SIZES if s >= spec.min_image_size)
        raise ConfigError(
            f"model {name.value} needs images of at least {spec.min_image_size} px; "
            f"data.image-size is {image_size} (use {fits})"
        )


def build_model(name: ModelName, in_channels: int, num_outputs: int, *, private: bool = False) -> nn.Module:
    """Build a freshly initialised network from the registry.

    Seed PyTorch first (``torch.manual_seed``) for reproducible initial weights.

    Args:
        name: registry name.
        in_channels: image channels C, 1 or 3.
        num_outputs: number of logits K (classes, or labels for multi-label), >= 2 for
            single-label tasks and >= 1 for multi-label.
        private: make the network differential-privacy compatible with Opacus'
            ``ModuleValidator.fix``: BatchNorm becomes GroupNorm (BatchNorm mixes samples
            of a batch, so per-sample gradients and clipped updates would not bound one
            image's or one hospital's influence; its running statistics are not trained
            weights either). Every run with differential privacy builds its model so.

    Returns:
        The module in training mode, on the CPU, float32.

    Raises:
        ModelError: if ``in_channels`` or ``num_outputs`` is out of range.
    """
    if in_channels not in (1, 3):
        raise ModelError(f"models take 1 or 3 image channels; got {in_channels}")
    if num_outputs < 1:
        raise ModelError(f"a model needs at least one output; got {num_outputs}")
    model = REGISTRY[name].build(in_channels, num_outputs)
    if private:
        from opacus.validators import ModuleValidator

        model = ModuleValidator.fix(model)
    return model


@dataclass(frozen=True, slots=True)
class WeightsReport:
    """What :func:`load_initial_weights` did.

    Attributes:
        loaded: parameter/buffer names taken from the file.
        skipped: names in the file whose shape does not fit the model, or that the model
            lacks (e.g. a 1000-class ImageNet head).
    """

    loaded: tuple[str, ...]
    skipped: tuple[str, ...]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a PyTorch file (``weights_only``).

    Raises:
        ModelError: if the file is missing, unreadable or not a mapping of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelError(f"cannot read weights file {path}: {type(err).__name__}: {err}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"weights file {path} does not hold a state dict of tensors")
    return state


def load_initial_weights(model: nn.Module, path: Path) -> WeightsReport:
    """Start ``model`` from the weights in ``path`` (transfer learning).

    Tensors whose name and shape match are copied; the rest keep the model's fresh
    initialisation and are reported (and logged) as skipped.

    Raises:
        ModelError: if the file cannot be read or not a single tensor fits the model.
    """
    state = read_state_dict(path)
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = tuple(sorted(set(state) - set(fitting)))
    if not fitting:
        raise ModelError(
            f"no tensor in {path} fits the model (names or shapes differ); was it saved from the same network?"
        )
    model.load_state_dict({**own, **{k: v.to(own[k].dtype) for k, v in fitting.items()}})
    if skipped:
        log.info(
            "init weights: kept fresh initialisation for %d tensors (%s)",
            len(skipped),
            ", ".join(skipped[:5]),
        )
    return WeightsReport(loaded=tuple(sorted(fitting)), skipped=skipped)
