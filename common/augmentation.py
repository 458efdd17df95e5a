"""Training augmentation, by name: where the random flips, rotations, elastic and intensity changes run.

- ``batched`` (the default): the CPU only cuts patches (MONAI, centred on each class equally
  often); flips, 90° and small rotations, elastic deformation and intensity changes are applied
  to the whole batch at once as tensor operations on the training device (kornia). Each sample
  of a batch gets its own random parameters; masks are resampled nearest, soft multi-label
  targets bilinearly, like the image.
- ``per-sample``: every transform runs per patch on the CPU (MONAI dictionary transforms), as
  eyegc did before; kept as the baseline of ``benchmarks/train_throughput.py`` and for runs
  trained with it.

Why kornia for the batch: its augmentations draw per-sample parameters for a batch tensor on any
device and transform image and masks with the same parameters; MONAI's array transforms take one
channel-first sample at a time (a batch would get one draw, or a Python loop). kornia's intensity
augmentations expect images in [0, 1] and clamp to it; eyegc's inputs are z-scored, so the three
intensity changes (scale, gamma-like contrast, Gaussian noise) are written here, batched, with
MONAI's ranges.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from eyegc.common.options import AUGMENTATIONS
from eyegc.common.registry import look_up_option
from torch import nn

__all__ = ["AUGMENTATIONS", "DEFAULT_AUGMENTATION", "AugmentationSpec", "BatchAugmentation", "check_augmentation"]

DEFAULT_AUGMENTATION = AUGMENTATIONS[0]
#: small rotations: up to 15° (0.26 rad), as the per-sample pipeline.
ROTATION_DEGREES = 15.0
ROTATION_PROBABILITY = 0.3


def check_augmentation(name: str) -> str:
    """``name`` if it is an augmentation pipeline, else an EyegcError listing them."""
    return look_up_option(name, AUGMENTATIONS, what="augmentation")


@dataclass(frozen=True)
class AugmentationSpec:
    """What a fold's augmentation may do: the task's symmetries and its elastic probability."""

    ops: frozenset[str]
    #: patches are square: 90° rotations keep their shape.
    square: bool
    elastic_probability: float = 0.15
    #: classification moves only the image (its label is a grade).
    classification: bool = False


def _per_sample_where(chosen: torch.Tensor, changed: torch.Tensor, unchanged: torch.Tensor) -> torch.Tensor:
    return torch.where(chosen.view(-1, *([1] * (changed.dim() - 1))), changed, unchanged)


def _uniform(n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
    # Drawn on the CPU from torch's global generator: the same numbers on every device (exact resume).
    return (torch.rand(n) * (high - low) + low).to(device)


def _chosen(n: int, probability: float, device: torch.device) -> torch.Tensor:
    return (torch.rand(n) < probability).to(device)


def intensity_changes(images: torch.Tensor) -> torch.Tensor:
    """Per-sample intensity scale (×(1 ± 0.15), p 0.5), gamma contrast (0.8–1.25 on the sample's own
    range, p 0.3) and Gaussian noise (σ up to 0.05, p 0.2): MONAI's RandScaleIntensity,
    RandAdjustContrast and RandGaussianNoise with eyegc's settings, on a whole ``(B, C, H, W)`` batch."""
    n, device = images.shape[0], images.device
    scaled = images * (1 + _uniform(n, -0.15, 0.15, device)).view(-1, 1, 1, 1)
    images = _per_sample_where(_chosen(n, 0.5, device), scaled, images)
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    span = (images.amax(dim=(1, 2, 3), keepdim=True) - low).clamp_min(1e-7)
    gamma = _uniform(n, 0.8, 1.25, device).view(-1, 1, 1, 1)
    contrasted = ((images - low) / span).clamp(0, 1).pow(gamma) * span + low
    images = _per_sample_where(_chosen(n, 0.3, device), contrasted, images)
    sigma = _uniform(n, 0.0, 0.05, device).view(-1, 1, 1, 1)
    noise = torch.randn(images.shape).to(device) * sigma
    return _per_sample_where(_chosen(n, 0.2, device), images + noise, images)


