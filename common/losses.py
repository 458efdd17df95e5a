"""Training losses by name: MONAI's Dice family, class-balanced cross-entropy, and region mutual information."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from eyegc.common.errors import EyegcError
from eyegc.common.plugin import TaskKind
from eyegc.common.registry import look_up_option
from monai.losses import DiceCELoss, DiceFocalLoss, DiceLoss
from torch import nn

__all__ = [
    "CLASSIFICATION_LOSSES",
    "FREQUENCY_FLOOR",
    "LOSSES",
    "ClassBalancedCrossEntropy",
    "DiceBCELoss",
    "MultiHeadCrossEntropy",
    "RegionMutualInformation",
    "WithRegionMutualInformation",
    "balanced_weights",
    "build_loss",
    "class_frequencies",
]

#: loss name -> description (segmentation tasks).
LOSSES = {
    "dice_bce": "Dice + binary cross-entropy (softmax tasks: Dice + cross-entropy)",
    "dice_focal": "Dice + focal loss (for small, rare structures)",
    "bce": "binary cross-entropy alone (multi-label tasks): calibrated scores for ranking metrics (AUC, AUPR)",
    "cbce": "class-balanced cross-entropy: each class weighted by its training-set pixel frequency (rare lesions)",
}
#: losses whose weights come from the training labels (:func:`class_frequencies`).
FREQUENCY_LOSSES = frozenset({"cbce"})
#: the smallest pixel frequency a class weight is computed from: a class (almost) absent from the
#: training labels gets a large but finite weight.
FREQUENCY_FLOOR = 1e-6
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


def class_frequencies(
    labels: Sequence[torch.Tensor], kind: TaskKind, classes: int, rois: Sequence[torch.Tensor | None] | None = None
) -> list[float]:
    """Each class's share of the training pixels (inside each field of view where one is given).

    Multi-label labels are ``(C, H, W)`` coverage in [0, 1] (a downscaled label keeps fractions);
    class-index labels are ``(1, H, W)``.
    """
    counts = torch.zeros(classes, dtype=torch.float64)
    total = 0.0
    for i, label in enumerate(labels):
        roi = rois[i] if rois is not None else None
        inside = torch.ones(label.shape[-2:], dtype=torch.float64) if roi is None else (roi[0] > 0).double()
        if kind == TaskKind.MULTILABEL_SEGMENTATION:
            counts += (label.double() * inside).sum(dim=(-2, -1))
        else:
            indices = label[0].long()
            counts += torch.bincount(indices[inside > 0].ravel(), minlength=classes)[:classes].double()
        total += float(inside.sum())
    return (counts / max(total, 1.0)).tolist()


def balanced_weights(frequencies: Sequence[float], kind: TaskKind) -> tuple[torch.Tensor, torch.Tensor | None]:
    """CBCE's weights from pixel frequencies ``f`` (floored at :data:`FREQUENCY_FLOOR`).

    Multi-label (per class, sigmoid): positives ``1 / (2 f)``, negatives ``1 / (2 (1 - f))``. The
    ratio of the two is HED's class-balancing ratio ``(1 - f) / f`` (Xie and Tu, 2015), and the
    expected weight of a pixel is 1, so the loss keeps plain BCE's scale.
    Class indices (softmax): class ``c`` weighs ``1 / (C f_c)``; again an expected weight of 1.

    Returns:
        The positive (or per-class) weights and, for multi-label, the negative weights.
    """
    f = torch.as_tensor(frequencies, dtype=torch.float32).clamp(FREQUENCY_FLOOR, 1 - FREQUENCY_FLOOR)
    if kind == TaskKind.MULTILABEL_SEGMENTATION:
        return 0.5 / f, 0.5 / (1 - f)
    return 1.0 / (len(f) * f), None


class ClassBalancedCrossEntropy(nn.Module):
    """Cross-entropy with each pixel weighted by its class's rarity (:func:`balanced_weights`), averaged over pixels.

    Multi-label: ``mean(-(w+_c y log p + w-_c (1 - y) log(1 - p)))`` over pixels and classes, ``p`` the
    sigmoid. Class indices: ``mean(-w_y log softmax_y)`` over pixels (a plain mean, not divided by the
    weights' sum as torch's weighted mean is, so the formula above is the whole definition).
    """

    def __init__(self, frequencies: Sequence[float], kind: TaskKind) -> None:
        super().__init__()
        self.multilabel = kind == TaskKind.MULTILABEL_SEGMENTATION
        positive, negative = balanced_weights(frequencies, kind)
        self.register_buffer("positive", positive.view(1, -1, 1, 1))
        self.register_buffer("negative", None if negative is None else negative.view(1, -1, 1, 1))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.multilabel:
            # The formula itself, not BCE times a per-pixel weight: a downscaled label holds coverage fractions,
            # and for those the two differ (the weighted BCE would pull a rare class's p towards y, not above it).
            target = target.float()
            positive = self.positive * target * F.logsigmoid(logits)
            negative = self.negative * (1 - target) * F.logsigmoid(-logits)
            return -(positive + negative).mean()
        indices = target[:, 0].long()
        per_pixel = F.cross_entropy(logits, indices, reduction="none")
        return (self.positive.view(-1)[indices] * per_pixel).mean()


#: RMI's constants, as in its authors' code: the 3x3 neighbourhood (d = 9), the ridge added before
#: inverting or factorising a covariance, the floor added to probabilities, and the pooling that
#: shrinks the maps before the 9-vectors are formed (kernel 3, stride 3, average).
RMI_RADIUS = 3
RMI_RIDGE = 5e-4
RMI_PROBABILITY_FLOOR = 1e-6
RMI_POOL = 3


def _region_vectors(maps: torch.Tensor, radius: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, C, radius², N)``: each pixel's ``radius x radius`` neighbourhood as one vector.

    The vectors' k-th entries are the map shifted by ``(k // radius, k % radius)``, over the
    ``N = (H - radius + 1)(W - radius + 1)`` positions where the whole neighbourhood lies inside.
    """
    h, w = maps.shape[-2] - radius + 1, maps.shape[-1] - radius + 1
    shifted = [maps[:, :, y : y + h, x : x + w] for y in range(radius) for x in range(radius)]
    return torch.stack(shifted, dim=2).flatten(3)


