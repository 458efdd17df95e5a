"""Images for people: a case at screen size with its classes drawn over it.

A display image is the case's image reduced by a whole factor in blocks (mean for the image, any
pixel for a mask, so a one-pixel microaneurysm survives the reduction) and stretched between its
0.5th and 99.5th percentiles. Class colours are the Okabe–Ito palette, told apart with every common
kind of colour blindness.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from dataclasses import dataclass

import matplotlib
import numpy as np
from eyegc.common.plugin import ClassSpec, TaskKind, TaskPlugin
from scipy import ndimage

__all__ = [
    "DISPLAY_SIZE",
    "OKABE_ITO",
    "ShownClass",
    "class_colour",
    "class_masks",
    "contour_overlay",
    "display_factor",
    "display_image",
    "plain_text",
    "reduce_masks",
    "shown_classes",
]

#: Okabe & Ito's colour-blind-safe palette, black left out (it vanishes on a fundus or OCT image).
OKABE_ITO: tuple[str, ...] = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7")

#: The longest side of a display image, in pixels.
DISPLAY_SIZE = 1024


def plain_text() -> AbstractContextManager:
    """Figures made inside show text as written: a case named ``x$^$.png`` is no mathematical formula
    (matplotlib would parse text between dollar signs as one, and fail on it)."""
    return matplotlib.rc_context({"text.parse_math": False})


def class_colour(position: int) -> str:
    """The colour of the ``position``-th shown class (cycling after seven)."""
    return OKABE_ITO[position % len(OKABE_ITO)]


@dataclass(frozen=True)
class ShownClass:
    """A class drawn on images: its channel in the prediction, its spec and its colour."""

    channel: int
    spec: ClassSpec
    colour: str


def shown_classes(plugin: TaskPlugin) -> list[ShownClass]:
    """The classes an overlay draws: every class, less a softmax task's background (channel 0)."""
    if plugin.kind == TaskKind.CLASSIFICATION:
        return []
    first = 1 if plugin.kind == TaskKind.MULTICLASS_SEGMENTATION else 0
    return [
        ShownClass(channel, spec, class_colour(position))
        for position, (channel, spec) in enumerate(list(enumerate(plugin.classes))[first:])
    ]


def class_masks(plugin: TaskPlugin, prediction: np.ndarray) -> np.ndarray:
    """``(K, H, W)`` bool, one mask per shown class, from a prediction or target in the plugin's layout."""
    shown = shown_classes(plugin)
    array = np.asarray(prediction)
    if plugin.kind == TaskKind.MULTICLASS_SEGMENTATION:
        return np.stack([array[0] == s.channel for s in shown])
    return np.stack([array[s.channel] > 0 for s in shown])


def display_factor(shape: tuple[int, ...], longest: int = DISPLAY_SIZE) -> int:
    """The whole reduction factor that brings an ``(..., H, W)`` image's longest side to ``longest`` or below."""
    return max(1, math.ceil(max(shape[-2:]) / longest))


def _blocks(array: np.ndarray, factor: int) -> np.ndarray:
    """``(C, H, W)`` -> ``(C, h, factor, w, factor)`` after edge-padding to whole blocks."""
    c, h, w = array.shape
    pad_h, pad_w = -h % factor, -w % factor
    padded = np.pad(array, ((0, 0), (0, pad_h), (0, pad_w)), mode="edge") if pad_h or pad_w else array
    return padded.reshape(c, (h + pad_h) // factor, factor, (w + pad_w) // factor, factor)


def display_image(image: np.ndarray, factor: int) -> np.ndarray:
    """``(h, w, 3)`` uint8 from a ``(C, H, W)`` image of any dtype: block means, percentile stretch.

    One channel is shown grey; three as colour; any other count shows its first channel.
    """
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        array = array[None]
    array = array[:3] if array.shape[0] == 3 else array[:1]
    reduced = _blocks(array, factor).mean(axis=(2, 4)) if factor > 1 else array
    low, high = np.percentile(reduced, [0.5, 99.5])
    scaled = np.clip((reduced - low) / max(float(high - low), 1e-6), 0, 1)
    rgb = np.repeat(scaled, 3, axis=0) if scaled.shape[0] == 1 else scaled
    return np.round(rgb.transpose(1, 2, 0) * 255).astype(np.uint8)


def reduce_masks(masks: np.ndarray, factor: int) -> np.ndarray:
    """``(K, h, w)`` bool: a display pixel is set when any pixel of its block is."""
    masks = np.asarray(masks, dtype=bool)
    return _blocks(masks, factor).any(axis=(2, 4)) if factor > 1 else masks


def _rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.uint8)


def contour_overlay(rgb: np.ndarray, masks: np.ndarray, colours: list[str]) -> np.ndarray:
    """A copy of ``rgb`` with each mask's outline (two pixels wide) painted in its colour, in class order."""
    out = rgb.copy()
    for mask, colour in zip(masks, colours, strict=True):
        if not mask.any():
            continue
        outline = mask & ~ndimage.binary_erosion(mask, border_value=0)
        out[ndimage.binary_dilation(outline)] = _rgb(colour)
    return out
