"""The DRAC22 Task 1 leaderboard metric, computed as the organisers' code does (docs/REFERENCE.md §2)."""

from __future__ import annotations

from dataclasses import dataclass

from eyegc.common.evaluation import MeanOverlapMetric

__all__ = ["Drac22SegmentationMetric"]


@dataclass(frozen=True)
class Drac22SegmentationMetric(MeanOverlapMetric):
    """Mean DSC / mean IoU over IRMA, NPA and NV, exactly as the organisers score Task 1.

    Per image and class, Dice and IoU on 0/1 masks; NaN where that class's ground truth is empty
    (false positives on such images cost nothing); per class the NaN-ignoring mean over images;
    the leaderboard figure is the mean over classes. Ranking is by mean DSC, ties by mean IoU.
    A class with no ground truth in any evaluated image is reported as NaN and left out of the
    mean over classes (the official test set has every class, so there the two rules agree).
    """

    classes: tuple[str, ...] = ("irma", "npa", "nv")
