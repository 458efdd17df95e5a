"""Dense CRF post-processing: a fully connected CRF refines a class's probabilities before its threshold.

pydensecrf2 (the maintained build of pydensecrf, Krähenbühl and Koltun's mean-field inference) is
an optional extra (``pip install -c constraints.txt 'eyegc[crf]'``). Each multi-label class is one
two-label CRF (absent / present) whose unary term is ``-log`` of the ensemble's probability; the
pairwise terms are a smoothness kernel and an appearance kernel on the image itself.
``eyegc tune --crf`` chooses, per class, whether to refine and with which :data:`CRF_CANDIDATES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F
from eyegc.common.bundle_config import CrfSettings
from eyegc.common.errors import EyegcError
from eyegc.common.preprocessing import working_shape

__all__ = ["CRF_CANDIDATES", "CRF_EXTRA", "MISSING_CRF", "crf_image", "import_densecrf", "refine", "refine_classes"]

#: the optional dependency group a bundle with a CRF needs (the image gets it too).
CRF_EXTRA = "crf"
MISSING_CRF = "dense CRF post-processing needs pydensecrf2: pip install -c constraints.txt 'eyegc[crf]'"
#: what ``eyegc tune --crf`` tries per class besides no CRF: pydensecrf's smoothness kernel (3 px, 3) with
#: appearance kernels from narrow and weak to wide and strong (its example's is 80 px, 13 levels, 10).
CRF_CANDIDATES: tuple[CrfSettings, ...] = (
    CrfSettings(),
    CrfSettings(bilateral_sxy=20, bilateral_srgb=10, bilateral_compat=3),
    CrfSettings(bilateral_sxy=80, bilateral_srgb=20, bilateral_compat=10),
    CrfSettings(gaussian_compat=1, bilateral_sxy=10, bilateral_srgb=5, bilateral_compat=3),
)
#: probabilities are clipped to [eps, 1 - eps] before -log, so a certain pixel can still be moved a little.
_PROBABILITY_EPS = 1e-5


def import_densecrf() -> ModuleType:
    """pydensecrf's ``densecrf`` module.

    Raises:
        EyegcError: pydensecrf2 is not installed.
    """
    try:
        return importlib.import_module("pydensecrf.densecrf")
    except ImportError:
        raise EyegcError(MISSING_CRF) from None


def crf_image(image: np.ndarray) -> np.ndarray:
    """A ``(channels, H, W)`` input image as the ``(H, W, 3)`` uint8 array the appearance kernel compares.

    Each channel is stretched to 0..255 over its own range (16-bit and float images keep their
    contrast); a grey image is repeated into three channels, two channels are padded with the first.
    """
    planes = np.asarray(image, dtype=np.float64).reshape(-1, *image.shape[-2:])
    low = planes.min(axis=(1, 2), keepdims=True)
    span = np.maximum(planes.max(axis=(1, 2), keepdims=True) - low, 1e-12)
    scaled = np.rint((planes - low) / span * 255).astype(np.uint8)
    while len(scaled) < 3:
        scaled = np.concatenate([scaled, scaled[:1]])
    return np.ascontiguousarray(scaled[:3].transpose(1, 2, 0))


def _resized(array: np.ndarray, shape: tuple[int, int], mode: str) -> np.ndarray:
    """``(H, W)`` or ``(H, W, 3)`` resized to ``shape`` by torch (``area`` down, ``bilinear`` up), float32."""
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    planes = tensor[None, None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)[None]
    options = {"align_corners": False} if mode == "bilinear" else {}
    out = F.interpolate(planes, size=shape, mode=mode, **options)[0]
    return (out[0] if tensor.ndim == 2 else out.permute(1, 2, 0)).numpy()


def refine(probability: np.ndarray, image: np.ndarray, settings: CrfSettings) -> np.ndarray:
    """One class's ``(H, W)`` probability refined by a two-label dense CRF on ``image`` (:func:`crf_image`).

    Below ``settings.scale`` 1 both are shrunk (area) to that scale first, and the CRF's marginal is
    brought back (bilinear); the kernels' pixel widths are at the shrunk size.

    Returns:
        The CRF's marginal probability of the class, ``(H, W)`` float32.
    """
    if settings.scale < 1:
        shape = working_shape(probability.shape, settings.scale)
        small = _resized(probability, shape, "area")
        small_image = np.ascontiguousarray(np.clip(np.rint(_resized(image, shape, "area")), 0, 255).astype(np.uint8))
        refined = refine(small, small_image, settings.model_copy(update={"scale": 1.0}))
        return _resized(refined, probability.shape, "bilinear")
    densecrf = import_densecrf()
    height, width = probability.shape
    p = np.clip(probability.astype(np.float32), _PROBABILITY_EPS, 1 - _PROBABILITY_EPS)
    unary = -np.log(np.stack([1 - p, p]).reshape(2, -1))
    crf = densecrf.DenseCRF2D(width, height, 2)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    if settings.gaussian_compat > 0:
        crf.addPairwiseGaussian(sxy=settings.gaussian_sxy, compat=settings.gaussian_compat)
    if settings.bilateral_compat > 0:
        crf.addPairwiseBilateral(
            sxy=settings.bilateral_sxy, srgb=settings.bilateral_srgb, rgbim=image, compat=settings.bilateral_compat
        )
    marginals = np.asarray(crf.inference(settings.iterations), dtype=np.float32).reshape(2, height, width)
    return marginals[1]


def refine_classes(
    probabilities: np.ndarray, image: np.ndarray, classes: Sequence[str], settings: Mapping[str, CrfSettings]
) -> np.ndarray:
    """``(C, H, W)`` multi-label probabilities with each class that has CRF ``settings`` refined (a copy)."""
    if not settings:
        return probabilities
    rgb = crf_image(image)
    refined = np.array(probabilities, dtype=np.float32, copy=True)
    for c, key in enumerate(classes):
        if key in settings:
            refined[c] = refine(refined[c], rgb, settings[key])
    return refined
