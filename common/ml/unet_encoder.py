"""A classifier on the encoder of fedward's 2D U-Net, so a classification can start from a segmentation.

Hospitals cannot download ImageNet weights, but a federation that has trained a lesion
U-Net (``model.name = "unet"``) already owns an encoder that knows where lesions are and
what their borders look like. :class:`UNetEncoderClassifier` keeps exactly the down path
of :func:`fedward.common.ml.segnets.unet` (the same MONAI residual units, under the same
parameter names), pools the deepest feature map and classifies it. Because the names
match, ``model.init-weights`` pointing at a segmentation run's ``models/best.safetensors``
copies every encoder tensor and skips the decoder and the segmentation head
(:func:`fedward.common.ml.networks.load_initial_weights`): transfer from the masks to
the labels (multi-task and transfer from segmentation to classification of breast
ultrasound: e.g. Shareef et al., 2022).
"""

from __future__ import annotations

import torch
from monai.networks.layers import SkipConnection
from monai.networks.nets import UNet
from torch import nn

from fedward.common.ml.segnets import unet


class UNetEncoderClassifier(nn.Module):
    """The encoder of fedward's 2D U-Net, global average pooling, dropout and a linear classifier.

    The module keeps the U-Net's attribute ``model`` with only its down path (each level's
    residual unit and the bottom unit); the decoder's modules are replaced by
    :class:`torch.nn.Identity`, so the state dict names of the encoder are those of
    :func:`~fedward.common.ml.segnets.unet`'s and nothing of the decoder is trained or sent.

    Args:
        in_channels: image channels C (1 or 3).
        num_outputs: logits K.
        dropout: dropout probability before the linear layer.

    Shapes:
        input (B, C, H, W) float32, H and W >= 32 (instance norm needs 2 x 2 at the deepest
        level); output (B, K) float32 logits.
    """

    def __init__(self, in_channels: int, num_outputs: int, dropout: float = 0.2) -> None:
        super().__init__()
        network = unet(in_channels, 2, spatial_dims=2)
        if not isinstance(network, UNet):  # pragma: no cover - segnets.unet builds MONAI's UNet
            raise TypeError("segnets.unet did not build a MONAI UNet")
        self.model = network.model
        self._levels = _strip_decoder(self.model)
        features = network.channels[-1]
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(features, num_outputs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape (B, K) for images of shape (B, C, H, W)."""
        for down in self._levels:
            x = down(x)
        return self.head(x)  # type: ignore[no-any-return]


def _strip_decoder(top: nn.Module) -> list[nn.Module]:
    """Replace each level's up block by Identity and return the down blocks, top to bottom.

    MONAI's UNet nests ``Sequential(down, SkipConnection(submodule), up)`` per level, the
    bottom level's submodule being a plain residual unit.
    """
    levels: list[nn.Module] = []
    level: nn.Module = top
    while isinstance(level, nn.Sequential):
        levels.append(level[0])
        level[2] = nn.Identity()
        skip = level[1]
        if not isinstance(skip, SkipConnection):  # pragma: no cover - MONAI's UNet layout
            raise TypeError(f"unexpected U-Net level {type(skip).__name__}")
        level = skip.submodule
    levels.append(level)
    return levels
