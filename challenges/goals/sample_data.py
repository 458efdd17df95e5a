"""Synthetic GOALS data set in the official folder layout (docs/REFERENCE.md §3).

Each case is a circumpapillary OCT B-scan, 1100 wide × 800 high, 8-bit grey, drawn as layered
bands whose boundaries undulate smoothly across the columns: dark vitreous; the bright RNFL,
thick at the superior and inferior poles and thin temporally and nasally (the double-hump
"TSNIT" profile); the GCIPL; the other retinal layers (dark nuclear layers, brighter plexiform
layers, the bright ellipsoid zone and RPE line); the textured choroid with dark vessel lumens;
and the darker sclera fading with depth. Retinal vessels cast vertical shadows, and speckle
(multiplicative) and additive noise cover everything. About 45% of cases are glaucomatous
(``GC_Label`` 1): a clearly thinner RNFL, deepest at one or both poles, and a somewhat thinner
GCIPL. The masks come from the very same integer boundaries that draw the bands, in the
official encoding (0 RNFL, 80 GCIPL, 160 choroid, 255 everything else).

Layout written: ``Train/Image``, ``Train/Layer_Masks``, ``Train/Train_GC_GT.xlsx`` and the
held-out split with ground truth under ``Validation/`` (``Validation_GC_GT.xlsx``). Training
images are named ``0001.png`` onwards; held-out ones continue at the next hundred (``0101.png``
for up to 100 training cases), as the official 100/100/100 splits are numbered. The sheets store
``ImgName`` as integers (1, 2, ...) as the real ``Train_GC_GT.xlsx`` does, with ``GC_Label`` 0/1.
"""

from __future__ import annotations

import io
import math
import re
import zipfile
from pathlib import Path

import numpy as np
from eyegc.challenges.goals.layout import (
    GC_LABEL_COLUMN,
    IMAGE_DIR,
    IMG_NAME_COLUMN,
    MASK_DIR,
    SPLIT_DIRS,
    split_dir,
)
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

__all__ = ["GLAUCOMA_RATE", "make_goals_case", "make_goals_sample_data", "write_gc_sheet"]

#: share of glaucomatous cases.
GLAUCOMA_RATE = 0.45
_SPLIT_CODES = {"train": 0, "test": 1}
#: the first cases of each split have fixed labels so that small sets hold both classes.
_FORCED_LABELS = (0, 1)
_XLSX_DATE = (2022, 6, 1, 0, 0, 0)  # fixed, so that equal arguments give byte-identical sheets
# Intensity over "band + position in band": vitreous; RNFL bright, brightest at its top; GCIPL;
# the other retina (INL dark, OPL bright, ONL dark, ellipsoid zone bright, RPE brightest);
# choroid fading with depth; sclera darker, fading further.
_RETINA_X = (0.0, 0.18, 0.26, 0.34, 0.72, 0.78, 0.84, 0.9, 0.94, 0.999)
_RETINA_Y = (60.0, 55.0, 125.0, 50.0, 38.0, 150.0, 70.0, 150.0, 235.0, 225.0)
_PROFILE_X = np.array([0.0, 0.999, 1.0, 1.999, 2.0, 2.999, *(3.0 + f for f in _RETINA_X), 4.0, 4.999, 5.0, 5.999])
_PROFILE_Y = np.array([12.0, 12.0, 205.0, 160.0, 118.0, 112.0, *_RETINA_Y, 125.0, 90.0, 70.0, 22.0])


