"""The sections of a run configuration, one frozen dataclass each, validated when built.

Each section checks its own values in ``__post_init__`` and raises
:class:`~fedward.common.errors.ConfigError` naming the key (``federation.hospitals``) and
what is allowed; checks that span sections live in :class:`~fedward.common.config.run_config.RunConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedward.common.choices import (
    DEFAULT_CT_WINDOW,
    IMAGE_SIZES,
    ClassWeighting,
    ClientDp,
    DeviceChoice,
    FrameMode,
    Intensity,
    Modality,
    ModelName,
    OptimizerName,
    Schedule,
    SegLoss,
    StrategyName,
    TargetKind,
    Task,
    TunedOn,
)
from fedward.common.config.checks import check_min, check_range, check_segmentation_grid
from fedward.common.config.federation import FederationConfig
from fedward.common.errors import ConfigError
from fedward.common.schema import DatasetSchema

__all__ = [
    "DataConfig",
    "FederationConfig",
    "ModelConfig",
    "PrivacyConfig",
    "RunOptions",
    "SimulationConfig",
    "StrategyConfig",
    "TrainConfig",
]


@dataclass(frozen=True, slots=True)
class DataConfig:
    """What data every hospital trains on and how images reach the model.

    Attributes:
        dataset: MedMNIST 2D dataset name (``pneumoniamnist``) or the stem of any ``.npz``
            with the MedMNIST key layout in ``data_dir``.
        data_dir: folder holding ``<dataset>.npz``; ``None`` means ``$FEDWARD_DATA_DIR``,
            else ``~/.fedward/data`` (see :func:`fedward.common.data.locate.locate_dataset`).
        image_size: side of the square model input in pixels, one of 28, 64, 128, 224.
        augment: train-time augmentation (random flip, rotation, zoom).
        val_fraction: fraction of each hospital's training images held out as its local
            validation split, in (0, 0.5].
        frames: multi-frame images give their ``middle`` frame or ``all`` frames as samples.
        hospital_dirs: simulation over hospital folders (DICOM, PNG/JPEG or ``.npz``): one
            folder per simulated hospital, instead of partitioning ``dataset``.
        cache_dir: where hospitals cache decoded images (``None``: ``~/.fedward/cache/decoded``).
        cache: cache decoded images at all.
        task: declared task of a dataset fedward cannot read here (a coordinator without the
            file, hospital folders of a dataset outside the MedMNIST catalog); set with
            ``classes`` and ``channels`` or not at all. What a run finds is in its
            :class:`~fedward.common.config.spec.RunSpec`, never written back here.
        classes: declared class (or label) names, index order.
        channels: declared number of image channels (1 or 3); 0: not declared.
        target: which annotation to learn when the data set has a class and a mask
            (BUSI): ``class`` (classification), ``mask`` (segmentation), ``class+mask``
            (classification with the masks as an auxiliary target; ``model.name``
            ``unet-multitask``) or ``auto`` (the class).
        volume_size: volumes (3D segmentation): the model's grid (D, H, W) in voxels after
            resampling; volumes are padded or centre-cropped to it. Empty: the largest
            extent of the data set's volumes, rounded up to a multiple of 16.
        spacing: volumes: target voxel spacing (mm) along (D, H, W) to resample to; empty
            keeps each volume's own spacing.
        intensity: intensity normalisation of segmentation images (``auto``: by modality).
        ct_window: CT: the (low, high) window in Hounsfield units for ``ct-window``.
        patch_size: segmentation: train on random patches of this size (voxels or pixels,
            each a multiple of 16, within the grid) instead of whole images; a patch is
            centred on a labelled voxel with probability 2/3 (label-aware crops, MONAI's
            ``RandCropByPosNegLabel`` rule), and inference slides windows of this size over
            the grid. Empty: whole images.
        modality: the modality of images whose files carry no header (PNG, JPEG, NIfTI
            without a ``dataset.json`` saying it), e.g. ``US`` for BUSI; DICOM headers and
            a data set's own declaration take precedence.
    """

    dataset: str = "pneumoniamnist"
    data_dir: Path | None = None
    image_size: int = 28
    augment: bool = True
    val_fraction: float = 0.1
    frames: FrameMode = FrameMode.MIDDLE
    hospital_dirs: tuple[Path, ...] = ()
    cache_dir: Path | None = None
    cache: bool = True
    task: Task | None = None
    classes: tuple[str, ...] = ()
    channels: int = 0
    target: TargetKind = TargetKind.AUTO
    volume_size: tuple[int, ...] = ()
    spacing: tuple[float, ...] = ()
    intensity: Intensity = Intensity.AUTO
    ct_window: tuple[float, ...] = DEFAULT_CT_WINDOW
    modality: Modality | None = None
    patch_size: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.dataset.strip():
            raise ConfigError("data.dataset must name a dataset, e.g. 'pneumoniamnist'")
        if self.image_size not in IMAGE_SIZES:
            raise ConfigError(
                f"data.image-size must be one of {', '.join(map(str, IMAGE_SIZES))}; got {self.image_size}"
            )
        check_range("data.val-fraction", self.val_fraction, low=0.0, high=0.5, low_open=True)
        if self.channels not in (0, 1, 3):
            raise ConfigError(f"data.channels must be 1 or 3; got {self.channels}")
        if self.classes and len(set(self.classes)) != len(self.classes):
            raise ConfigError("data.classes holds a class name twice")
        check_segmentation_grid(self.volume_size, self.patch_size, self.spacing, self.ct_window)
        declared = (self.task is not None, bool(self.classes), self.channels > 0)
        if any(declared) and not all(declared):
            raise ConfigError("declare data.task, data.classes and data.channels together, or none of them")

    def declared_schema(self) -> DatasetSchema | None:
        """The dataset schema the config declares, or ``None`` when it declares none.

        Volumes (3D) when ``data.volume-size`` is set, else 2D images; the modality is ``data.modality``.
        """
        if self.task is None:
            return None
        return DatasetSchema(self.task, self.classes, self.channels, 3 if self.volume_size else 2, self.modality)


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Which network to train.

    Attributes:
        name: the network to train (:class:`~fedward.common.choices.ModelName`).
        init_weights: optional ``.safetensors`` or ``.pt`` state dict to start from
            (transfer learning); layers whose shapes differ (e.g. the classifier head)
            keep their fresh initialisation.
    """

    name: ModelName = ModelName.SMALL_CNN
    init_weights: Path | None = None


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Local training at each hospital (and in the centralized baseline).

    Attributes:
        local_epochs: epochs over the hospital's training split per round (>= 1).
        batch_size: images per step (>= 1).
        optimizer: ``adamw`` or ``sgd``.
        lr: base learning rate (> 0).
        weight_decay: decoupled weight decay (AdamW) or L2 penalty (SGD), >= 0.
        momentum: SGD momentum in [0, 1).
        schedule: ``cosine`` anneals the rate to 0 over rounds x local epochs; ``constant``.
        class_weighting: ``balanced`` weights the loss by inverse class frequency of the
            hospital's own labels; ``logit-adjusted`` trains on logits plus the log of the
            hospital's class prior (for label skew across hospitals); ``none``.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        amp: automatic mixed precision where the hardware has it: float16 autocast with
            gradient scaling on CUDA, bfloat16 autocast on CPUs with AVX512-BF16 or AMX
            (about 2x faster there); float32 elsewhere and under DP-SGD
            (:func:`fedward.common.ml.runtime.training_precision`).
        threads: PyTorch CPU threads; 0 keeps PyTorch's default (in simulation: the
            hospital's CPU share).
        seg_loss: segmentation runs: ``dice-ce`` or ``dice-focal``.
    """

    local_epochs: int = 3
    batch_size: int = 64
    optimizer: OptimizerName = OptimizerName.ADAMW
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: Schedule = Schedule.COSINE
    class_weighting: ClassWeighting = ClassWeighting.BALANCED
    device: DeviceChoice = DeviceChoice.AUTO
    amp: bool = True
    threads: int = 0
    seg_loss: SegLoss = SegLoss.DICE_CE

    def __post_init__(self) -> None:
        check_min("train.local-epochs", self.local_epochs, 1)
        check_min("train.batch-size", self.batch_size, 1)
        check_range("train.lr", self.lr, low=0.0, high=10.0, low_open=True)
        check_range("train.weight-decay", self.weight_decay, low=0.0, high=1.0)
        check_range("train.momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        check_min("train.threads", self.threads, 0)


@dataclass(frozen=True, slots=True)
class StrategyConfig:
    """The aggregation strategy and its parameters (unset ones keep Flower's defaults).

    Attributes:
        name: a :mod:`flwr.serverapp.strategy` strategy.
        proximal_mu: FedProx proximal term weight (Li et al., 2020), >= 0.
        server_lr: server learning rate: ``eta`` of FedAdam/FedYogi (Reddi et al., 2021;
            unset: 0.01, as Flower's FedYogi; Flower's FedAdam has 0.1), ``server_learning_rate``
            of FedAvgM (Hsu et al., 2019; unset: 1.0).
        server_momentum: FedAvgM server momentum in [0, 1).
        beta_1: FedAdam/FedYogi first-moment decay in [0, 1).
        beta_2: FedAdam/FedYogi second-moment decay in [0, 1).
        tau: FedAdam/FedYogi adaptivity (> 0).
        trim_beta: FedTrimmedAvg fraction cut from each end, in [0, 0.5).
        num_malicious: Krum's assumed number of Byzantine hospitals f (>= 0); Krum
            needs hospitals > 2f + 2 (Blanchard et al., 2017).
    """

    name: StrategyName = StrategyName.FEDAVG
    proximal_mu: float = 0.01
    server_lr: float | None = None
    server_momentum: float | None = None
    beta_1: float | None = None
    beta_2: float | None = None
    tau: float | None = None
    trim_beta: float = 0.2
    num_malicious: int = 0

    def __post_init__(self) -> None:
        check_range("strategy.proximal-mu", self.proximal_mu, low=0.0, high=1e6)
        if self.server_lr is not None:
            check_range("strategy.server-lr", self.server_lr, low=0.0, high=1e3, low_open=True)
        for key, value in (
            ("strategy.server-momentum", self.server_momentum),
            ("strategy.beta-1", self.beta_1),
            ("strategy.beta-2", self.beta_2),
        ):
            if value is not None:
                check_range(key, value, low=0.0, high=1.0, high_open=True)
        if self.tau is not None:
            check_range("strategy.tau", self.tau, low=0.0, high=1.0, low_open=True)
        check_range("strategy.trim-beta", self.trim_beta, low=0.0, high=0.5, high_open=True)
        check_min("strategy.num-malicious", self.num_malicious, 0)


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    """Resources of each simulated hospital on Flower's Ray backend.

    Attributes:
        client_cpus: CPU cores reserved per hospital (> 0); ``cores / client_cpus``
            hospitals train at once.
        client_gpus: GPU fraction per hospital in [0, 1] (e.g. 0.25 puts four hospitals
            on one GPU); 0 trains on CPU.
    """

    client_cpus: float = 1.0
    client_gpus: float = 0.0

    def __post_init__(self) -> None:
        check_range("simulation.client-cpus", self.client_cpus, low=0.0, high=1024.0, low_open=True)
        check_range("simulation.client-gpus", self.client_gpus, low=0.0, high=1.0)


@dataclass(frozen=True, slots=True)
class PrivacyConfig:
    """Differential privacy: client-level (a hospital's contribution) and/or DP-SGD (an image).

    Attributes:
        client_dp: client-level DP mode (see :class:`~fedward.common.choices.ClientDp`).
        clipping_norm: L2 norm each hospital's model update is clipped to (initial norm for
            adaptive clipping), > 0.
        noise_multiplier: Gaussian noise standard deviation on the sum of clipped updates
            divided by the clipping norm, >= 0; set it or ``target_epsilon``.
        target_epsilon: client-level epsilon at ``delta`` after all rounds, > 0; the noise
            multiplier is computed from it.
        delta: client-level delta, in (0, 1 / federation.hospitals).
        max_epsilon: client-level budget, > 0: the run stops after the last round that fits.
        target_clipped_quantile: adaptive clipping's target quantile of update norms, [0, 1].
        clip_norm_lr: adaptive clipping's learning rate of the clipping norm, > 0.
        dpsgd: sample-level DP-SGD at every hospital (Opacus; Abadi et al., 2016).
        dpsgd_clipping_norm: per-sample gradient clipping norm, > 0.
        dpsgd_noise_multiplier: per-step noise multiplier, >= 0; set it or ``dpsgd_target_epsilon``.
        dpsgd_target_epsilon: each hospital's epsilon at ``dpsgd_delta`` over all planned
            rounds x local epochs, > 0.
        dpsgd_delta: record-level delta, in (0, 1); each hospital checks it is below 1 / its images.
        tuned_on: where the private run's settings were chosen (see
            :class:`~fedward.common.choices.TunedOn`); the model card says so.
        tuning_trials: configurations compared on validation when ``tuned_on`` is
            ``validation`` (>= 2); 0 otherwise.
    """

    client_dp: ClientDp = ClientDp.NONE
    clipping_norm: float = 1.0
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float = 1e-5
    max_epsilon: float | None = None
    target_clipped_quantile: float = 0.5
    clip_norm_lr: float = 0.2
    dpsgd: bool = False
    dpsgd_clipping_norm: float = 1.0
    dpsgd_noise_multiplier: float | None = None
    dpsgd_target_epsilon: float | None = None
    dpsgd_delta: float = 1e-5
    tuned_on: TunedOn = TunedOn.FIXED
    tuning_trials: int = 0

    def __post_init__(self) -> None:
        check_range("privacy.clipping-norm", self.clipping_norm, low=0.0, high=1e6, low_open=True)
        check_range("privacy.dpsgd-clipping-norm", self.dpsgd_clipping_norm, low=0.0, high=1e6, low_open=True)
        for key, value in (("privacy.noise-multiplier", self.noise_multiplier),
                           ("privacy.dpsgd-noise-multiplier", self.dpsgd_noise_multiplier)):  # fmt: skip
            if value is not None:
                check_range(key, value, low=0.0, high=1e3)
        for key, value in (("privacy.target-epsilon", self.target_epsilon),
                           ("privacy.max-epsilon", self.max_epsilon),
                           ("privacy.dpsgd-target-epsilon", self.dpsgd_target_epsilon)):  # fmt: skip
            if value is not None:
                check_range(key, value, low=0.0, high=1e4, low_open=True)
        check_range("privacy.delta", self.delta, low=0.0, high=1.0, low_open=True, high_open=True)
        check_range("privacy.dpsgd-delta", self.dpsgd_delta, low=0.0, high=1.0, low_open=True, high_open=True)
        check_range("privacy.target-clipped-quantile", self.target_clipped_quantile, low=0.0, high=1.0)
        check_range("privacy.clip-norm-lr", self.clip_norm_lr, low=0.0, high=10.0, low_open=True)
        if self.client_dp is ClientDp.NONE:
            if self.noise_multiplier is not None or self.target_epsilon is not None or self.max_epsilon is not None:
                raise ConfigError(
                    "privacy.noise-multiplier, target-epsilon and max-epsilon need privacy.client-dp "
                    "(server-fixed, client-fixed, server-adaptive or client-adaptive)"
                )
        elif (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ConfigError(
                f"privacy.client-dp {self.client_dp.value}: set privacy.noise-multiplier or target-epsilon"
            )
        elif self.noise_multiplier == 0 and self.max_epsilon is not None:
            raise ConfigError("privacy.max-epsilon cannot be accounted with privacy.noise-multiplier = 0 (no noise)")
        if self.dpsgd:
            if (self.dpsgd_noise_multiplier is None) == (self.dpsgd_target_epsilon is None):
                raise ConfigError("privacy.dpsgd: set privacy.dpsgd-noise-multiplier or dpsgd-target-epsilon")
        elif self.dpsgd_noise_multiplier is not None or self.dpsgd_target_epsilon is not None:
            raise ConfigError("privacy.dpsgd-noise-multiplier and dpsgd-target-epsilon need privacy.dpsgd = true")
        self._check_tuning()

    def _check_tuning(self) -> None:
        if self.tuned_on is TunedOn.VALIDATION and not 2 <= self.tuning_trials <= 10_000:
            raise ConfigError(
                "privacy.tuning-trials: with privacy.tuned-on = validation give the number of "
                f"configurations compared (2-10000); got {self.tuning_trials}"
            )
        if self.tuned_on is TunedOn.FIXED and self.tuning_trials != 0:
            raise ConfigError("privacy.tuning-trials needs privacy.tuned-on = validation")
        if self.tuned_on is not TunedOn.FIXED and not self.enabled:
            raise ConfigError("privacy.tuned-on describes a private run; turn on privacy.dpsgd or privacy.client-dp")

    @property
    def enabled(self) -> bool:
        """Whether any differential privacy is on."""
        return self.client_dp is not ClientDp.NONE or self.dpsgd


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Reproducibility and where results go.

    Attributes:
        seed: seed of every random choice (partition, initial weights, batches,
            augmentation, hospital sampling), >= 0.
        name: run name used in the run directory's name; empty means the dataset name.
        output_dir: parent folder of run directories.
    """

    seed: int = 0
    name: str = ""
    output_dir: Path = Path("runs")

    def __post_init__(self) -> None:
        check_range("run.seed", self.seed, low=0, high=2**32 - 1)
        if any(c in self.name for c in "/\\\0"):
            raise ConfigError(f"run.name must not contain path separators; got {self.name!r}")
