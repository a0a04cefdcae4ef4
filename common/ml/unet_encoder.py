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

:class:`UNetMultitask` learns both at once: the whole U-Net segments the image's lesion
while a classifier on its bottleneck and its lesion map learns the class (``data.target =
"class+mask"``), so the encoder is shaped by the masks throughout training rather than only
at its start (multi-task learning of breast-ultrasound segmentation and classification:
e.g. Zhou et al., 2021; Shareef et al., 2022). It scores, predicts and exports as a
classifier.
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
        network = _lesion_unet(in_channels)
        self.model = network.model
        self._levels = _strip_decoder(self.model)
        self.head = _classifier(network.channels[-1], num_outputs, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape (B, K) for images of shape (B, C, H, W)."""
        for down in self._levels:
            x = down(x)
        return self.head(x)  # type: ignore[no-any-return]


class UNetMultitask(nn.Module):
    """fedward's 2D U-Net that segments the lesion and classifies from it: a classification learnt with lesion masks.

    The module keeps the whole U-Net under the attribute ``model`` (the parameter names of
    :func:`~fedward.common.ml.segnets.unet`, so a lesion U-Net's weights load into it) and
    a classifier ``head`` (:class:`LesionPooledClassifier`) that reads the bottleneck
    features together with the U-Net's own lesion map: the features pooled over the whole
    image, the same features pooled over the predicted lesion, and how large and how
    certain the predicted lesion is. In training mode the forward pass returns both
    outputs, for a loss on the class and one on the lesion mask
    (:class:`~fedward.common.ml.multitask.LesionGuidedLoss`); in eval mode it returns the
    class logits only, which is what scoring, ``fedward predict`` and the exports see.

    Args:
        in_channels: image channels C (1 or 3).
        num_outputs: class logits K.
        dropout: dropout probability before the linear layer.

    Shapes:
        input (B, C, H, W) float32, H and W multiples of 16 and >= 32; output in eval mode
        (B, K) float32 class logits; in training mode ``(class logits (B, K), lesion logits
        (B, 2, H, W))`` (background, lesion).
    """

    def __init__(self, in_channels: int, num_outputs: int, dropout: float = 0.2) -> None:
        super().__init__()
        network = _lesion_unet(in_channels)
        self.model = network.model
        self.head = LesionPooledClassifier(network.channels[-1], num_outputs, dropout)
        self._bottleneck: torch.Tensor | None = None
        _down_path(self.model)[-1].register_forward_hook(self._keep_bottleneck)

    def _keep_bottleneck(self, module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        self._bottleneck = output

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Class logits (B, K) in eval mode; ``(class logits, lesion logits (B, 2, H, W))`` in training mode."""
        lesion = self.model(x)
        features, self._bottleneck = self._bottleneck, None
        if features is None:  # pragma: no cover - the hook runs inside self.model
            raise RuntimeError("the U-Net's bottom level did not run")
        logits = self.head(features, lesion)
        return (logits, lesion) if self.training else logits


class LesionPooledClassifier(nn.Module):
    """Class logits from a U-Net's bottleneck features and its predicted lesion map.

    The features (B, F, h, w) are pooled twice: over the whole image (global average
    pooling) and over the predicted lesion (the lesion probability, average-pooled to
    h x w, as weights); the lesion map adds its maximum and mean probability (is there a
    lesion, how large is it). Dropout and a linear layer map the 2F + 2 numbers to K
    logits. The lesion map is detached: only the masks teach the U-Net where lesions are,
    the class loss teaches what they are. Pooling guided by the lesion follows attention-
    or mask-guided classification of breast ultrasound (e.g. Shareef et al., 2022).

    Args:
        features: channels F of the bottleneck.
        num_outputs: class logits K.
        dropout: dropout probability before the linear layer.

    Shapes:
        bottleneck (B, F, h, w) float, lesion logits (B, 2, H, W) float with H, W multiples
        of h, w; output (B, K) float.
    """

    def __init__(self, features: int, num_outputs: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(2 * features + 2, num_outputs)

    def forward(self, bottleneck: torch.Tensor, lesion_logits: torch.Tensor) -> torch.Tensor:
        """Class logits (B, K)."""
        lesion = torch.softmax(lesion_logits.detach().float(), dim=1)[:, 1:2]
        kernel = (lesion.shape[-2] // bottleneck.shape[-2], lesion.shape[-1] // bottleneck.shape[-1])
        weights = nn.functional.avg_pool2d(lesion, kernel_size=kernel)
        whole = bottleneck.mean(dim=(2, 3))
        inside = (bottleneck * weights).sum(dim=(2, 3)) / (weights.sum(dim=(2, 3)) + 1e-3)
        extent = torch.cat([lesion.amax(dim=(2, 3)), lesion.mean(dim=(2, 3))], dim=1)
        return self.linear(self.dropout(torch.cat([whole, inside, extent], dim=1)))  # type: ignore[no-any-return]


def _lesion_unet(in_channels: int) -> UNet:
    """fedward's 2D U-Net (:func:`~fedward.common.ml.segnets.unet`) with two outputs: background and lesion."""
    network = unet(in_channels, 2, spatial_dims=2)
    if not isinstance(network, UNet):  # pragma: no cover - segnets.unet builds MONAI's UNet
        raise TypeError("segnets.unet did not build a MONAI UNet")
    return network


def _classifier(features: int, num_outputs: int, dropout: float) -> nn.Module:
    """Global average pooling, dropout and a linear layer: (B, features, h, w) -> (B, K)."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(features, num_outputs))


def _down_path(top: nn.Module) -> list[nn.Module]:
    """The down blocks of MONAI's UNet, top to bottom, the bottom level's residual unit last.

    MONAI's UNet nests ``Sequential(down, SkipConnection(submodule), up)`` per level, the
    bottom level's submodule being a plain residual unit.
    """
    levels: list[nn.Module] = []
    level: nn.Module = top
    while isinstance(level, nn.Sequential):
        levels.append(level[0])
        skip = level[1]
        if not isinstance(skip, SkipConnection):  # pragma: no cover - MONAI's UNet layout
            raise TypeError(f"unexpected U-Net level {type(skip).__name__}")
        level = skip.submodule
    levels.append(level)
    return levels


def _strip_decoder(top: nn.Module) -> list[nn.Module]:
    """Replace each level's up block by Identity and return the down blocks, top to bottom (:func:`_down_path`)."""
    levels = _down_path(top)
    level: nn.Module = top
    while isinstance(level, nn.Sequential):
        level[2] = nn.Identity()
        level = level[1].get_submodule("submodule")
    return levels
