"""Training losses from MONAI, by name."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from eyegc.common.errors import EyegcError
from eyegc.common.plugin import TaskKind
from eyegc.common.registry import look_up_option
from monai.losses import DiceCELoss, DiceFocalLoss, DiceLoss
from torch import nn

__all__ = ["CLASSIFICATION_LOSSES", "LOSSES", "DiceBCELoss", "MultiHeadCrossEntropy", "build_loss"]

#: loss name -> description (segmentation tasks).
LOSSES = {
    "dice_bce": "Dice + binary cross-entropy (softmax tasks: Dice + cross-entropy)",
    "dice_focal": "Dice + focal loss (for small, rare structures)",
    "bce": "binary cross-entropy alone (multi-label tasks): calibrated scores for ranking metrics (AUC, AUPR)",
}
#: loss name -> description (classification tasks).
CLASSIFICATION_LOSSES = {
    "ce": "cross-entropy per head, averaged over heads",
}


class DiceBCELoss(nn.Module):
    """MONAI's sigmoid Dice (over the batch) plus per-channel binary cross-entropy on logits.

    MONAI's ``DiceCELoss(sigmoid=True)`` applies a softmax cross-entropy across channels whenever
    there is more than one, which is wrong for overlapping classes; the multi-label tasks use this.
    """

    def __init__(self, weight: torch.Tensor | None = None, dice: bool = True) -> None:
        super().__init__()
        self.dice = DiceLoss(sigmoid=True, batch=True, weight=weight) if dice else None
        self.register_buffer("channel_weight", None if weight is None else weight.view(1, -1, 1, 1))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        bce = F.binary_cross_entropy_with_logits(logits, target, weight=self.channel_weight)
        return bce if self.dice is None else self.dice(logits, target) + bce


class MultiHeadCrossEntropy(nn.Module):
    """Cross-entropy of each classification head on its slice of the logits, averaged over heads.

    Args:
        head_sizes: classes per head; the logits are ``(B, sum(head_sizes))`` in head order.
        head_weights: optional weight per head (e.g. DR grade over DME risk).
    """

    def __init__(self, head_sizes: Sequence[int], head_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.head_sizes = [int(n) for n in head_sizes]
        self.head_weights = [float(w) for w in head_weights] if head_weights else [1.0] * len(self.head_sizes)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.long().view(len(logits), -1)
        total = logits.new_zeros(())
        for h, chunk in enumerate(logits.split(self.head_sizes, dim=1)):
            total = total + self.head_weights[h] * F.cross_entropy(chunk.float(), target[:, h])
        return total / sum(self.head_weights)


def build_loss(
    name: str,
    kind: TaskKind,
    class_weights: Sequence[float] | None = None,
    head_sizes: Sequence[int] | None = None,
) -> nn.Module:
    """A loss on logits: sigmoid per channel for multi-label tasks, softmax with one-hot labels otherwise.

    Dice is computed over the whole batch per class (as nnU-Net does), so patches without a
    lesion do not each pull towards an empty prediction. Classification tasks take
    ``head_sizes`` and use ``class_weights`` as one weight per head.
    """
    if kind == TaskKind.CLASSIFICATION:
        look_up_option(name, CLASSIFICATION_LOSSES, what="loss for a classification task")
        if not head_sizes:
            raise ValueError("a classification loss needs head_sizes")
        return MultiHeadCrossEntropy(head_sizes, class_weights)
    look_up_option(name, LOSSES, what="loss")
    weight = torch.as_tensor(class_weights, dtype=torch.float32) if class_weights else None
    multilabel = kind == TaskKind.MULTILABEL_SEGMENTATION
    if name == "bce":
        if not multilabel:
            raise EyegcError("--loss bce is for multi-label (sigmoid) tasks; use dice_bce or dice_focal here")
        return DiceBCELoss(weight, dice=False)
    if name == "dice_focal":
        act = {"sigmoid": True} if multilabel else {"softmax": True, "to_onehot_y": True}
        return DiceFocalLoss(**act, weight=weight, batch=True)
    if multilabel:
        return DiceBCELoss(weight)
    return DiceCELoss(softmax=True, to_onehot_y=True, weight=weight, batch=True)
