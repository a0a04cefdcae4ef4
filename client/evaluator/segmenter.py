"""A segmentation network applied to one preprocessed input: softmax probabilities, sliding windows for volumes.

2D images are one forward pass on the model's grid. Volumes go through MONAI's
:func:`~monai.inferers.sliding_window_inference` with windows of the model's grid
(``data.volume-size``; Gaussian blending, the overlap training's scoring uses,
:data:`~fedward.common.ml.segment.SLIDING_WINDOW_OVERLAP`), or one window of the whole
padded volume when the run did not fix its grid. The exported MONAI bundle runs the same
inference with :class:`~monai.inferers.SlidingWindowInferer`.
"""

from __future__ import annotations

import logging

import torch
from monai.inferers import sliding_window_inference
from torch import nn

from fedward.client.evaluator.loaded_model import LoadedModel
from fedward.client.evaluator.seg_input import model_grid
from fedward.common.ml.segment import SLIDING_WINDOW_OVERLAP

log = logging.getLogger(__name__)

WINDOW_BATCH = 4
"""Windows per forward pass in sliding-window inference."""


class Segmenter:
    """Class probabilities of a segmentation network.

    Args:
        network: the network (logits (B, K, *S)), in eval mode.
        spatial_dims: 2 or 3.
        roi: volumes: the window (D, H, W) in voxels; ``None``: the whole input.
        device: where the network runs.
    """

    def __init__(
        self,
        network: nn.Module,
        spatial_dims: int,
        roi: tuple[int, ...] | None = None,
        device: torch.device | None = None,
    ) -> None:
        self.device = device or torch.device("cpu")
        self.network = network.to(self.device).eval()
        self.spatial_dims = spatial_dims
        self.roi = roi

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities, float32 (B, K, *S) on the CPU, of float32 (B, C, *S) model input.

        Volumes must be at least the window along every axis (the preprocessing pads them).
        """
        x = images.to(self.device).float()
        if self.spatial_dims == 2:
            logits = self.network(x)
        else:
            roi = self.roi or tuple(x.shape[2:])
            logits = sliding_window_inference(
                x, roi, WINDOW_BATCH, self.network, overlap=SLIDING_WINDOW_OVERLAP, mode="gaussian"
            )
        return torch.softmax(torch.as_tensor(logits).float(), dim=1).cpu()


def segmenter_for(loaded: LoadedModel) -> Segmenter:
    """The segmenter of a loaded segmentation model (its grid as the window)."""
    model_dir = loaded.model_dir
    dims = model_dir.schema.spatial_dims
    return Segmenter(loaded.network, dims, model_grid(model_dir) if dims == 3 else None, loaded.device)
