"""From probabilities to the final masks: per-class thresholds and small-component removal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from eyegc.common.bundle_config import Postprocessing
from eyegc.common.plugin import OwnPostprocessing, TaskKind
from scipy import ndimage

__all__ = [
    "binarize",
    "offset_grade",
    "plugin_postprocess",
    "postprocess",
    "remove_small_components",
]

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def remove_small_components(mask: np.ndarray, min_size: int) -> np.ndarray:
    """Drop 8-connected foreground components with fewer than ``min_size`` pixels."""
    if min_size <= 1 or not mask.any():
        return mask
    labels, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels].astype(mask.dtype)


def binarize(probabilities: np.ndarray, thresholds: Sequence[float], min_sizes: Sequence[int]) -> np.ndarray:
    """``(C, H, W)`` sigmoid probabilities -> ``(C, H, W)`` uint8 0/1 masks, class by class."""
    masks = np.empty(probabilities.shape, dtype=np.uint8)
    for c, (threshold, min_size) in enumerate(zip(thresholds, min_sizes, strict=True)):
        masks[c] = remove_small_components((probabilities[c] >= threshold).astype(np.uint8), int(min_size))
    return masks


def offset_grade(probabilities: np.ndarray, offsets: Sequence[float]) -> int:
    """The grade with the highest log-probability plus its offset (the first on a tie, as argmax)."""
    logs = np.log(np.maximum(np.asarray(probabilities[: len(offsets)], dtype=np.float64), 1e-12))
    return int(np.argmax(logs + np.asarray(offsets, dtype=np.float64)))


def postprocess(
    probabilities: np.ndarray, kind: TaskKind, classes: Sequence[str], settings: Postprocessing
) -> np.ndarray:
    """Apply a bundle's postprocessing settings (per-class thresholds and minimum component sizes).

    Classification: ``probabilities`` are ``(heads, max_num_classes)``; a head with a threshold
    (binary heads) predicts 1 when its class-1 probability reaches it, a head with grade offsets
    takes :func:`offset_grade`, other heads the argmax.
    """
    if kind == TaskKind.CLASSIFICATION:
        thresholds = settings.thresholds
        grades = np.argmax(probabilities, axis=1).astype(np.int64)
        for h, key in enumerate(classes):
            if key in thresholds:
                grades[h] = int(probabilities[h, 1] >= float(thresholds[key]))
            elif key in settings.grade_offsets:
                grades[h] = offset_grade(probabilities[h], settings.grade_offsets[key])
        return grades
    if kind == TaskKind.MULTICLASS_SEGMENTATION:
        return np.argmax(probabilities, axis=0).astype(np.uint8)
    return binarize(probabilities, [settings.threshold(c) for c in classes], [settings.min_size(c) for c in classes])


def plugin_postprocess(plugin: Any, probabilities: np.ndarray, settings: Postprocessing) -> np.ndarray:
    """The task's own ``postprocess(probabilities, settings.task_options)`` if it has one (GOALS layer
    order), else the shared one.

    Training's model selection, ``eyegc predict`` and the container all go through here, so
    they apply the same final step.
    """
    if isinstance(plugin, OwnPostprocessing):
        return plugin.postprocess(probabilities, settings.task_options)
    return postprocess(probabilities, plugin.kind, [c.key for c in plugin.classes], settings)
