"""From a stored image to the network's input and back: intensity scaling, working resolution."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from eyegc.common.bundle_config import Preprocessing
from eyegc.common.errors import EyegcError
from eyegc.common.registry import look_up_option
from pydantic import ValidationError

__all__ = [
    "CLAHE_SPACES",
    "NORMALIZATIONS",
    "apply_clahe",
    "estimate_fov",
    "prepare_image",
    "prepare_target",
    "resize_probabilities",
    "working_shape",
]

NORMALIZATIONS = ("zscore", "unit")
#: ``channels``: CLAHE on each channel separately (the green channel of a fundus image, a grey B-scan);
#: ``lab``: on the lightness of CIE L*a*b* only, so colours keep their hue (RGB input).
CLAHE_SPACES = ("channels", "lab")
#: red-channel level (fraction of full scale) above which a fundus pixel is inside the field of view
FOV_RED_LEVEL = 20 / 255


def estimate_fov(image: np.ndarray, level: float = FOV_RED_LEVEL) -> np.ndarray:
    """The field of view of a ``(3, H, W)`` fundus photograph as ``(H, W)`` bool.

    Red channel above ``level`` of full scale (integer images: of their dtype's maximum; float
    images: of 1.0), opened twice, holes filled, largest component kept.
    """
    from scipy import ndimage

    if image.ndim != 3 or image.shape[0] != 3:
        raise EyegcError(f"a field of view is estimated from an RGB (3, H, W) image, got shape {image.shape}")
    red = np.asarray(image[0])
    full = float(np.iinfo(red.dtype).max) if np.issubdtype(red.dtype, np.integer) else 1.0
    fov = ndimage.binary_opening(red > level * full, iterations=2)
    fov = ndimage.binary_fill_holes(fov)
    labels, count = ndimage.label(fov)
    if count > 1:
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        sizes[0] = 0
        fov = labels == int(np.argmax(sizes))
    return fov


def working_shape(shape: tuple[int, int], scale: float) -> tuple[int, int]:
    """The ``(H, W)`` an image of ``shape`` has at the working resolution."""
    return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))


def apply_clahe(
    image: np.ndarray, clip_limit: float = 0.01, space: str = "channels", kernel_size: int | None = None
) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (scikit-image) of a ``(C, H, W)`` image in [0, 1].

    Args:
        image: float image, values in [0, 1].
        clip_limit: scikit-image's normalised clip limit (higher = more contrast; 0.01 is its default).
        space: one of :data:`CLAHE_SPACES`; ``"lab"`` needs 3 (RGB) channels.
        kernel_size: tile size in pixels; ``None`` = 1/8 of the height and width (scale-invariant).

    Returns:
        float32 ``(C, H, W)`` in [0, 1].
    """
    from skimage import color, exposure

    space = look_up_option(space, CLAHE_SPACES, what="CLAHE space")
    values = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
    if space == "lab":
        if values.shape[0] != 3:
            raise EyegcError(
                f"CLAHE in L*a*b* needs an RGB image, got {values.shape[0]} channel(s); use space 'channels'"
            )
        lab = color.rgb2lab(np.moveaxis(values, 0, -1))
        lab[..., 0] = exposure.equalize_adapthist(lab[..., 0] / 100.0, kernel_size, clip_limit) * 100.0
        return np.moveaxis(np.clip(color.lab2rgb(lab), 0.0, 1.0), -1, 0).astype(np.float32)
    return np.stack([exposure.equalize_adapthist(c, kernel_size, clip_limit) for c in values]).astype(np.float32)


def _settings(preprocessing: Preprocessing | Mapping[str, Any]) -> Preprocessing:
    """A mapping's keys checked as a bundle's would be (a :class:`Preprocessing` passes through)."""
    try:
        return Preprocessing.model_validate(preprocessing)
    except ValidationError as error:
        raise EyegcError(f"preprocessing settings: {error.errors()[0]['msg']} ({error.errors()[0]['loc']})") from None