class RegionMutualInformation(nn.Module):
    """The RMI loss (Zhao, Wang, Xu, Cai, 2019: "Region Mutual Information Loss for Semantic Segmentation").

    Each pixel is represented with its 3x3 neighbours as a 9-vector, of the label ``Y`` and of the
    predicted probability ``P``. Per image and class, with the vectors centred over the pixels,
    ``Σ_Y = Y Yᵀ``, ``Σ_P = P Pᵀ``, ``Σ_YP = Y Pᵀ`` and the posterior variance
    ``M = Σ_Y - Σ_YP (Σ_P + εI)⁻¹ Σ_YPᵀ``; the loss is ``½ log det(M + εI) / 9`` averaged over
    images and summed over classes (a lower bound of -I(Y; P) up to constants). As in the authors'
    code, both maps are first average-pooled (3x3, stride 3; they pad by 1, eyegc does not) and
    computed in float64; probabilities are the sigmoid (multi-label) or softmax (class indices,
    one-hot labels) plus 1e-6. The authors combine it as ``0.5 BCE + 0.5 RMI``; eyegc adds it to the
    task's loss: ``--rmi-weight 1`` weighs RMI against the task's loss as they do.
    """

    def __init__(self, kind: TaskKind, pool: int = RMI_POOL) -> None:
        super().__init__()
        self.multilabel = kind == TaskKind.MULTILABEL_SEGMENTATION
        self.pool = pool

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.multilabel:
            probabilities, labels = torch.sigmoid(logits), target.float()
        else:
            probabilities = torch.softmax(logits, dim=1)
            labels = F.one_hot(target[:, 0].long(), logits.shape[1]).permute(0, 3, 1, 2).float()
        probabilities = probabilities + RMI_PROBABILITY_FLOOR
        if self.pool > 1 and min(labels.shape[-2:]) >= self.pool * RMI_RADIUS:
            labels = F.avg_pool2d(labels, self.pool, self.pool)
            probabilities = F.avg_pool2d(probabilities, self.pool, self.pool)
        y = _region_vectors(labels.double(), RMI_RADIUS)
        p = _region_vectors(probabilities.double(), RMI_RADIUS)
        y = y - y.mean(dim=3, keepdim=True)
        p = p - p.mean(dim=3, keepdim=True)
        eye = torch.eye(RMI_RADIUS**2, dtype=torch.float64, device=logits.device)
        cov_y, cov_p, cov_yp = y @ y.transpose(2, 3), p @ p.transpose(2, 3), y @ p.transpose(2, 3)
        posterior = cov_y - cov_yp @ torch.linalg.solve(cov_p + RMI_RIDGE * eye, cov_yp.transpose(2, 3))
        # log det through the Cholesky factor, as the authors do: 2 Σ log diag(L).
        factor = torch.linalg.cholesky(posterior + RMI_RIDGE * eye)
        log_det = 2 * torch.log(torch.diagonal(factor, dim1=-2, dim2=-1)).sum(-1)
        # Averaged over images, summed over classes: the authors' default (_IS_SUM = 1).
        return (0.5 * log_det / RMI_RADIUS**2).mean(dim=0).sum().float()


