"""Synthetic IDRiD data sets in the official folder layouts (sub-challenges A and B).

The images mimic colour fundus photographs: an orange-red retina in a circular field of view
that is cut at the top and bottom (as in IDRiD), a darker macula, a bright yellowish optic disc,
dark red vessel arcades branching from the disc, and the four lesion types drawn exactly where
their masks are:

* MA (microaneurysms): small dark red dots, 3-8 px across at the default size.
* HE (haemorrhages): larger dark red irregular or flame-shaped blobs.
* EX (hard exudates): bright yellow specks in clusters.
* SE (soft exudates): fuzzy pale patches; the mask is where the patch's opacity is at least 0.5.

Lesions never overlap each other or the optic disc, so every mask pixel shows its own lesion.
The default size is 1072×712, a quarter of the official 4288×2848 in each direction, to keep
tests and the demo fast; ``height``/``width`` make any size (lesion sizes scale with the width).
Masks are written as the organisers' are: 1-bit palette TIFFs holding 0/1 (black/red palette),
and a lesion absent from an image has no mask file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from eyegc.challenges.idrid.layout import (
    DME_GRADES,
    DR_GRADES,
    GRADING_COLUMNS,
    LESION_FOLDERS,
    LESION_KEYS,
    grading_image_dir,
    grading_label_file,
    lesion_gt_dir,
    lesion_image_dir,
    lesion_mask_name,
)
from PIL import Image, ImageDraw, ImageFilter, TiffImagePlugin
from scipy import ndimage
from tqdm import tqdm

__all__ = [
    "DEFAULT_GRADING_SIZE",
    "DEFAULT_HEIGHT",
    "DEFAULT_WIDTH",
    "GRADING_TEST_CASES",
    "GRADING_TRAIN_CASES",
    "OFFICIAL_SIZE",
    "TEST_NAMES",
    "TRAIN_NAMES",
    "make_idrid_grading_sample_data",
    "make_idrid_sample_data",
    "write_idrid_mask",
]

#: The official image size (height, width).
OFFICIAL_SIZE = (2848, 4288)
DEFAULT_HEIGHT = 712
DEFAULT_WIDTH = 1072
#: Sub-challenge B images are only graded, so the sample images are smaller still (height, width).
DEFAULT_GRADING_SIZE = (356, 536)
#: The official sub-challenge A names: 54 training and 27 testing images.
TRAIN_NAMES = tuple(f"IDRiD_{i:02d}" for i in range(1, 55))
TEST_NAMES = tuple(f"IDRiD_{i:02d}" for i in range(55, 82))
#: The official sub-challenge B set sizes; both splits are named IDRiD_001, IDRiD_002, ...
GRADING_TRAIN_CASES = 413
GRADING_TEST_CASES = 103
_SPLIT_CODES = {"train": 0, "test": 1}
_REFERENCE_WIDTH = 1072.0
#: Share of images with soft exudates in the official training set (26 of 54).
_SE_RATE = 26 / 54
#: (DR grade, DME risk) -> images of the official training set; sample grades follow it.
_JOINT_GRADES = {
    (0, 0): 134,
    (1, 0): 20,
    (2, 0): 16,
    (2, 1): 33,
    (2, 2): 87,
    (3, 0): 3,
    (3, 1): 4,
    (3, 2): 67,
    (4, 0): 4,
    (4, 1): 4,
    (4, 2): 41,
}
# The first cases of each split get fixed grades so that small sets show every grade.
_FORCED_GRADES = {
    "train": [(0, 0), (1, 0), (2, 1), (3, 2), (4, 2), (2, 2), (0, 0), (4, 0)],
    "test": [(0, 0), (2, 2), (4, 1), (1, 0), (3, 2)],
}
# Training CSV: the official file has nine empty columns after the three real ones.
_TRAIN_CSV_EMPTY_COLUMNS = 9
# The palette of the official masks: index 0 black, index 1 red (TIFF ColorMap, 16-bit R, G, B).
_MASK_COLORMAP = (0, 65535, 0, 0, 0, 0)
# Tries per lesion before giving up on it (a lesion must not touch another class).
_ATTEMPTS = 10


def write_idrid_mask(path: Path, mask: np.ndarray) -> None:
    """Write an ``(H, W)`` mask as the organisers do: a 1-bit palette TIFF of 0/1 (black/red)."""
    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[262] = 3  # PhotometricInterpretation: palette
    info[258] = (1,)  # BitsPerSample
    info[277] = 1  # SamplesPerPixel
    info[320] = _MASK_COLORMAP
    Image.fromarray(np.asarray(mask) > 0).save(path, format="TIFF", tiffinfo=info)


def make_idrid_sample_data(
    out: Path,
    cases: int = 12,
    test_cases: int = 4,
    seed: int = 0,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    with_od: bool = True,
) -> None:
    """Write a synthetic sub-challenge A data set (images and ground truth of both splits).

    Case ``i`` of a split is generated from its own generator seeded by ``(seed, split, i)``, so
    a larger ``cases`` keeps the first cases and the testing split never depends on ``cases``.
    The first case of each split shows soft exudates and the second does not (no SE file); later
    cases show them at the official rate. MA, HE and EX are in every image.

    Args:
        out: Existing, empty folder that becomes the data root (it receives ``A. Segmentation``).
        cases: Number of training images (IDRiD_01 ... at most 54).
        test_cases: Number of testing images (IDRiD_55 ... at most 27), with ground truth.
        seed: Seed of everything random; equal arguments give byte-identical files.
        height: Image height in pixels (official: 2848).
        width: Image width in pixels (official: 4288).
        with_od: Also write the optic disc masks (``5. Optic Disc``).

    Raises:
        ValueError: a count or the seed is negative, more images are asked for than official
            names exist, or the size is too small.
    """
    _check_counts(cases, test_cases, seed, len(TRAIN_NAMES), len(TEST_NAMES))
    _check_size(height, width)
    out = Path(out)
    keys = (*LESION_KEYS, "od") if with_od else LESION_KEYS
    jobs = [("train", i, name) for i, name in enumerate(TRAIN_NAMES[:cases])]
    jobs += [("test", i, name) for i, name in enumerate(TEST_NAMES[:test_cases])]
    for split in _SPLIT_CODES:
        lesion_image_dir(out, split).mkdir(parents=True, exist_ok=True)
        for key in keys:
            lesion_gt_dir(out, split, key).mkdir(parents=True, exist_ok=True)
    for split, index, name in tqdm(jobs, desc="idrid sample data", unit="case"):
        rng = np.random.default_rng([seed, _SPLIT_CODES[split], index])
        drawn = bool(rng.random() < _SE_RATE)  # drawn for every case, so later draws never shift
        with_se = drawn if index >= 2 else index == 0
        counts = {
            "ma": int(rng.integers(8, 31)),
            "he": int(rng.integers(2, 11)),
            "ex": int(rng.integers(2, 7)),
            "se": int(rng.integers(1, 4)) if with_se else 0,
        }
        image, masks = _Fundus(rng, height, width).draw(counts)
        Image.fromarray(image).save(lesion_image_dir(out, split) / f"{name}.jpg", quality=95)
        for key in keys:
            if masks[key].any():
                write_idrid_mask(lesion_gt_dir(out, split, key) / lesion_mask_name(name, key), masks[key])


def make_idrid_grading_sample_data(
    out: Path,
    cases: int = 24,
    test_cases: int = 8,
    seed: int = 0,
    size: tuple[int, int] = DEFAULT_GRADING_SIZE,
) -> None:
    """Write a synthetic sub-challenge B data set: images and both official label CSVs.

    Lesions grow in number with the retinopathy grade (0: none; 1: a few microaneurysms; 2: also
    haemorrhages; 3 and 4: many haemorrhages, soft exudates), and the macular edema risk decides
    where hard exudates lie (0: none; 1: more than one disc diameter from the fovea; 2: within
    one disc diameter), so both grades are learnable. Grades follow the official training set's
    joint distribution, after fixed grades for the first cases of each split. The CSVs are
    written exactly as the official ones: CRLF, names without ``.jpg``, and nine empty trailing
    columns in the training file.

    Args:
        out: Existing, empty folder that becomes the data root (it receives ``B. Disease Grading``).
        cases: Number of training images (IDRiD_001 ... at most 413).
        test_cases: Number of testing images (IDRiD_001 ... at most 103), with labels.
        seed: Seed of everything random; equal arguments give byte-identical files.
        size: Image (height, width); the official size is 2848×4288.

    Raises:
        ValueError: a count or the seed is negative, more images than the official sets hold,
            or the size is too small.
    """
    _check_counts(cases, test_cases, seed, GRADING_TRAIN_CASES, GRADING_TEST_CASES)
    height, width = size
    _check_size(height, width)
    out = Path(out)
    grades: dict[str, list[tuple[str, tuple[int, int]]]] = {"train": [], "test": []}
    jobs = [("train", i) for i in range(cases)] + [("test", i) for i in range(test_cases)]
    for split in _SPLIT_CODES:
        grading_image_dir(out, split).mkdir(parents=True, exist_ok=True)
    for split, index in tqdm(jobs, desc="idrid grading sample data", unit="case"):
        rng = np.random.default_rng([seed, 10 + _SPLIT_CODES[split], index])
        dr, dme = _case_grades(rng, split, index)
        name = f"IDRiD_{index + 1:03d}"
        image, _ = _Fundus(rng, height, width).draw(_grading_counts(rng, dr, dme), dme=dme)
        Image.fromarray(image).save(grading_image_dir(out, split) / f"{name}.jpg", quality=95)
        grades[split].append((name, (dr, dme)))
    for split, rows in grades.items():
        empty = "," * _TRAIN_CSV_EMPTY_COLUMNS if split == "train" else ""
        lines = [",".join(GRADING_COLUMNS) + empty]
        lines += [f"{name},{dr},{dme}{empty}" for name, (dr, dme) in rows]
        path = grading_label_file(out, split)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(("\r\n".join(lines) + "\r\n").encode("ascii"))


def _check_counts(cases: int, test_cases: int, seed: int, max_train: int, max_test: int) -> None:
    if cases < 0 or test_cases < 0 or seed < 0:
        raise ValueError(f"cases, test_cases and seed must be >= 0; got {cases}, {test_cases}, {seed}")
    if cases > max_train or test_cases > max_test:
        raise ValueError(
            f"the official IDRiD sets have {max_train} training and {max_test} testing images; "
            f"asked for {cases} and {test_cases}"
        )


def _check_size(height: int, width: int) -> None:
    if height < 64 or width < 64:
        raise ValueError(f"sample images must be at least 64x64; got {width}x{height}")


def _case_grades(rng: np.random.Generator, split: str, index: int) -> tuple[int, int]:
    # Draw even for forced cases so that the generator's later state is the same either way.
    pairs = list(_JOINT_GRADES)
    weights = np.array([_JOINT_GRADES[p] for p in pairs], dtype=float)
    drawn = pairs[int(rng.choice(len(pairs), p=weights / weights.sum()))]
    forced = _FORCED_GRADES[split]
    dr, dme = forced[index] if index < len(forced) else drawn
    assert 0 <= dr < DR_GRADES and 0 <= dme < DME_GRADES
    return dr, dme


def _grading_counts(rng: np.random.Generator, dr: int, dme: int) -> dict[str, int]:
    """Lesion counts that grow with the retinopathy grade; exudate clusters only with DME risk."""
    ma = (0, (3, 7), (6, 14), (10, 22), (14, 28))[dr]
    he = (0, 0, (1, 4), (6, 12), (10, 18))[dr]
    se = (0, 0, 0, (0, 2), (1, 4))[dr]
    counts = {
        key: 0 if span == 0 else int(rng.integers(span[0], span[1] + 1))
        for key, span in (("ma", ma), ("he", he), ("se", se))
    }
    counts["ex"] = 0 if dme == 0 else int(rng.integers(2, 5))
    return counts


class _Fundus:
    """One synthetic fundus photograph being drawn: the image and a mask per class."""

    def __init__(self, rng: np.random.Generator, height: int, width: int) -> None:
        self.rng, self.height, self.width = rng, height, width
        h, w = height, width
        self.scale = w / _REFERENCE_WIDTH
        # The field of view is wider than the image is high, so the circle is cut top and bottom.
        self.centre = np.array([h / 2 + rng.uniform(-0.02, 0.02) * h, w / 2 + rng.uniform(-0.015, 0.015) * w])
        self.radius = w * rng.uniform(0.4, 0.43)
        side = rng.choice([-1.0, 1.0])  # which eye: the disc lies left or right of the fovea
        self.fovea = self.centre + np.array([rng.uniform(-0.03, 0.03) * h, -side * rng.uniform(0.0, 0.03) * w])
        self.disc_radius = w * rng.uniform(0.048, 0.058)
        self.disc = self.fovea + np.array([-rng.uniform(0.0, 0.05) * h, side * rng.uniform(0.24, 0.27) * w])
        self.masks = {key: np.zeros((h, w), bool) for key in LESION_FOLDERS}
        self.occupied = np.zeros((h, w), bool)
        self.image = np.zeros((h, w, 3), np.float32)
        self.fov_distance = np.zeros((h, w), np.float32)

    # -- background -------------------------------------------------------------------------

    def _background(self) -> None:
        h, w, rng = self.height, self.width, self.rng
        yy, xx = np.ogrid[:h, :w]
        yy = yy.astype(np.float32)
        xx = xx.astype(np.float32)
        d2 = (yy - np.float32(self.centre[0])) ** 2 + (xx - np.float32(self.centre[1])) ** 2
        self.fov_distance = np.sqrt(d2)
        illumination = 1.0 - np.float32(rng.uniform(0.35, 0.5)) * (d2 / np.float32(self.radius**2))
        fovea_d2 = (yy - np.float32(self.fovea[0])) ** 2 + (xx - np.float32(self.fovea[1])) ** 2
        sigma = np.float32(0.07 * w)
        macula = 1.0 - np.float32(rng.uniform(0.3, 0.45)) * np.exp(-fovea_d2 / (2 * sigma * sigma))
        shade = illumination * macula * self._texture()
        base = np.array([rng.uniform(190, 225), rng.uniform(72, 100), rng.uniform(22, 42)], np.float32)
        self.image = shade[..., None] * base
        # Lesions stay away from the edge of the field of view.
        self.occupied |= self.fov_distance > self.radius * 0.9

    def _texture(self) -> np.ndarray:
        """Slowly varying choroidal texture around 1 (a coarse noise grid, smoothly upsampled)."""
        coarse = ndimage.gaussian_filter(self.rng.normal(0.0, 1.0, (24, 36)), 1.2).astype(np.float32)
        coarse = 1.0 + 0.06 * coarse / max(float(coarse.std()), 1e-6)
        field = Image.fromarray(coarse).resize((self.width, self.height), Image.Resampling.BILINEAR)
        return np.asarray(field, np.float32)

    # -- optic disc and vessels ---------------------------------------------------------------

    def _optic_disc(self) -> None:
        rng, r = self.rng, self.disc_radius
        box = self._box(self.disc, r * 1.3)
        yy, xx = np.mgrid[box].astype(np.float32)
        dist = np.hypot(yy - self.disc[0], xx - self.disc[1])
        # Weight 0.5 exactly on the rim: the mask is the disc, the glow fades just outside it.
        weight = np.clip((r - dist) / (0.15 * r) + 0.5, 0.0, 1.0)
        cup = np.exp(-(dist**2) / (2 * (0.35 * r) ** 2))
        colour = np.array([rng.uniform(240, 255), rng.uniform(185, 215), rng.uniform(110, 150)], np.float32)
        disc_colour = colour * (0.9 + 0.12 * cup)[..., None]
        region = self.image[box]
        region[:] = region * (1.0 - weight[..., None]) + disc_colour * weight[..., None]
        self.masks["od"][box] = dist <= r
        self.occupied[box] |= dist <= r * 1.4

    def _walk(self, start: np.ndarray, heading: float, steps: int, bend: float) -> list[tuple[float, float]]:
        """A smooth curve of (x, y) points from ``start`` (y, x), stopping at the field of view."""
        step = 6.0 * self.scale
        turns = ndimage.gaussian_filter1d(self.rng.normal(0.0, 0.03, steps), 3.0) * 3.0 + bend
        angles = heading + np.cumsum(turns)
        points = start[::-1] + np.cumsum(np.stack([np.cos(angles), np.sin(angles)], axis=1) * step, axis=0)
        inside = np.hypot(points[:, 1] - self.centre[0], points[:, 0] - self.centre[1]) < self.radius * 0.98
        keep = int(np.argmin(inside)) if not inside.all() else len(points)
        return [tuple(start[::-1])] + [tuple(p) for p in points[:keep]]

    def _vessels(self) -> None:
        rng, s = self.rng, self.scale
        canvas = Image.new("L", (self.width, self.height), 0)
        draw = ImageDraw.Draw(canvas)
        towards_fovea = 1.0 if self.fovea[1] > self.disc[1] else -1.0
        steps = int(self.radius * 1.5 / (6.0 * s))
        # Four arcades (upper/lower, temporal/nasal) curving around the macula, then a few small ones.
        trunks = []
        for vertical in (-1.0, 1.0):
            temporal = np.arctan2(vertical * rng.uniform(0.8, 1.2), towards_fovea * 0.5)
            trunks.append((temporal, -vertical * towards_fovea * rng.uniform(0.011, 0.015), rng.uniform(5.0, 6.5)))
            nasal = np.arctan2(vertical * rng.uniform(0.6, 1.0), -towards_fovea)
            trunks.append((nasal, vertical * towards_fovea * rng.uniform(0.0, 0.004), rng.uniform(4.0, 5.5)))
        for _ in range(int(rng.integers(2, 5))):
            trunks.append((rng.uniform(0, 2 * np.pi), 0.0, rng.uniform(2.0, 3.0)))
        stack = [(self.disc, heading, bend, width, steps, 0) for heading, bend, width in trunks]
        while stack:
            start, heading, bend, width, n, depth = stack.pop()
            points = self._walk(start, heading, n, bend)
            if len(points) < 2:
                continue
            draw.line(points, fill=255, width=max(1, round(width * s)), joint="curve")
            if depth >= 3 or width < 1.5:
                continue
            for _ in range(int(rng.integers(1, 4))):
                at = int(rng.integers(len(points) // 4, max(len(points) // 4 + 1, len(points) - 1)))
                if at >= len(points) - 1:
                    continue
                direction = float(np.arctan2(*(np.subtract(points[at + 1], points[at]))[::-1]))
                child = direction + rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0)
                origin = np.array(points[at][::-1])
                stack.append((origin, child, 0.0, width * rng.uniform(0.45, 0.65), int(n * 0.5), depth + 1))
        canvas = canvas.filter(ImageFilter.GaussianBlur(radius=0.6 * s))
        vessels = np.asarray(canvas, np.float32) / 255.0
        darkening = np.array([0.45, 0.62, 0.55], np.float32) * np.float32(rng.uniform(0.8, 1.0))
        self.image *= 1.0 - vessels[..., None] * darkening

    # -- lesions ------------------------------------------------------------------------------

    def _box(self, centre: np.ndarray, reach: float) -> tuple[slice, slice]:
        cy, cx = centre
        y0, y1 = (int(np.clip(v, 0, self.height)) for v in (np.floor(cy - reach), np.ceil(cy + reach) + 1))
        x0, x1 = (int(np.clip(v, 0, self.width)) for v in (np.floor(cx - reach), np.ceil(cx + reach) + 1))
        return slice(y0, y1), slice(x0, x1)

    def _blob(
        self, centre: np.ndarray, radius: float, rough: float, aspect: float = 1.0
    ) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
        """A smooth irregular (optionally elongated) blob: its box, the boolean blob and distances."""
        reach = radius * aspect * (1.0 + 2.0 * rough) + 2.0
        box = self._box(centre, reach)
        yy, xx = np.mgrid[box].astype(np.float32)
        dy, dx = yy - centre[0], xx - centre[1]
        angle = self.rng.uniform(0, np.pi)
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = -dx * np.sin(angle) + dy * np.cos(angle)
        rho = np.hypot(u / aspect, v)
        theta = np.arctan2(v, u)
        outline = np.ones_like(theta)
        for k in range(2, 5):
            outline += self.rng.normal(0.0, rough / k) * np.cos(k * theta + self.rng.uniform(0, 2 * np.pi))
        relative = rho / (radius * np.clip(outline, 0.5, 1.0 + 2.0 * rough))
        return box, relative <= 1.0, relative

    def _place(self, region: tuple[float, float] | None = None) -> np.ndarray | None:
        """A free random centre in the field of view, or at a fovea distance within ``region``."""
        rng = self.rng
        for _ in range(30):
            if region is None:
                centre = self.centre + rng.uniform(-1.0, 1.0, 2) * self.radius * 0.85
            else:
                angle = rng.uniform(0, 2 * np.pi)
                centre = self.fovea + rng.uniform(*region) * np.array([np.sin(angle), np.cos(angle)])
            y, x = round(centre[0]), round(centre[1])
            if 0 <= y < self.height and 0 <= x < self.width and not self.occupied[y, x]:
                return centre
        return None

    def _paint(
        self,
        key: str,
        box: tuple[slice, slice],
        mask: np.ndarray,
        alpha: np.ndarray,
        colour: np.ndarray,
        halo: np.ndarray | None = None,
    ) -> bool:
        """Paint a lesion if it is free of other classes; record its mask and occupancy."""
        footprint = mask if halo is None else (mask | halo)
        if not mask.any() or (self.occupied[box] & footprint & ~self.masks[key][box]).any():
            return False
        region = self.image[box]
        a = alpha[..., None]
        region[:] = region * (1.0 - a) + colour * a
        self.masks[key][box] |= mask
        # Other classes keep a 1-2 px gap, so JPEG ringing never crosses into a neighbour's mask.
        self.occupied[box] |= ndimage.binary_dilation(footprint, iterations=2)
        return True

    def _microaneurysm(self) -> bool:
        s, rng = self.scale, self.rng
        centre = self._place()
        if centre is None:
            return False
        radius = max(rng.uniform(1.5, 4.0) * s, 1.0)
        box, mask, _ = self._blob(centre, radius, 0.05)
        colour = np.array([rng.uniform(115, 150), rng.uniform(22, 40), rng.uniform(15, 30)], np.float32)
        return self._paint("ma", box, mask, mask * np.float32(rng.uniform(0.85, 1.0)), colour)

    def _haemorrhage(self) -> bool:
        s, rng = self.scale, self.rng
        centre = self._place()
        if centre is None:
            return False
        radius = max(rng.uniform(5.0, 18.0) * s, 2.0)
        aspect = rng.uniform(1.0, 2.2)  # flame-shaped ones are elongated
        box, mask, relative = self._blob(centre, radius, 0.2, aspect)
        colour = np.array([rng.uniform(100, 140), rng.uniform(18, 35), rng.uniform(12, 25)], np.float32)
        alpha = mask * (0.8 + 0.15 * np.clip(1.0 - relative, 0.0, 1.0))
        return self._paint("he", box, mask, alpha.astype(np.float32), colour)

    def _exudate_cluster(self, region: tuple[float, float] | None) -> bool:
        s, rng = self.scale, self.rng
        centre = self._place(region)
        if centre is None:
            return False
        spread = rng.uniform(8.0, 30.0) * s
        colour = np.array([rng.uniform(235, 255), rng.uniform(205, 232), rng.uniform(60, 110)], np.float32)
        painted = False
        for n in range(int(rng.integers(4, 16))):
            # The first speck sits on the chosen (free) centre, so a cluster is never empty by chance.
            speck = centre if n == 0 else centre + rng.normal(0.0, spread / 2, 2)
            y, x = round(speck[0]), round(speck[1])
            if not (0 <= y < self.height and 0 <= x < self.width):
                continue
            box, mask, _ = self._blob(speck, max(rng.uniform(1.5, 5.5) * s, 1.0), 0.25)
            painted |= self._paint("ex", box, mask, mask * np.float32(rng.uniform(0.85, 1.0)), colour)
        return painted

    def _soft_exudate(self) -> bool:
        s, rng = self.scale, self.rng
        centre = self._place()
        if centre is None:
            return False
        radius = max(rng.uniform(9.0, 22.0) * s, 3.0)
        box, blob, _ = self._blob(centre, radius * 1.2, 0.2, rng.uniform(1.0, 1.6))
        opacity = ndimage.gaussian_filter(blob.astype(np.float32), max(0.3 * radius, 1.0))
        opacity /= max(float(opacity.max()), 1e-6)
        mask = opacity >= 0.5
        colour = np.array([rng.uniform(225, 245), rng.uniform(200, 222), rng.uniform(160, 190)], np.float32)
        alpha = opacity * np.float32(rng.uniform(0.8, 0.95))
        return self._paint("se", box, mask, alpha, colour, halo=opacity > 0.02)

    def _lesions(self, count: int, draw_one: Callable[[], bool]) -> None:
        """Draw ``count`` lesions, retrying a few times where one would touch another."""
        for _ in range(count):
            for _attempt in range(_ATTEMPTS):
                if draw_one():
                    break

    # -- the whole picture ----------------------------------------------------------------------

    def draw(self, counts: dict[str, int], dme: int | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Draw background, disc, vessels and ``counts`` lesions; return the uint8 RGB image and masks.

        ``counts["ex"]`` is a number of exudate clusters. With ``dme`` (grading), clusters lie more
        than one disc diameter from the fovea (1) or at least one within it (2).
        """
        self._background()
        self._optic_disc()
        self._vessels()
        # Large lesions first, while there is room; every lesion keeps clear of the others.
        self._lesions(counts.get("se", 0), self._soft_exudate)
        self._lesions(counts.get("he", 0), self._haemorrhage)
        diameter = 2.0 * self.disc_radius
        for n in range(counts.get("ex", 0)):
            region = None
            if dme == 1:
                region = (1.3 * diameter, 3.0 * diameter)
            elif dme == 2:
                region = (0.0, 0.8 * diameter) if n == 0 else (0.0, 2.5 * diameter)
            self._lesions(1, lambda region=region: self._exudate_cluster(region))
        self._lesions(counts.get("ma", 0), self._microaneurysm)
        rng = self.rng
        edge = np.clip(self.radius - self.fov_distance + 0.5, 0.0, 1.0)
        self.image *= edge[..., None]
        noise = rng.standard_normal(self.image.shape, dtype=np.float32)
        self.image += noise * (1.0 + 1.5 * edge[..., None])
        image = np.clip(self.image, 0, 255).round().astype(np.uint8)
        return image, self.masks
