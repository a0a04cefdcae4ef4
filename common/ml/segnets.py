"""Segmentation networks from MONAI, sized for CPU-trainable 2D images and small volumes.

==============  ================================================  ============  ===============
name            network                                           grid          parameters*
==============  ================================================  ============  ===============
unet            ``monai.networks.nets.UNet`` with residual units  multiple of   2D ~1.6 M,
                (Ronneberger et al., 2015; Kerfoot et al., 2018)  16            3D ~1.2 M
vnet            ``monai.networks.nets.VNet`` (Milletari et al.,   multiple of   2D ~9.4 M,
                2016)                                             16            3D ~45.6 M
segresnet       ``monai.networks.nets.SegResNet`` (Myronenko,     multiple of   2D ~1.6 M,
                2018)                                             16            3D ~4.7 M
attention-unet  ``monai.networks.nets.AttentionUnet`` (Oktay et   multiple of   2D ~2.0 M,
                al., 2018)                                        16            3D ~1.5 M
==============  ================================================  ============  ===============

\\* one input channel, two or three labels.

Every network maps a float32 batch of shape (B, C, *S) to float32 logits of shape
(B, K, *S): K labels of the label map, index 0 the background (softmax over K).
"""

from __future__ import annotations

from torch import nn

UNET_CHANNELS_2D: tuple[int, ...] = (16, 32, 64, 128, 256)
"""Feature channels of the 2D U-Net's levels (four stride-2 downsamplings)."""

UNET_CHANNELS_3D: tuple[int, ...] = (16, 32, 64, 128)
"""Feature channels of the 3D U-Net's levels (three stride-2 downsamplings), small enough for a CPU."""


def _levels(spatial_dims: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(channels, strides) of a U-Net-style encoder for 2D or 3D."""
    channels = UNET_CHANNELS_2D if spatial_dims == 2 else UNET_CHANNELS_3D
    return channels, (2,) * (len(channels) - 1)


def unet(in_channels: int, num_outputs: int, spatial_dims: int) -> nn.Module:
    """MONAI U-Net with two residual units per level and instance normalisation.

    Shapes:
        input (B, C, *S) float32, each side of S a multiple of 16; output (B, K, *S) logits.
    """
    from monai.networks.nets import UNet  # loaded when a network is built, not when a run is planned

    channels, strides = _levels(spatial_dims)
    return UNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=num_outputs,
        channels=channels,
        strides=strides,
        num_res_units=2,
        norm="INSTANCE",
    )


def vnet(in_channels: int, num_outputs: int, spatial_dims: int) -> nn.Module:
    """MONAI V-Net (Milletari et al., 2016); each side of the grid a multiple of 16."""
    from monai.networks.nets import VNet  # loaded when a network is built, not when a run is planned

    return VNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_outputs, dropout_prob_down=0.0)


def segresnet(in_channels: int, num_outputs: int, spatial_dims: int) -> nn.Module:
    """MONAI SegResNet (Myronenko, 2018) with 16 initial filters; each side a multiple of 16 (fedward's grid rule)."""
    from monai.networks.nets import SegResNet  # loaded when a network is built, not when a run is planned

    return SegResNet(spatial_dims=spatial_dims, init_filters=16, in_channels=in_channels, out_channels=num_outputs)


def attention_unet(in_channels: int, num_outputs: int, spatial_dims: int) -> nn.Module:
    """MONAI Attention U-Net (Oktay et al., 2018); each side a multiple of 16 in 2D (8 in 3D)."""
    from monai.networks.nets import AttentionUnet  # loaded when a network is built, not when a run is planned

    channels, strides = _levels(spatial_dims)
    return AttentionUnet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=num_outputs,
        channels=channels,
        strides=strides,
    )
