"""Networks by name: the classifiers and segmentation networks a run can train, built from MONAI.

=================  ==============================================  ========  ===========
name               network                                         min size  parameters*
=================  ==============================================  ========  ===========
smallcnn           5 conv blocks (MONAI ``Convolution``), GAP, FC  8 px      ~0.14 M
tanhcnn            2 conv + 2 FC layers, tanh, no normalisation    28 px     ~0.026 M
                   (Papernot, 2021; for DP-SGD, :mod:`.dpnets`)
resnet18           ``monai.networks.nets.resnet18`` (He, 2016)     16 px     ~11.2 M
densenet121        ``monai.networks.nets.DenseNet121`` (Huang,     32 px     ~7.0 M
                   2017)
efficientnet-b0    ``monai.networks.nets.EfficientNetBN`` (Tan &   32 px     ~4.0 M
                   Le, 2019)
unet-encoder       the down path of the ``unet`` segmentation      32 px     ~1.3 M
                   network, GAP, FC (:mod:`.unet_encoder`)
unet-multitask     the ``unet`` segmentation network and an FC     32 px     ~1.6 M
                   head on its bottleneck pooled over the image
                   and over its predicted lesion, trained on
                   classes and lesion masks (:mod:`.multitask`)
=================  ==============================================  ========  ===========

\\* one input channel, two classes.

``smallcnn`` is the default: fast enough for 28 px on a CPU. ``tanhcnn`` is the network
for DP-SGD (see :mod:`.dpnets` for why). The others are for larger inputs and GPUs. No
network downloads pretrained weights (hospitals run offline); start from your own weights
with :func:`load_initial_weights` (``--init-weights FILE``); ``unet-encoder`` starts from a
``unet`` segmentation run's weights (same parameter names), so a classification can reuse
what a federation learned from lesion masks.

Every classifier maps a float32 batch of shape (B, C, H, W) to float32 logits of shape
(B, K): K classes for binary and multi-class tasks (softmax), K labels for multi-label
tasks (sigmoid). The segmentation networks (``unet``, ``vnet``, ``segresnet``,
``attention-unet``; :mod:`fedward.common.ml.segnets`) map (B, C, *S) to (B, K, *S) logits
over the K labels of a label map, in 2D or 3D.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fedward.common.choices import MIN_IMAGE_SIZE, ModelName, Task
from fedward.common.config import RunConfig
from fedward.common.errors import ModelError
from fedward.common.ml.dpnets import TanhCNN
from fedward.common.ml.runtime import derive_seed
from fedward.common.ml.segnets import attention_unet, segresnet, unet, vnet
from fedward.common.schema import DatasetSchema

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
        from monai.networks.blocks import Convolution

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


def _monai_classifier(name: ModelName, c: int, k: int) -> nn.Module:
    """MONAI's ImageNet-style 2D classifiers, imported when built (run setup and the CLI check names only)."""
    from monai.networks.nets import DenseNet121, EfficientNetBN, resnet18

    if name is ModelName.RESNET18:
        return resnet18(spatial_dims=2, n_input_channels=c, num_classes=k)
    if name is ModelName.DENSENET121:
        return DenseNet121(spatial_dims=2, in_channels=c, out_channels=k)
    return EfficientNetBN("efficientnet-b0", pretrained=False, spatial_dims=2, in_channels=c, num_classes=k)


def _unet_classifier(name: ModelName, c: int, k: int) -> nn.Module:
    """The U-Net classifiers of :mod:`.unet_encoder`, imported when built."""
    from fedward.common.ml.unet_encoder import UNetEncoderClassifier, UNetMultitask

    return UNetEncoderClassifier(c, k) if name is ModelName.UNET_ENCODER else UNetMultitask(c, k)


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    """One network fedward can build.

    Attributes:
        name: the network's name in run configs.
        summary: one line for tables and model cards.
        build: ``(in_channels, num_outputs, spatial_dims) -> nn.Module``.
        segments: a segmentation network (label-map logits) rather than a classifier.
        dims: the spatial dimensions it takes (2, or 2 and 3).
        per_sample_gradients: Opacus can compute its per-sample gradients (DP-SGD);
            MONAI's SegResNet adds its residuals in place, which Opacus' hooks refuse.
    """

    name: ModelName
    summary: str
    build: Callable[[int, int, int], nn.Module]
    segments: bool = False
    dims: frozenset[int] = frozenset({2})
    per_sample_gradients: bool = True

    @property
    def min_image_size(self) -> int:
        """Smallest square input (pixels) every downsampling stage can take."""
        return MIN_IMAGE_SIZE[self.name]


