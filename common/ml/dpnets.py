"""Classifiers built for DP-SGD: few parameters and bounded activations.

DP-SGD adds Gaussian noise of the same standard deviation to every coordinate of the
clipped gradient sum, so the noise's norm grows with the square root of the parameter
count while the clipped signal's does not: a small network keeps more of the signal at a
given epsilon. Bounded activations keep activations (and so per-sample gradient norms)
from exploding under that noise, so less of each gradient is lost to clipping (Papernot
et al., "Tempered Sigmoid Activations for Deep Learning with Differential Privacy",
AAAI 2021).
"""

from __future__ import annotations

import torch
from torch import nn

FEATURE_GRID = 4
"""Side (cells) of the feature map the classifier reads; the paper's 28 px network ends at 4 x 4."""


class TanhCNN(nn.Module):
    """The tempered-sigmoid (tanh) CNN of Papernot et al. (2021) for 28 px images.

    Conv 16 @ 8x8 stride 2, max-pool 2x2 stride 1, conv 32 @ 4x4 stride 2, max-pool 2x2
    stride 1, a 32-unit hidden layer and a linear classifier, tanh after every hidden
    layer; no normalisation layer (nothing mixes the images of a batch, as DP-SGD's
    per-sample gradients require). At 28 px the last feature map is 4 x 4, as in the
    paper; larger images are average-pooled to 4 x 4 first, so one network takes every
    size from 28 px up. About 26 k parameters for one channel and two classes.

    Args:
        in_channels: image channels C (1 or 3).
        num_outputs: logits K.
        width: channels of the first convolution; the second has 2x.
        hidden: units of the hidden fully connected layer.

    Shapes:
        input (B, C, H, W) float32 with H, W >= 28; output (B, K) float32 logits.
    """

    def __init__(self, in_channels: int, num_outputs: int, width: int = 16, hidden: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, kernel_size=8, stride=2, padding=3),
            nn.Tanh(),
            nn.MaxPool2d(2, stride=1),
            nn.Conv2d(width, 2 * width, kernel_size=4, stride=2),
            nn.Tanh(),
            nn.MaxPool2d(2, stride=1),
            nn.AdaptiveAvgPool2d(FEATURE_GRID),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(2 * width * FEATURE_GRID * FEATURE_GRID, hidden),
            nn.Tanh(),
            nn.Linear(hidden, num_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape (B, K) for images of shape (B, C, H, W)."""
        return self.classifier(self.features(x))  # type: ignore[no-any-return]
