"""Training losses from MONAI, by name."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from eyegc.common.plugin import TaskKind
from eyegc.common.registry import look_up_option
from monai.losses import DiceCELoss, DiceFocalLoss
from torch import nn

__all__ = ["LOSSES", "build_loss"]

#: loss name -> description (shown by ``eyegc train --help``).
LOSSES = {
    "dice_bce": "Dice + binary cross-entropy (softmax tasks: Dice + cross-entropy)",
    "dice_focal": "Dice + focal loss (for small, rare structures)",
}


def build_loss(name: str, kind: TaskKind, class_weights: Sequence[float] | None = None) -> nn.Module:
    """A MONAI loss for logits: sigmoid for multi-label tasks, softmax with one-hot labels otherwise."""
    look_up_option(name, LOSSES, what="loss")
    multilabel = kind == TaskKind.MULTILABEL_SEGMENTATION
    act = {"sigmoid": True} if multilabel else {"softmax": True, "to_onehot_y": True}
    weight = torch.as_tensor(class_weights, dtype=torch.float32) if class_weights else None
    if name == "dice_focal":
        return DiceFocalLoss(**act, weight=weight)
    return DiceCELoss(**act, weight=weight)
