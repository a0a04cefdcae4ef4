"""The closed sets of choices a run configuration can name.

Every free-text option in a run config (strategy, model, partition, ...) is one of these
enums; :func:`choose` turns a string into a member in the style of MONAI's
:func:`monai.utils.look_up_option` and raises :class:`~fedward.common.errors.ConfigError`
naming the config field and the valid values, with a "did you mean" hint.

This module has no heavy imports (not even MONAI, which imports torch) so that config
parsing and every ``fedward`` command start fast.
"""

from __future__ import annotations

import difflib
from enum import StrEnum
from typing import TypeVar

from fedward.common.errors import ConfigError


class Task(StrEnum):
    """What a model learns from a dataset: classification (MedMNIST v2 naming) or segmentation."""

    BINARY = "binary"
    """Two classes, one label per image; class index 1 is the positive class."""
    MULTICLASS = "multiclass"
    """K > 2 exclusive classes, one label per image (MedMNIST ordinal regression too)."""
    MULTILABEL = "multilabel"
    """K independent binary labels per image (e.g. ChestMNIST)."""
    SEGMENTATION = "segmentation"
    """A label per pixel (2D) or voxel (3D): index 0 is background, 1..K-1 the structures."""


class Modality(StrEnum):
    """Imaging modality, as DICOM's Modality (0008,0060) names it (PS3.3 C.7.3.1.1.1)."""

    CR = "CR"
    """Computed radiography (chest X-rays)."""
    DX = "DX"
    """Digital radiography."""
    US = "US"
    """Ultrasound."""
    MR = "MR"
    """Magnetic resonance."""
    CT = "CT"
    """Computed tomography (intensities in Hounsfield units)."""
    MG = "MG"
    """Mammography."""
    OT = "OT"
    """Other or unknown."""


RADIOGRAPHY: frozenset[Modality] = frozenset({Modality.CR, Modality.DX})
"""Modalities that are one kind of image: a chest X-ray model accepts both."""


class TargetKind(StrEnum):
    """Which annotation of a data set a run learns when it has several (BUSI: a class and a lesion mask)."""

    AUTO = "auto"
    """The class label when the data set has one, else the mask."""
    CLASS = "class"
    """The image's class label: classification."""
    MASK = "mask"
    """The label map: segmentation."""
    CLASS_AND_MASK = "class+mask"
    """The image's class label, learnt with its lesion mask as an auxiliary target (multi-task
    classification; the network must segment too: :data:`MASK_SUPERVISED_MODELS`)."""


class Intensity(StrEnum):
    """How image intensities are normalised before the model sees them (segmentation data)."""

    AUTO = "auto"
    """By modality: CT window, MR z-score, 8-bit images (US, X-ray) scaled to [0, 1]."""
    SCALE = "scale"
    """8-bit grey values divided by 255."""
    ZSCORE = "zscore"
    """Zero mean, unit variance over the non-zero voxels of each image (MR)."""
    PERCENTILE = "percentile"
    """The 0.5th..99.5th percentile range of each image mapped to [0, 1], clipped."""
    CT_WINDOW = "ct-window"
    """Hounsfield units clipped to ``data.ct-window`` and mapped to [0, 1]."""


DEFAULT_CT_WINDOW: tuple[float, float] = (-1000.0, 400.0)
"""Default window (low, high) of ``ct-window`` normalisation, Hounsfield units."""


class Partition(StrEnum):
    """How the training split is divided across simulated hospitals."""

    IID = "iid"
    """Uniformly at random, equal sizes."""
    DIRICHLET = "dirichlet"
    """Label skew: per-class hospital shares drawn from Dirichlet(alpha) (Hsu et al., 2019)."""
    QUANTITY = "quantity"
    """Size skew: hospital sizes drawn from Dirichlet(alpha), labels IID (Li et al., 2022)."""


class StrategyName(StrEnum):
    """Aggregation strategies from :mod:`flwr.serverapp.strategy`."""

    FEDAVG = "fedavg"
    FEDPROX = "fedprox"
    FEDADAM = "fedadam"
    FEDYOGI = "fedyogi"
    FEDAVGM = "fedavgm"
    FEDMEDIAN = "fedmedian"
    FEDTRIMMEDAVG = "fedtrimmedavg"
    KRUM = "krum"


class TunedOn(StrEnum):
    """Where a private run's settings (network, learning rate, clipping norm, ...) were chosen.

    ``fixed``: before training and without these hospitals' data (defaults, the
    literature, public data); nothing to account. ``validation``: by comparing runs on
    these hospitals' validation splits; that comparison uses private data and is not
    covered by the run's (epsilon, delta) (its cost: Papernot & Steinke, "Hyperparameter
    Tuning with Renyi Differential Privacy", ICLR 2022).
    """

    FIXED = "fixed"
    VALIDATION = "validation"


class ClientDp(StrEnum):
    """Client-level differential privacy: Flower's DP strategy wrappers.

    ``server-*`` clips each hospital's update at the coordinator, ``client-*`` at the
    hospital (a ClientApp mod) so that the coordinator never sees an unclipped update;
    ``*-fixed`` uses a fixed clipping norm (McMahan et al., 2018), ``*-adaptive`` adapts
    it to a quantile of update norms (Andrew et al., 2021).
    """

    NONE = "none"
    SERVER_FIXED = "server-fixed"
    CLIENT_FIXED = "client-fixed"
    SERVER_ADAPTIVE = "server-adaptive"
    CLIENT_ADAPTIVE = "client-adaptive"


