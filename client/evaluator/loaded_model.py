"""A model directory's trained network, loaded: logits to probabilities, images to predictions.

:func:`load_model` opens and verifies a model directory
(:func:`fedward.client.evaluator.model_dir.open_model_dir`), rebuilds the network its
config describes (:func:`fedward.common.ml.networks.network_for`), loads the weights
strictly and adds the output activation (:class:`ProbabilityModel`: softmax over classes,
sigmoid per label) of the logits divided by the operating point's temperature
(:attr:`~fedward.client.evaluator.model_dir.ModelDir.operating_point`; temperature
scaling, Guo et al., "On calibration of modern neural networks", ICML 2017), so every
probability fedward reports or exports is calibrated. :meth:`LoadedModel.probabilities`
scales uint8 images exactly as training does
(:class:`~fedward.client.evaluator.model_dir.Preprocessing`) before the forward pass.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedward.client.evaluator.model_dir import ModelDir, open_model_dir
from fedward.common.choices import DeviceChoice, Task, choose
from fedward.common.errors import ModelError
from fedward.common.ml.networks import network_for, read_state_dict

log = logging.getLogger(__name__)

PREDICT_BATCH = 256
"""Images per forward pass when computing probabilities."""


def trained_network(model_dir: ModelDir) -> nn.Module:
    """The trained network of a model directory, in eval mode on the CPU.

    Raises:
        ModelError: if the weights file cannot be read or does not fit the network the
            config describes.
    """
    schema = model_dir.schema
    network = network_for(model_dir.cfg, schema)
    state = read_state_dict(model_dir.weights)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(
            f"{model_dir.weights} does not fit {model_dir.model_name.value} with {schema.channels} channel(s) and "
            f"{schema.num_outputs} outputs{' (differential privacy: GroupNorm)' if model_dir.private else ''}: "
            f"{first}"
        ) from None
    return network.eval()


class ProbabilityModel(nn.Module):
    """A network with its output activation: scaled images in, (calibrated) probabilities out.

    Softmax over classes for binary and multi-class tasks (over the labels of each pixel or
    voxel for segmentation), sigmoid per label for multi-label tasks, of the logits divided
    by ``temperature``. This is what the exports contain: the temperature is a buffer, so
    traced and ONNX graphs hold it.

    Args:
        network: the trained network (logits).
        task: the task, which picks the activation.
        temperature: the logits are divided by it (> 0; 1: uncalibrated; segmentation: 1).

    Shapes:
        classification: input float32 (B, C, S, S) in [0, 1], output float32 (B, K);
        segmentation: input float32 (B, C, *S) normalised, output float32 (B, K, *S).

    Raises:
        ModelError: if ``temperature`` is not a positive finite number.
    """

    temperature: torch.Tensor

    def __init__(self, network: nn.Module, task: Task, temperature: float = 1.0) -> None:
        super().__init__()
        if not (np.isfinite(temperature) and temperature > 0):
            raise ModelError(f"the temperature must be a positive number; got {temperature!r}")
        self.network = network
        self.multilabel = task is Task.MULTILABEL
        self.register_buffer("temperature", torch.tensor(float(temperature), dtype=torch.float32))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Probabilities (B, K) or (B, K, *S) of model input (B, C, *S); softmax over dimension 1."""
        logits = self.network(images) / self.temperature
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)


class LoadedModel:
    """A model directory's network, ready to compute probabilities.

    Classifiers compute them at the temperature of the model's operating point
    (:attr:`~fedward.client.evaluator.model_dir.ModelDir.operating_point`); segmentation
    networks at temperature 1.

    Args:
        model_dir: the opened directory.
        device: where the network runs.

    Raises:
        ModelError: as :func:`trained_network`, or if the card's operating point is malformed.
    """

    def __init__(self, model_dir: ModelDir, device: torch.device | None = None) -> None:
        self.model_dir = model_dir
        self.device = device or torch.device("cpu")
        self.network = trained_network(model_dir)
        segmentation = model_dir.task is Task.SEGMENTATION
        self.temperature = 1.0 if segmentation else model_dir.operating_point.temperature
        self.head = ProbabilityModel(self.network, model_dir.task, self.temperature).eval().to(self.device)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, batch_size: int = PREDICT_BATCH) -> np.ndarray:
        """Class (or label) probabilities of preprocessed images.

        Args:
            images: uint8 (N, C, S, S) at the model's size and channels (see
                :class:`Preprocessing`).
            batch_size: images per forward pass.

        Returns:
            float32 (N, K): softmax rows summing to 1 (binary, multi-class) or per-label
            sigmoids (multi-label), of the logits divided by the model's temperature.

        Raises:
            ModelError: if the images do not have the model's shape.
        """
        prep = self.model_dir.preprocessing
        expected = (prep.channels, prep.image_size, prep.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ModelError(f"images must have shape (N, {', '.join(map(str, expected))}); got {tuple(images.shape)}")
        outputs = [np.empty((0, self.model_dir.schema.num_outputs), dtype=np.float32)]
        for start in range(0, images.shape[0], batch_size):
            batch = prep.scale(images[start : start + batch_size].to(self.device))
            outputs.append(self.head(batch).float().cpu().numpy())
        return np.concatenate(outputs)


def load_model(path: Path | ModelDir, round: int | None = None, device: str = "cpu") -> LoadedModel:
    """Open, verify and load a model directory.

    Args:
        path: the directory (or an already opened one).
        round: run directories: the round to load instead of the best model.
        device: ``cpu``, ``cuda`` or ``auto``.

    Raises:
        ModelError, IntegrityError: as :func:`open_model_dir` and :func:`build_network`.
        ConfigError: as :func:`open_model_dir`, or an unknown device, or CUDA without a GPU.
    """
    from fedward.common.ml.runtime import resolve_device

    model_dir = path if isinstance(path, ModelDir) else open_model_dir(Path(path), round)
    return LoadedModel(model_dir, resolve_device(choose(device, DeviceChoice, "--device")))
