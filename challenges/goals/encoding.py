"""GOALS layer-mask encoding: official pixel values <-> eyegc class indices, and checked image I/O.

The organisers' masks (and the submission) store one value per pixel: 0 = RNFL, 80 = GCIPL,
160 = choroid, 255 = everything else. In memory eyegc uses a ``(1, H, W)`` uint8 class-index map
whose index 0 is the background ("everything else"), 1 = RNFL, 2 = GCIPL, 3 = choroid, so that
padding and rotation fill with background.

Masks are PNG (lossless): values must be exactly 0/80/160/255; no tolerance is applied, since
compression noise, as JPEG would add, does not occur. A mask with other values (e.g. resized
with interpolation) is an error naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from eyegc.challenges.goals.layout import IMAGE_SIZE
from eyegc.common.errors import DataError
from eyegc.common.imageio import read_image_array, write_png

__all__ = [
    "BACKGROUND_VALUE",
    "CLASS_VALUES",
    "LAYER_KEYS",
    "LAYER_VALUES",
    "decode_layers",
    "encode_layers",
    "read_goals_image",
    "read_layer_mask",
    "write_layer_png",
]

#: layer key -> official pixel value; the layer's class index is its position + 1.
LAYER_VALUES = {"rnfl": 0, "gcipl": 80, "choroid": 160}
BACKGROUND_VALUE = 255
LAYER_KEYS: tuple[str, ...] = tuple(LAYER_VALUES)
#: class index -> official value (index 0 = background).
CLASS_VALUES = np.array([BACKGROUND_VALUE, *LAYER_VALUES.values()], dtype=np.uint8)

#: official value -> class index; 255 marks a value with no class.
_DECODE = np.full(256, 255, dtype=np.uint8)
_DECODE[CLASS_VALUES] = np.arange(len(CLASS_VALUES), dtype=np.uint8)


def _as_2d(index_map: np.ndarray) -> np.ndarray:
    array = np.asarray(index_map)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"expected an (H, W) or (1, H, W) class-index map, got shape {array.shape}")
    return array


def encode_layers(index_map: np.ndarray) -> np.ndarray:
    """``(H, W)`` or ``(1, H, W)`` class indices 0..3 -> ``(H, W)`` uint8 official values.

    Raises:
        ValueError: an index outside 0..3.
    """
    array = _as_2d(index_map)
    if array.size and (array.min() < 0 or array.max() >= len(CLASS_VALUES)):
        raise ValueError(f"class indices must be 0..{len(CLASS_VALUES) - 1}; got {np.unique(array)[:8].tolist()}")
    return CLASS_VALUES[array.astype(np.intp)]


def decode_layers(official: np.ndarray, path: Path | str | None = None) -> np.ndarray:
    """``(H, W)`` official values 0/80/160/255 -> ``(1, H, W)`` uint8 class indices.

    Raises:
        DataError: a pixel value outside {0, 80, 160, 255}; names ``path`` when given.
    """
    array = _as_2d(official)
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            where = f"{path}" if path is not None else "layer mask"
            raise DataError(f"{where}: values {np.unique(array)[:8].tolist()} are not 8-bit; GOALS masks are uint8")
        array = array.astype(np.uint8)
    indices = _DECODE[array]
    bad = indices == 255
    if bad.any():
        values = np.unique(array[bad])
        where = f"{path}" if path is not None else "layer mask"
        raise DataError(
            f"{where}: pixel values {values[:8].tolist()}{' ...' if len(values) > 8 else ''} are not GOALS layer "
            f"values (0 RNFL, 80 GCIPL, 160 choroid, 255 other); was the mask resized with interpolation "
            "or saved as JPEG? Rewrite it with exact values."
        )
    return indices[None]


def _single_channel(array: np.ndarray, path: Path, what: str) -> np.ndarray:
    """``(C, H, W)`` -> ``(1, H, W)``: a grey image saved as RGB/RGBA keeps its first channel."""
    if array.shape[0] in (3, 4):
        colour = array[:3]
        if not (np.array_equal(colour[0], colour[1]) and np.array_equal(colour[0], colour[2])):
            raise DataError(f"{path}: a GOALS {what} is greyscale; this one has differing colour channels")
        return array[:1]
    if array.shape[0] == 2:  # grey + alpha
        return array[:1]
    if array.shape[0] != 1:
        raise DataError(f"{path}: a GOALS {what} has 1 channel (or grey saved as RGB); got {array.shape[0]}")
    return array


def _check_size(array: np.ndarray, path: Path, shape: tuple[int, int] | None, what: str) -> None:
    if shape is not None and array.shape[1:] != tuple(shape):
        raise DataError(
            f"{path} is {array.shape[2]}x{array.shape[1]} (W x H); GOALS {what}s are {shape[1]}x{shape[0]}. "
            "Use the original, unresized file."
        )


def read_layer_mask(path: Path, shape: tuple[int, int] | None = IMAGE_SIZE) -> np.ndarray:
    """Read an official layer mask as a ``(1, H, W)`` uint8 class-index map.

    Args:
        path: a PNG with values 0/80/160/255 (grey, or grey saved as RGB).
        shape: the required ``(H, W)`` (default 800x1100); None accepts any size.

    Raises:
        DataError: unreadable file, colour or multi-channel content, wrong size, or values other
            than 0/80/160/255. The message names the file.
    """
    path = Path(path)
    array = _single_channel(read_image_array(path), path, "layer mask")
    _check_size(array, path, shape, "layer mask")
    return decode_layers(array[0], path)


def read_goals_image(path: Path, shape: tuple[int, int] | None = IMAGE_SIZE) -> np.ndarray:
    """Read a B-scan as ``(1, H, W)`` uint8 (grey saved as RGB/RGBA is accepted).

    Raises:
        DataError: unreadable, not 8-bit, colour, or not of size ``shape`` (default 800x1100).
    """
    path = Path(path)
    array = _single_channel(read_image_array(path), path, "B-scan")
    if array.dtype != np.uint8:
        raise DataError(f"{path}: GOALS B-scans are 8-bit; this one is {array.dtype}")
    _check_size(array, path, shape, "B-scan")
    return array


def write_layer_png(path: Path, index_map: np.ndarray) -> None:
    """Write a ``(H, W)`` or ``(1, H, W)`` class-index map as an official 8-bit PNG (0/80/160/255)."""
    write_png(Path(path), encode_layers(index_map))
