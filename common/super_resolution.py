"""Super-resolution-aided segmentation: dual super-resolution learning (Wang et al., CVPR 2020, "DSRL").

The registered network (the *core*) runs on the input shrunk by ``factor``, so it costs what a
``factor`` times smaller working scale costs. Two sub-pixel branches bring its features back to the
input's resolution: the segmentation branch (SSSR) ends in the class logits, the super-resolution
branch (SISR) in a reconstruction of the full-resolution input. Training adds
``sr_weight * MSE(reconstruction, input) + fa_weight * FA`` to the task's loss, FA being the L1
distance between the two branches' feature affinity matrices (pixel-pair cosine similarities, on a
grid of every ``fa_stride``-th pixel as DSRL samples them, at most 1024 pixels); so the fine
structure the SR branch must recover shapes the segmentation features too. At inference
(``eval()``) only the segmentation branch runs: the SR branch and FA cost nothing.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MAX_AFFINITY_PIXELS",
    "AuxiliaryOutput",
    "SuperResolutionAided",
    "affinity_stride",
    "feature_affinity",
    "feature_affinity_loss",
]


class AuxiliaryOutput(NamedTuple):
    """What a network with a training-only branch returns in ``train()`` mode: logits and its own loss."""

    logits: torch.Tensor
    loss: torch.Tensor


def _sub_pixel_branch(features: int, factor: int) -> nn.Sequential:
    """``(B, F, h, w)`` -> ``(B, F, h * factor, w * factor)``: a 1x1 convolution to ``F * factor²`` channels
    and a pixel shuffle (ESPCN's sub-pixel convolution), computed at the low resolution.

    The core's features already carry the spatial context. The branches' cost is memory traffic: on
    this CPU a training step of DRIVE's default U-Net (16-32-64-128) on 16 patches of 128² took 0.12 s;
    super-resolution-aided on 256² patches (the core at 128²) 1.41 s, most of it in moving the two
    branches' 16 x 256² feature maps (3x3 branch convolutions and a full-resolution refinement: 1.46 s).
    """
    return nn.Sequential(
        nn.Conv2d(features, features * factor * factor, 1),
        nn.PixelShuffle(factor),
        nn.LeakyReLU(0.1, inplace=True),
    )


def feature_affinity(features: torch.Tensor, stride: int) -> torch.Tensor:
    """``(B, F, H, W)`` -> ``(B, N, N)``: cosine similarity of every pair of the ``N`` pixels on a ``stride`` grid."""
    sampled = features[:, :, ::stride, ::stride].flatten(2)
    unit = F.normalize(sampled.float(), dim=1, eps=1e-8)
    return unit.transpose(1, 2) @ unit


#: the most pixels an affinity matrix is built on: N² entries per image (1024: 4 MB in float32). A
#: 768² patch at stride 8 would give 9216 pixels, 340 MB per image and its gradient; a whole image, hundreds of GB.
MAX_AFFINITY_PIXELS = 1024


def affinity_stride(height: int, width: int, stride: int) -> int:
    """``stride``, widened until the grid holds at most :data:`MAX_AFFINITY_PIXELS` pixels."""
    while -(-height // stride) * -(-width // stride) > MAX_AFFINITY_PIXELS:
        stride += 1
    return stride


def feature_affinity_loss(segmentation: torch.Tensor, reconstruction: torch.Tensor, stride: int) -> torch.Tensor:
    """DSRL's FA loss: the mean absolute difference of the two feature maps' affinity matrices, on a
    grid of every ``stride``-th pixel (wider where the map is large: :func:`affinity_stride`)."""
    stride = affinity_stride(*segmentation.shape[-2:], stride)
    return (feature_affinity(segmentation, stride) - feature_affinity(reconstruction, stride)).abs().mean()


class SuperResolutionAided(nn.Module):
    """A segmentation network run at ``1 / factor`` of its input's resolution, with DSRL's two branches.

    Args:
        core: a network mapping ``in_channels`` to ``features`` channels at its input's size.
        in_channels: the input's channels (the SR branch reconstructs them).
        out_channels: the logits' channels.
        factor: how much smaller the core's input is (and how much the branches upsample).
        features: the core's output channels, the branches' width.
        sr_weight: weight of the reconstruction's mean squared error.
        fa_weight: weight of the feature affinity loss.
        fa_stride: the affinity's pixel grid at the input's resolution.
    """

    def __init__(
        self,
        core: nn.Module,
        in_channels: int,
        out_channels: int,
        factor: int,
        features: int,
        sr_weight: float,
        fa_weight: float,
        fa_stride: int,
    ) -> None:
        super().__init__()
        self.core, self.factor = core, int(factor)
        self.sr_weight, self.fa_weight, self.fa_stride = float(sr_weight), float(fa_weight), int(fa_stride)
        self.segmentation_branch = _sub_pixel_branch(features, self.factor)
        self.segmentation_head = nn.Conv2d(features, out_channels, 1)
        self.reconstruction_branch = _sub_pixel_branch(features, self.factor)
        self.reconstruction_head = nn.Conv2d(features, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | AuxiliaryOutput:
        size = x.shape[-2:]
        if size[0] % self.factor or size[1] % self.factor:
            raise ValueError(f"input {tuple(size)} is not divisible by the super-resolution factor {self.factor}")
        small = F.interpolate(x, scale_factor=1 / self.factor, mode="bilinear", antialias=True, align_corners=False)
        shared = self.core(small)
        segmentation = self.segmentation_branch(shared)
        logits = self.segmentation_head(segmentation)
        if not self.training:
            return logits
        reconstruction_features = self.reconstruction_branch(shared)
        reconstruction = self.reconstruction_head(reconstruction_features)
        loss = self.sr_weight * F.mse_loss(reconstruction.float(), x.float())
        if self.fa_weight:
            fa = feature_affinity_loss(segmentation, reconstruction_features, self.fa_stride)
            loss = loss + self.fa_weight * fa
        return AuxiliaryOutput(logits, loss)