_BOTH = frozenset({2, 3})

SEGMENTATION_GRID_MULTIPLE = 16
"""Every side of a segmentation network's input must be a multiple of this (four stride-2
downsamplings; volumes: ``data.volume-size`` is checked when the config is read)."""

NETWORKS: dict[ModelName, NetworkSpec] = {
    ModelName.SMALL_CNN: NetworkSpec(
        ModelName.SMALL_CNN,
        "small VGG-style CNN (MONAI Convolution blocks)",
        lambda c, k, d: SmallCNN(c, k),
    ),
    ModelName.TANH_CNN: NetworkSpec(
        ModelName.TANH_CNN,
        "small tanh CNN for DP-SGD (Papernot et al., 2021)",
        lambda c, k, d: TanhCNN(c, k),
    ),
    ModelName.RESNET18: NetworkSpec(
        ModelName.RESNET18,
        "ResNet-18 (MONAI)",
        lambda c, k, d: _monai_classifier(ModelName.RESNET18, c, k),
    ),
    ModelName.DENSENET121: NetworkSpec(
        ModelName.DENSENET121,
        "DenseNet-121 (MONAI)",
        lambda c, k, d: _monai_classifier(ModelName.DENSENET121, c, k),
    ),
    ModelName.EFFICIENTNET_B0: NetworkSpec(
        ModelName.EFFICIENTNET_B0,
        "EfficientNet-B0 (MONAI EfficientNetBN, no pretrained weights)",
        lambda c, k, d: _monai_classifier(ModelName.EFFICIENTNET_B0, c, k),
    ),
    ModelName.UNET_ENCODER: NetworkSpec(
        ModelName.UNET_ENCODER,
        "encoder of the residual U-Net (MONAI), GAP, linear",
        lambda c, k, d: _unet_classifier(ModelName.UNET_ENCODER, c, k),
    ),
    ModelName.UNET_MULTITASK: NetworkSpec(
        ModelName.UNET_MULTITASK,
        "residual U-Net (MONAI) segmenting the lesion; a linear head on its lesion-pooled bottleneck classifies",
        lambda c, k, d: _unet_classifier(ModelName.UNET_MULTITASK, c, k),
        per_sample_gradients=False,
    ),
    ModelName.UNET: NetworkSpec(ModelName.UNET, "U-Net with residual units (MONAI)", unet, True, _BOTH),
    ModelName.VNET: NetworkSpec(ModelName.VNET, "V-Net (MONAI)", vnet, True, _BOTH),
    ModelName.SEGRESNET: NetworkSpec(ModelName.SEGRESNET, "SegResNet (MONAI)", segresnet, True, _BOTH, False),
    ModelName.ATTENTION_UNET: NetworkSpec(
        ModelName.ATTENTION_UNET, "Attention U-Net (MONAI)", attention_unet, True, _BOTH
    ),
}


def build_network(
    name: ModelName, in_channels: int, num_outputs: int, *, private: bool = False, spatial_dims: int = 2
) -> nn.Module:
    """Build a freshly initialised network by name.

    Seed PyTorch first (``torch.manual_seed``) for reproducible initial weights.

    Args:
        name: the network's name.
        in_channels: image channels C, 1 or 3.
        num_outputs: number of logits K (classes, or labels for multi-label), >= 2 for
            single-label tasks and >= 1 for multi-label.
        private: make the network differential-privacy compatible with Opacus'
            ``ModuleValidator.fix``: BatchNorm becomes GroupNorm (BatchNorm mixes samples
            of a batch, so per-sample gradients and clipped updates would not bound one
            image's or one hospital's influence; its running statistics are not trained
            weights either), and in-place activations (SegResNet, V-Net) compute out of
            place, as Opacus' backward hooks need. Every run with differential privacy
            builds its model so.
        spatial_dims: 2 for images, 3 for volumes (segmentation networks only).

    Returns:
        The module in training mode, on the CPU, float32.

    Raises:
        ModelError: if ``in_channels`` or ``num_outputs`` is out of range, or the network
            does not take ``spatial_dims``.
    """
    if in_channels not in (1, 3):
        raise ModelError(f"models take 1 or 3 image channels; got {in_channels}")
    if num_outputs < 1:
        raise ModelError(f"a model needs at least one output; got {num_outputs}")
    spec = NETWORKS[name]
    if spatial_dims not in spec.dims:
        raise ModelError(
            f"model {name.value} takes {' or '.join(map(str, sorted(spec.dims)))}D inputs, not {spatial_dims}D"
        )
    model = spec.build(in_channels, num_outputs, spatial_dims)
    if private:
        from opacus.validators import ModuleValidator

        model = ModuleValidator.fix(model)
        for module in model.modules():  # in-place activations break Opacus' per-sample-gradient hooks
            if getattr(module, "inplace", False):
                module.inplace = False
    return model


