"""From a stored image to the network's input and back: intensity scaling, working resolution."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from eyegc.common.registry import look_up_option

__all__ = ["NORMALIZATIONS", "prepare_image", "prepare_target", "resize_probabilities", "working_shape"]

NORMALIZATIONS = ("zscore", "unit")


def working_shape(shape: tuple[int, int], scale: float) -> tuple[int, int]:
    """The ``(H, W)`` an image of ``shape`` has at the working resolution."""
    return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))


def prepare_image(image: np.ndarray, preprocessing: Mapping[str, Any]) -> torch.Tensor:
    """``(C, H, W)`` stored image -> float32 network input at the working resolution.

    Integer images are scaled by their dtype's maximum; ``input_size`` ``[H, W]`` (classification)
    resizes to that size, else ``working_scale`` scales both sides; ``normalize`` ``"zscore"`` then
    standardises each channel of each image, ``"unit"`` keeps the [0, 1] range.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(image)).float()
    if np.issubdtype(image.dtype, np.integer):
        tensor /= float(np.iinfo(image.dtype).max)
    scale = float(preprocessing.get("working_scale", 1.0))
    input_size = preprocessing.get("input_size")
    if input_size:  # classification: every image to one fixed size, whatever it was stored at
        size = (int(input_size[0]), int(input_size[1]))
        if size != tuple(image.shape[-2:]):
            shrink = size[0] * size[1] < image.shape[-2] * image.shape[-1]
            tensor = F.interpolate(tensor[None], size=size, mode="bilinear", antialias=shrink, align_corners=False)[0]
    elif scale != 1.0:
        size = working_shape(image.shape[-2:], scale)
        tensor = F.interpolate(tensor[None], size=size, mode="bilinear", antialias=scale < 1, align_corners=False)[0]
    normalize = look_up_option(preprocessing.get("normalize", "zscore"), NORMALIZATIONS, what="normalization")
    if normalize == "zscore":
        mean = tensor.mean(dim=(-2, -1), keepdim=True)
        std = tensor.std(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
        tensor = (tensor - mean) / std
    return tensor.contiguous()


def prepare_target(target: np.ndarray, preprocessing: Mapping[str, Any], categorical: bool = False) -> torch.Tensor:
    """Ground truth -> float32 training targets at the working resolution.

    Multi-label ``(C, H, W)`` 0/1 masks keep the covered fraction of each pixel when downscaled
    (area interpolation), so lesions a few pixels wide still pull the loss. A ``categorical``
    ``(1, H, W)`` class-index map is resampled nearest-neighbour: averaging indices would invent
    classes (between 0 and 3 lies 2).
    """
    tensor = torch.from_numpy(np.ascontiguousarray(target)).float()
    scale = float(preprocessing.get("working_scale", 1.0))
    if scale != 1.0:
        size = working_shape(target.shape[-2:], scale)
        mode = "area" if scale < 1 and not categorical else "nearest"
        tensor = F.interpolate(tensor[None], size=size, mode=mode)[0]
    return tensor.contiguous()


def resize_probabilities(probabilities: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """``(C, h, w)`` probabilities -> ``(C, H, W)`` at the original size (bilinear)."""
    if tuple(probabilities.shape[-2:]) == tuple(shape):
        return probabilities
    return F.interpolate(probabilities[None], size=tuple(shape), mode="bilinear", align_corners=False)[0]
