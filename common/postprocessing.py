"""From probabilities to the final masks: per-class thresholds and small-component removal."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from eyegc.common.plugin import OwnPostprocessing, TaskKind
from scipy import ndimage

__all__ = [
    "DEFAULT_POSTPROCESSING",
    "DEFAULT_THRESHOLD",
    "binarize",
    "plugin_postprocess",
    "postprocess",
    "remove_small_components",
]

#: The threshold of a class or binary head until tuning finds a better one.
DEFAULT_THRESHOLD = 0.5
DEFAULT_POSTPROCESSING: dict[str, Any] = {"threshold": DEFAULT_THRESHOLD, "min_component_size": 0}
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


def postprocess(
    probabilities: np.ndarray, kind: TaskKind, classes: Sequence[str], settings: Mapping[str, Any]
) -> np.ndarray:
    """Apply a bundle's postprocessing settings (``{"thresholds": {cls: t}, "min_component_size": {cls: n}}``).

    Classification: ``probabilities`` are ``(heads, max_num_classes)``; a head with a threshold
    (binary heads) predicts 1 when its class-1 probability reaches it, other heads take the argmax.
    """
    if kind == TaskKind.CLASSIFICATION:
        thresholds = settings.get("thresholds", {})
        grades = np.argmax(probabilities, axis=1).astype(np.int64)
        for h, key in enumerate(classes):
            if key in thresholds:
                grades[h] = int(probabilities[h, 1] >= float(thresholds[key]))
        return grades
    if kind == TaskKind.MULTICLASS_SEGMENTATION:
        return np.argmax(probabilities, axis=0).astype(np.uint8)
    thresholds = [float(settings.get("thresholds", {}).get(c, DEFAULT_POSTPROCESSING["threshold"])) for c in classes]
    sizes = [int(settings.get("min_component_size", {}).get(c, 0)) for c in classes]
    return binarize(probabilities, thresholds, sizes)


def plugin_postprocess(plugin: Any, probabilities: np.ndarray, settings: Mapping[str, Any]) -> np.ndarray:
    """The task's own ``postprocess(probabilities, settings)`` if it has one (GOALS layer order), else the shared one.

    Training's model selection, ``eyegc predict`` and the container all go through here, so
    they apply the same final step.
    """
    if isinstance(plugin, OwnPostprocessing):
        return plugin.postprocess(probabilities, settings)
    return postprocess(probabilities, plugin.kind, [c.key for c in plugin.classes], settings)