def prepare_image(image: np.ndarray, preprocessing: Preprocessing | Mapping[str, Any]) -> torch.Tensor:
    """``(C, H, W)`` stored image -> float32 network input at the working resolution.

    ``preprocessing`` is a bundle's :class:`~eyegc.common.bundle_config.Preprocessing` (or its keys
    as a mapping, unset ones at their defaults).

    Integer images are scaled by their dtype's maximum; ``input_size`` ``[H, W]`` (classification)
    resizes to that size, else ``working_scale`` scales both sides; ``normalize`` ``"zscore"`` then
    standardises each channel of each image, ``"unit"`` keeps the [0, 1] range. ``clahe`` (a mapping of
    :func:`apply_clahe`'s arguments, or ``None``) equalises contrast at the working resolution first.
    ``fov_mask`` (RGB fundus images) estimates the field of view (:func:`estimate_fov`), standardises
    with the statistics inside it and sets everything outside to 0, so the black border neither
    skews the normalisation nor carries signal.
    """
    settings = _settings(preprocessing)
    array = np.ascontiguousarray(image)
    if not array.flags.writeable:
        array = array.copy()  # torch shares the array's memory and warns about a read-only one (Pillow's)
    tensor = torch.from_numpy(array).float()
    if np.issubdtype(image.dtype, np.integer):
        tensor /= float(np.iinfo(image.dtype).max)
    scale = settings.working_scale
    input_size = settings.input_size
    if input_size:  # classification: every image to one fixed size, whatever it was stored at
        size = (int(input_size[0]), int(input_size[1]))
        if size != tuple(image.shape[-2:]):
            shrink = size[0] * size[1] < image.shape[-2] * image.shape[-1]
            tensor = F.interpolate(tensor[None], size=size, mode="bilinear", antialias=shrink, align_corners=False)[0]
    elif scale != 1.0:
        size = working_shape(image.shape[-2:], scale)
        tensor = F.interpolate(tensor[None], size=size, mode="bilinear", antialias=scale < 1, align_corners=False)[0]
    fov = None
    if settings.fov_mask:
        fov = torch.from_numpy(estimate_fov(tensor.numpy()))
    clahe = settings.clahe
    if clahe:
        if not np.issubdtype(image.dtype, np.integer):  # CLAHE needs [0, 1]: stretch float images first
            low = tensor.amin(dim=(-2, -1), keepdim=True)
            tensor = (tensor - low) / (tensor.amax(dim=(-2, -1), keepdim=True) - low).clamp_min(1e-12)
        tensor = torch.from_numpy(apply_clahe(tensor.numpy(), **clahe))
    normalize = look_up_option(settings.normalize, NORMALIZATIONS, what="normalization")
    if normalize == "zscore":
        inside = tensor[:, fov] if fov is not None and bool(fov.any()) else tensor.flatten(1)
        mean = inside.mean(dim=1)[:, None, None]
        std = inside.std(dim=1).clamp_min(1e-6)[:, None, None]
        tensor = (tensor - mean) / std
    if fov is not None:
        tensor = tensor * fov
    return tensor.contiguous()


def prepare_target(
    target: np.ndarray, preprocessing: Preprocessing | Mapping[str, Any], categorical: bool = False
) -> torch.Tensor:
    """Ground truth -> float32 training targets at the working resolution.

    Multi-label ``(C, H, W)`` 0/1 masks keep the covered fraction of each pixel when downscaled
    (area interpolation), so lesions a few pixels wide still pull the loss. A ``categorical``
    ``(1, H, W)`` class-index map is resampled nearest-neighbour: averaging indices would invent
    classes (between 0 and 3 lies 2).
    """
    tensor = torch.from_numpy(np.ascontiguousarray(target)).float()
    scale = _settings(preprocessing).working_scale
    if scale != 1.0:
        size = working_shape(target.shape[-2:], scale)
        mode = "area" if scale < 1 and not categorical else "nearest"
        tensor = F.interpolate(tensor[None], size=size, mode=mode)[0]
    return tensor.contiguous()


def resize_probabilities(probabilities: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """``(C, h, w)`` probabilities -> ``(C, H, W)`` at the original size (bilinear)."""
    if tuple(probabilities.shape[-2:]) == tuple(shape):
        return probabilities
    return F.interpolate(probabilities[None], size=tuple(shape), mode="bilinear", align_corners=False)[0]