def elastic_deformation(
    tensors: list[torch.Tensor], modes: list[str], spacing: int = 32, magnitude: tuple[float, float] = (1.0, 2.0)
) -> list[torch.Tensor]:
    """One smooth random displacement per sample, applied alike to each ``(B, C, H, W)`` tensor
    (resampled with its mode): Gaussian offsets of ``magnitude`` pixels on a control grid of
    ``spacing`` pixels, interpolated bicubically, as MONAI's Rand2DElastic in the per-sample pipeline.

    kornia's RandomElasticTransform blurs a full-size noise field with a 63x63 kernel: about 45 ms
    per 256-px sample on this project's 2-core CPU; this takes about 1 ms (benchmarks/README.md).
    """
    n, _, height, width = tensors[0].shape
    device = tensors[0].device
    grid_size = (height // spacing + 2, width // spacing + 2)
    scale = _uniform(n, *magnitude, device).view(n, 1, 1, 1)
    offsets = torch.randn(n, 2, *grid_size).to(device) * scale  # pixels: x then y
    field = F.interpolate(offsets, size=(height, width), mode="bicubic", align_corners=True)
    identity = torch.eye(2, 3, device=device).expand(n, 2, 3)
    grid = F.affine_grid(identity, [n, 1, height, width], align_corners=False)
    grid = grid + torch.stack([field[:, 0] * 2 / width, field[:, 1] * 2 / height], dim=-1)
    return [
        F.grid_sample(t, grid.to(t.dtype), mode=mode, padding_mode="zeros", align_corners=False)
        for t, mode in zip(tensors, modes, strict=True)
    ]


class BatchAugmentation(nn.Module):
    """Geometric (kornia) then intensity augmentation of a batch, on the batch's device.

    Call with ``images (B, C, H, W)``, ``labels`` (soft multi-label targets ``(B, K, H, W)``,
    class indices ``(B, 1, H, W)`` when ``categorical``, or grades for classification) and an
    optional field of view ``roi (B, 1, H, W)``; returns the three, transformed alike.
    """

    def __init__(self, spec: AugmentationSpec, categorical: bool = False) -> None:
        super().__init__()
        steps: list[nn.Module] = []
        if "flip_lr" in spec.ops:
            steps.append(K.RandomHorizontalFlip(p=0.5))
        if "flip_ud" in spec.ops:
            steps.append(K.RandomVerticalFlip(p=0.5))
        if "rot90" in spec.ops and spec.square:
            steps.append(K.RandomRotation90(times=(1, 3), p=0.5))
        steps.append(K.RandomRotation(degrees=ROTATION_DEGREES, p=ROTATION_PROBABILITY))
        self.geometric = K.AugmentationSequential(*steps, data_keys=None)
        self.elastic_probability = spec.elastic_probability
        self.classification = spec.classification
        self.categorical = categorical

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor, roi: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        with warnings.catch_warnings():
            # kornia leaves grid_sample's align_corners to torch's default, which torch then announces.
            warnings.filterwarnings("ignore", message="Default grid_sample and affine_grid behavior")
            return self._augment(images, labels, roi)

    def _augment(
        self, images: torch.Tensor, labels: torch.Tensor, roi: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if self.classification:
            return intensity_changes(self._warp(images, None)[0]), labels, roi
        # Bilinear for the image and soft targets, nearest for class indices and the field of view.
        smooth = images if self.categorical else torch.cat([images, labels.float()], dim=1)
        masks = [m.float() for m in ((labels,) if self.categorical else ()) + ((roi,) if roi is not None else ())]
        smooth, mask = self._warp(smooth, torch.cat(masks, dim=1) if masks else None)
        channels = images.shape[1]
        images = intensity_changes(smooth[:, :channels])
        labels = mask[:, :1].round().to(labels.dtype) if self.categorical else smooth[:, channels:].to(labels.dtype)
        if roi is not None:
            roi = mask[:, -1:].round().to(roi.dtype)
        return images, labels, roi

    def _warp(self, smooth: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The geometric steps on the batch, then the elastic deformation on the samples that draw it."""
        keys = ["input"] if mask is None else ["input", "mask"]
        tensors = [smooth] if mask is None else [smooth, mask]
        warped = self.geometric(*tensors, data_keys=keys)
        tensors = [warped] if mask is None else list(warped)
        chosen = (torch.rand(len(smooth)) < self.elastic_probability).nonzero().flatten()
        if len(chosen):
            index = chosen.to(smooth.device)
            modes = ["bilinear", "nearest"][: len(tensors)]
            deformed = elastic_deformation([t[index] for t in tensors], modes)
            tensors = [t.index_copy(0, index, d) for t, d in zip(tensors, deformed, strict=True)]
        return tensors[0], (tensors[1] if mask is not None else None)