def network_for(cfg: RunConfig, schema: DatasetSchema) -> nn.Module:
    """The network a run trains, freshly initialised: ``model.name`` for the schema's channels and outputs.

    Built Opacus-compatible when the run has any differential privacy (see :func:`build_network`).

    Raises:
        ModelError: as :func:`build_network`, or if the network does not do the schema's task
            (a classifier for a segmentation, a segmentation network for a classification).
    """
    check_network_fits(cfg.model.name, schema, cfg.data.image_size)
    return build_network(
        cfg.model.name,
        schema.channels,
        schema.num_outputs,
        private=cfg.privacy.enabled,
        spatial_dims=schema.spatial_dims,
    )


def check_dpsgd_network(name: ModelName) -> None:
    """Refuse DP-SGD for a network Opacus cannot compute per-sample gradients of.

    Raises:
        ModelError: naming the network and those that can train with DP-SGD.
    """
    if NETWORKS[name].per_sample_gradients:
        return
    fits = ", ".join(n.value for n, s in NETWORKS.items() if s.per_sample_gradients and s.segments)
    raise ModelError(
        f"model.name {name.value} cannot train with DP-SGD (privacy.dpsgd): Opacus cannot compute its "
        f"per-sample gradients; segmentation networks that can: {fits}"
    )


def check_network_fits(name: ModelName, schema: DatasetSchema, image_size: int | None = None) -> None:
    """Refuse a network that cannot learn the schema's task or dimensions, or a 2D grid it cannot take.

    Args:
        name: the network.
        schema: the dataset's schema.
        image_size: 2D segmentation: the side of the model's grid in pixels, checked to be a
            multiple of :data:`SEGMENTATION_GRID_MULTIPLE`; ``None`` skips the check.

    Raises:
        ModelError: naming the network, the task and the networks that fit, or the grid.
    """
    spec = NETWORKS[name]
    segmentation = schema.task is Task.SEGMENTATION
    if spec.segments == segmentation and schema.spatial_dims in spec.dims:
        if segmentation and schema.spatial_dims == 2 and image_size and image_size % SEGMENTATION_GRID_MULTIPLE:
            raise ModelError(
                f"model {name.value} needs image sides that are multiples of {SEGMENTATION_GRID_MULTIPLE} px; "
                f"data.image-size is {image_size} (use 64, 128 or 224)"
            )
        return
    fits = [n.value for n, s in NETWORKS.items() if s.segments == segmentation and schema.spatial_dims in s.dims]
    raise ModelError(
        f"model.name {name.value} cannot learn a {schema.spatial_dims}D {schema.task.value} task; "
        f"choose one of {', '.join(fits)}"
    )


def initial_network(cfg: RunConfig, schema: DatasetSchema) -> nn.Module:
    """The run's global model before round 1: seeded initial weights, then ``model.init-weights``.

    The same seed gives the same initial weights in the federation and in its centralized
    baseline (PyTorch's global generator is seeded from ``run.seed``).

    Raises:
        ModelError: as :func:`build_network` and :func:`load_initial_weights`.
    """
    torch.manual_seed(derive_seed(cfg.run.seed, "initial-model"))
    model = network_for(cfg, schema)
    if cfg.model.init_weights is not None:
        load_initial_weights(model, cfg.model.init_weights)
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