def make_goals_sample_data(
    out: Path,
    cases: int = 16,
    test_cases: int = 6,
    seed: int = 0,
    width: int = 1100,
    height: int = 800,
) -> None:
    """Write a synthetic GOALS data set (images, layer masks and glaucoma sheets of both splits).

    Case ``i`` of a split comes from its own generator seeded by ``(seed, split, i)``: a larger
    ``cases`` keeps the first cases, and held-out images never depend on the training ones.

    Args:
        out: existing, empty folder that becomes the data root (it receives ``Train``, ``Validation``).
        cases: number of training cases.
        test_cases: number of held-out cases (with ground truth, for local scoring).
        seed: seed of everything random; equal arguments give byte-identical files.
        width: image width (official 1100).
        height: image height (official 800; at least 400).

    Raises:
        ValueError: a negative count or seed, or an image smaller than 200×400.
    """
    if cases < 0 or test_cases < 0 or seed < 0:
        raise ValueError(f"cases, test_cases and seed must be >= 0; got {cases}, {test_cases}, {seed}")
    if width < 200 or height < 400:
        raise ValueError(f"GOALS sample images need at least 200x400 (W x H); got {width}x{height}")
    out = Path(out)
    test_offset = 100 * max(1, math.ceil(cases / 100))
    jobs = [("train", i, i + 1) for i in range(cases)] + [("test", i, test_offset + i + 1) for i in range(test_cases)]
    labels: dict[str, list[tuple[int, int]]] = {"train": [], "test": []}
    for split in SPLIT_DIRS:
        (split_dir(out, split) / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
        (split_dir(out, split) / MASK_DIR).mkdir(parents=True, exist_ok=True)
    for split, index, number in tqdm(jobs, desc="goals sample data", unit="case"):
        rng = np.random.default_rng([seed, _SPLIT_CODES[split], index])
        drawn = int(rng.random() < GLAUCOMA_RATE)
        label = _FORCED_LABELS[index] if index < len(_FORCED_LABELS) else drawn
        image, mask = make_goals_case(rng, bool(label), width=width, height=height)
        name = f"{number:04d}.png"
        Image.fromarray(image).save(split_dir(out, split) / IMAGE_DIR / name)
        Image.fromarray(mask).save(split_dir(out, split) / MASK_DIR / name)
        labels[split].append((number, label))
    for split, rows in labels.items():
        folder = split_dir(out, split)
        write_gc_sheet(folder / f"{folder.name}_GC_GT.xlsx", rows)


def write_gc_sheet(path: Path, rows: list[tuple[int | str, int]]) -> None:
    """Write an ``ImgName``/``GC_Label`` sheet with openpyxl, byte-identical for equal rows."""
    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "Sheet1"
    sheet.append([IMG_NAME_COLUMN, GC_LABEL_COLUMN])
    for name, label in rows:
        sheet.append([name, int(label)])
    buffer = io.BytesIO()
    workbook.save(buffer)
    # openpyxl stamps the save time into docProps/core.xml and the zip entries: pin both.
    stamp = "2022-06-01T00:00:00Z"
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as source, zipfile.ZipFile(path, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "docProps/core.xml":
                text = data.decode("utf-8")
                for tag in ("created", "modified"):
                    pattern = rf"(<dcterms:{tag}[^>]*>)[^<]*(</dcterms:{tag}>)"
                    text = re.sub(pattern, lambda m: m.group(1) + stamp + m.group(2), text)
                data = text.encode("utf-8")
            info = zipfile.ZipInfo(item.filename, date_time=_XLSX_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            target.writestr(info, data)


# -- one case -------------------------------------------------------------------------------------


def _smooth_curve(rng: np.random.Generator, width: int, amplitude: float, waves: float = 3.0) -> np.ndarray:
    """A smooth random curve over the columns, ``(W,)``: a few low harmonics with random phases."""
    x = np.linspace(0.0, 1.0, width)
    curve = np.zeros(width)
    for k in range(1, 4):
        curve += rng.normal(0.0, 1.0 / k) * np.sin(2 * np.pi * (k * waves / 3.0) * x + rng.uniform(0, 2 * np.pi))
    return amplitude * curve / max(float(np.abs(curve).max()), 1e-6)


def _double_hump(width: int, centres: tuple[float, float], spread: float) -> np.ndarray:
    """The TSNIT profile: 1 at the two poles, about 0 temporally and nasally, ``(W,)``."""
    x = np.linspace(0.0, 1.0, width)
    return sum(np.exp(-0.5 * ((x - c) / spread) ** 2) for c in centres)


def _coarse_noise(rng: np.random.Generator, height: int, width: int, cell: int, sigma: float) -> np.ndarray:
    """Smooth noise in about [-1, 1] at full size, made on a grid ``cell`` times coarser."""
    small = rng.standard_normal((height // cell + 2, width // cell + 2)).astype(np.float32)
    small = ndimage.gaussian_filter(small, sigma)
    small /= max(float(np.abs(small).max()), 1e-6)
    full = np.repeat(np.repeat(small, cell, axis=0), cell, axis=1)
    return full[:height, :width]


def make_goals_case(
    rng: np.random.Generator, glaucoma: bool, width: int = 1100, height: int = 800
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic B-scan ``(H, W)`` uint8 and its official mask ``(H, W)`` uint8 (0/80/160/255)."""
    s = height / 800.0  # vertical scale: thicknesses are designed for 800 rows
    poles = (0.3 + rng.normal(0.0, 0.02), 0.7 + rng.normal(0.0, 0.02))
    hump = _double_hump(width, poles, rng.uniform(0.07, 0.1))
    # RNFL: 12-20 px temporally/nasally, 45-60 px at the poles; glaucoma thins it, most at a pole.
    rnfl = rng.uniform(12, 20) + rng.uniform(30, 42) * hump
    if glaucoma:
        loss = rng.uniform(0.45, 0.6) * np.ones(width)
        x = np.linspace(0.0, 1.0, width)
        pole = poles[int(rng.integers(2))]
        loss *= 1.0 - rng.uniform(0.2, 0.45) * np.exp(-0.5 * ((x - pole) / 0.08) ** 2)  # deeper focal notch
        rnfl = rnfl * loss
    rnfl = np.maximum(rnfl * (1.0 + 0.06 * _smooth_curve(rng, width, 1.0, 6.0)), 3.0)
    gcipl = rng.uniform(22, 30) + 6.0 * hump + _smooth_curve(rng, width, 2.0, 5.0)
    if glaucoma:
        gcipl *= rng.uniform(0.7, 0.82)
    retina = rng.uniform(95, 115) + _smooth_curve(rng, width, 6.0, 4.0)  # INL ... RPE
    choroid = rng.uniform(110, 170) + _smooth_curve(rng, width, 30.0, 3.0)
    top = rng.uniform(200, 280) + _smooth_curve(rng, width, rng.uniform(20, 60), 2.0)

    # Integer boundaries (rows where each band starts), shared by the image and the mask.
    b0 = np.round(top * s)
    b1 = b0 + np.maximum(np.round(rnfl * s), 1)
    b2 = b1 + np.maximum(np.round(gcipl * s), 1)
    b3 = b2 + np.round(retina * s)
    b4 = b3 + np.round(choroid * s)
    bounds = np.clip(np.stack([b0, b1, b2, b3, b4]), 0, height).astype(np.int32)  # (5, W)
    rows = np.arange(height, dtype=np.int32)[:, None]
    band = np.zeros((height, width), np.int8)
    for b in bounds:
        band += rows >= b
    # band: 0 vitreous, 1 RNFL, 2 GCIPL, 3 other retina, 4 choroid, 5 sclera
    mask = np.array([255, 0, 80, 255, 160, 255], dtype=np.uint8)[band]

    # Position inside the band (0 at its top, 1 at its bottom), then one piecewise-linear
    # intensity profile over "band + position" draws every band in a single pass.
    edges = np.vstack([np.zeros((1, width), np.int32), bounds, np.full((1, width), height, np.int32)])
    low = np.take_along_axis(edges, band.astype(np.intp), axis=0)
    high = np.take_along_axis(edges, band.astype(np.intp) + 1, axis=0)
    position = (rows - low).astype(np.float32) / np.maximum(high - low, 1).astype(np.float32)
    image = np.interp(band + 0.999 * position, _PROFILE_X, _PROFILE_Y).astype(np.float32)
    # Choroid: dark vessel lumens (thresholded smooth noise).
    lumens = np.clip((_coarse_noise(rng, height, width, 4, 2.0) - 0.1) * 3.0, 0.0, 1.0)
    image -= 55.0 * lumens * (band == 4)
    # Vessel shadows: vertical dark stripes below the RNFL near the poles (the arcade vessels).
    shade = np.ones(width, np.float32)
    x = np.arange(width)
    for _ in range(int(rng.integers(3, 8))):
        centre = (poles[int(rng.integers(2))] + rng.normal(0.0, 0.05)) * width
        half = rng.uniform(3, 9)
        shade *= 1.0 - rng.uniform(0.35, 0.6) * np.exp(-0.5 * ((x - centre) / half) ** 2)
    # Depth attenuation and lateral illumination drift, as one (H, W) gain.
    depth = np.clip((rows - bounds[0]).astype(np.float32) / (500.0 * s), 0.0, 1.0)
    gain = (1.0 - 0.25 * depth) * (1.0 + 0.08 * _smooth_curve(rng, width, 1.0)).astype(np.float32)
    image *= np.where(rows >= bounds[1], gain * shade, gain)

    image = ndimage.gaussian_filter(image.astype(np.float32), 1.0)
    speckle = rng.standard_normal((height, width), dtype=np.float32)
    image *= 1.0 + 0.22 * speckle
    image += 5.0 * rng.standard_normal((height, width), dtype=np.float32)
    return np.clip(image, 0, 255).round().astype(np.uint8), mask