class ModelName(StrEnum):
    """Networks fedward can build (:data:`fedward.common.ml.networks.NETWORKS`)."""

    SMALL_CNN = "smallcnn"
    TANH_CNN = "tanhcnn"
    DENSENET121 = "densenet121"
    RESNET18 = "resnet18"
    EFFICIENTNET_B0 = "efficientnet-b0"
    UNET_ENCODER = "unet-encoder"
    UNET_MULTITASK = "unet-multitask"
    UNET = "unet"
    VNET = "vnet"
    SEGRESNET = "segresnet"
    ATTENTION_UNET = "attention-unet"


IMAGE_SIZES: tuple[int, ...] = (28, 64, 128, 224)
"""Image sizes MedMNIST v2 / MedMNIST+ ship, and the sizes a run may train at (pixels)."""

MIN_IMAGE_SIZE: dict[ModelName, int] = {
    ModelName.SMALL_CNN: 8,
    ModelName.TANH_CNN: 28,
    ModelName.RESNET18: 16,
    ModelName.DENSENET121: 32,
    ModelName.EFFICIENTNET_B0: 32,
    ModelName.UNET_ENCODER: 32,
    ModelName.UNET_MULTITASK: 32,
    ModelName.UNET: 16,
    ModelName.VNET: 16,
    ModelName.SEGRESNET: 16,
    ModelName.ATTENTION_UNET: 16,
}
"""Smallest square input (pixels) every downsampling stage of a network can take; the config
refuses smaller ``data.image-size`` values before anything is built."""

MASK_SUPERVISED_MODELS: frozenset[ModelName] = frozenset({ModelName.UNET_MULTITASK})
"""Classifiers that also segment while they train: the networks of ``data.target = "class+mask"``."""


class OptimizerName(StrEnum):
    """Local optimizer of each hospital (and of the centralized baseline)."""

    ADAMW = "adamw"
    SGD = "sgd"


class Schedule(StrEnum):
    """Learning-rate schedule over the whole run (all rounds x local epochs)."""

    CONSTANT = "constant"
    COSINE = "cosine"
    """Cosine annealing to zero over the run's total epochs (Loshchilov & Hutter, 2017)."""


class ClassWeighting(StrEnum):
    """Loss weighting against class imbalance, computed from each hospital's own labels."""

    NONE = "none"
    BALANCED = "balanced"
    """Weight of class k is n / (K * n_k) (scikit-learn's "balanced"); pos_weight for multi-label."""
    LOGIT_ADJUSTED = "logit-adjusted"
    """Train on logits plus the log of the hospital's class prior (logit adjustment, Menon et al.,
    ICLR 2021): a class that is rare or absent at a hospital is not pushed down there, which keeps
    the shared classifier balanced under label skew (as FedLC, Zhang et al., ICML 2022)."""


class OperatingRule(StrEnum):
    """How the decision threshold of a classifier is chosen on the federated validation split."""

    YOUDEN = "youden"
    """Maximise Youden's J = sensitivity + specificity - 1 (Youden, 1950)."""
    SENSITIVITY = "sensitivity"
    """The highest threshold whose sensitivity is at least the target (a screening tool)."""
    SPECIFICITY = "specificity"
    """The lowest threshold whose specificity is at least the target (a confirmatory test)."""
    FIXED = "fixed"
    """The threshold the config gives, on the calibrated probability."""


class SegLoss(StrEnum):
    """Loss of a segmentation network (MONAI losses, softmax over the labels, Dice over the batch)."""

    DICE_CE = "dice-ce"
    """Dice + cross-entropy (MONAI ``DiceCELoss``; nnU-Net's default, Isensee et al., 2021)."""
    DICE_FOCAL = "dice-focal"
    """Dice + focal loss (MONAI ``DiceFocalLoss``; Lin et al., 2017), for small structures."""


class DeviceChoice(StrEnum):
    """Where training runs; ``auto`` picks CUDA when PyTorch sees a GPU."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class Precision(StrEnum):
    """The arithmetic a hospital's training steps run in (see :func:`fedward.common.ml.runtime.training_precision`)."""

    FLOAT32 = "float32"
    """Every operation in float32."""
    BFLOAT16 = "bfloat16"
    """bfloat16 autocast on a CPU with native bfloat16 arithmetic (AVX512-BF16 or AMX)."""
    FLOAT16 = "float16"
    """float16 autocast with gradient scaling on CUDA."""


class FrameMode(StrEnum):
    """Which frames of a multi-frame image (DICOM cine, ultrasound loops) become samples."""

    MIDDLE = "middle"
    """The middle frame only."""
    ALL = "all"
    """Every frame, each a sample with the file's label."""


E = TypeVar("E", bound=StrEnum)


def choose(value: str | StrEnum, options: type[E], field: str) -> E:
    """Return the member of ``options`` that ``value`` names.

    Args:
        value: the string from a config file, a flag or Flower's run config.
        options: the enum of valid choices.
        field: the config field, used in the error message (e.g. ``"federation.strategy"``).

    Returns:
        The enum member.

    Raises:
        ConfigError: if ``value`` is not one of the options; the message names the field,
            suggests the closest option and lists all of them.
    """
    if isinstance(value, options):
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{field} must be a string, one of {_listing(options)}; got {value!r}")
    for candidate in (value.strip(), value.strip().lower(), value.strip().upper()):
        try:
            return options(candidate)
        except ValueError:
            continue
    close = difflib.get_close_matches(value.strip().lower(), [m.value.lower() for m in options], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"{field}: unknown value {value!r}{hint}; choose one of {_listing(options)}")


def _listing(options: type[StrEnum]) -> str:
    return ", ".join(member.value for member in options)