class WithRegionMutualInformation(nn.Module):
    """``base(logits, target) + weight * RMI(logits, target)``: RMI added to the task's loss by a weight."""

    def __init__(self, base: nn.Module, kind: TaskKind, weight: float) -> None:
        super().__init__()
        self.base = base
        self.rmi = RegionMutualInformation(kind)
        self.weight = float(weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.base(logits, target) + self.weight * self.rmi(logits, target)


def build_loss(
    name: str,
    kind: TaskKind,
    class_weights: Sequence[float] | None = None,
    head_sizes: Sequence[int] | None = None,
    frequencies: Sequence[float] | None = None,
    rmi_weight: float = 0.0,
) -> nn.Module:
    """A loss on logits: sigmoid per channel for multi-label tasks, softmax with one-hot labels otherwise.

    Dice is computed over the whole batch per class (as nnU-Net does), so patches without a
    lesion do not each pull towards an empty prediction. Classification tasks take
    ``head_sizes`` and use ``class_weights`` as one weight per head. ``cbce`` takes the training
    labels' class ``frequencies`` (:func:`class_frequencies`). ``rmi_weight`` > 0 adds that much
    :class:`RegionMutualInformation` to a segmentation loss.
    """
    if kind == TaskKind.CLASSIFICATION:
        look_up_option(name, CLASSIFICATION_LOSSES, what="loss for a classification task")
        if not head_sizes:
            raise ValueError("a classification loss needs head_sizes")
        if rmi_weight:
            raise EyegcError("--rmi-weight is for segmentation tasks; a classification task has no regions")
        return MultiHeadCrossEntropy(head_sizes, class_weights)
    look_up_option(name, LOSSES, what="loss")
    base = _segmentation_loss(name, kind, class_weights, frequencies)
    return WithRegionMutualInformation(base, kind, rmi_weight) if rmi_weight > 0 else base


def _segmentation_loss(
    name: str, kind: TaskKind, class_weights: Sequence[float] | None, frequencies: Sequence[float] | None
) -> nn.Module:
    if name == "cbce":
        if class_weights:
            raise EyegcError("--loss cbce sets its own class weights from the training labels; drop --class-weights")
        if frequencies is None:
            raise ValueError("--loss cbce needs the training labels' class frequencies")
        return ClassBalancedCrossEntropy(frequencies, kind)
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
