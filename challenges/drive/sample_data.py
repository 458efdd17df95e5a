"""Synthetic DRIVE data set in the official layout and file formats.

Each case is a 565×584 colour fundus photograph (RGB TIF, LZW like the originals) with a circular
field of view (~540 px across) on black, an orange-red fundus with an illumination gradient and
vignetting, a bright optic disc and a darker macula, and a vessel tree: arcades and nasal
trunks leave the optic disc, curve, and branch into ever thinner vessels. Vessels are darker than
the background, most in the green channel. The manual vessel mask (GIF, 0/255, read by Pillow as
mode ``"L"`` like the real ones) is exactly the drawn vessel pixels inside the field of view, so the
image and its ground truth agree pixel for pixel; the FOV mask (GIF, 0/255) is the circle.

Names are the official ones: training ``21_training`` … ``40_training``, test ``01_test`` …
``20_test``. DRIVE has 20 images per split, so at most 20 per split can be made. Case ``i`` of a
split is generated from its own generator seeded by ``(seed, split, i)``. Pillow writes GIF87a
where the originals are GIF89a; both decode to the same mode-``"L"`` 0/255 arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from eyegc.challenges.drive.layout import FOV_DIR, IMAGE_SIZE, IMAGES_DIR, MANUAL_DIR, SPLIT_DIRS, manual_name
from PIL import Image, ImageDraw
from scipy import ndimage
from tqdm import tqdm

__all__ = ["MAX_CASES_PER_SPLIT", "make_drive_case", "make_drive_sample_data", "sample_case_ids"]

MAX_CASES_PER_SPLIT = 20
HEIGHT, WIDTH = IMAGE_SIZE
_FIRST_NUMBER = {"train": 21, "test": 1}
_SPLIT_CODES = {"train": 0, "test": 1}
_SUFFIX = {"train": "training", "test": "test"}


def sample_case_ids(split: str, count: int) -> list[str]:
    """The official case ids of the first ``count`` cases of a split (``21_training``, ``01_test``)."""
    first = _FIRST_NUMBER[split]
    return [f"{first + i:02d}_{_SUFFIX[split]}" for i in range(count)]


def make_drive_sample_data(out: Path, cases: int = 20, test_cases: int = 20, seed: int = 0) -> None:
    """Write a synthetic DRIVE data set (images, manual vessel masks and FOV masks of both splits).

    The test split has ground truth too, for local scoring. A split with no cases gets no folder.

    Args:
        out: existing, empty folder that becomes the DRIVE root (``training/``, ``test/``).
        cases: number of training images (at most 20).
        test_cases: number of test images (at most 20).
        seed: seed of everything random; equal arguments give byte-identical files.

    Raises:
        ValueError: a count or the seed is negative, or a count exceeds 20.
    """
    if cases < 0 or test_cases < 0 or seed < 0:
        raise ValueError(f"cases, test_cases and seed must be >= 0; got {cases}, {test_cases}, {seed}")
    if max(cases, test_cases) > MAX_CASES_PER_SPLIT:
        raise ValueError(
            f"DRIVE has {MAX_CASES_PER_SPLIT} images per split (21-40 training, 01-20 test); "
            f"asked for {cases} training and {test_cases} test cases"
        )
    out = Path(out)
    jobs = [("train", i) for i in range(cases)] + [("test", i) for i in range(test_cases)]
    for split, count in (("train", cases), ("test", test_cases)):
        if count:
            for sub in (IMAGES_DIR, MANUAL_DIR, FOV_DIR):
                (out / SPLIT_DIRS[split] / sub).mkdir(parents=True, exist_ok=True)
    for split, index in tqdm(jobs, desc="drive sample data", unit="case"):
        case_id = sample_case_ids(split, index + 1)[-1]
        image, vessels, fov = make_drive_case(np.random.default_rng([seed, _SPLIT_CODES[split], index]))
        folder = out / SPLIT_DIRS[split]
        Image.fromarray(image, mode="RGB").save(folder / IMAGES_DIR / f"{case_id}.tif", compression="tiff_lzw")
        _save_gif(folder / MANUAL_DIR / manual_name(case_id), vessels)
        _save_gif(folder / FOV_DIR / f"{case_id}_mask.gif", fov)


def _save_gif(path: Path, mask: np.ndarray) -> None:
    # optimize=False keeps a full grey palette, so Pillow reads it back as mode "L" with 0/255.
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path, format="GIF", optimize=False)


def make_drive_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic case: the ``(584, 565, 3)`` uint8 RGB image, the vessel mask and the FOV, both bool."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    centre = np.array([WIDTH / 2 + rng.uniform(-4, 4), HEIGHT / 2 + rng.uniform(-4, 4)])
    radius = rng.uniform(266.0, 272.0)
    rho = np.hypot(xx - centre[0], yy - centre[1])
    fov = rho < radius
    # Optic disc on the left or right (left or right eye), the macula ~2.5 disc diameters across.
    side = rng.choice([-1.0, 1.0])
    disc = centre + np.array([side * rng.uniform(150.0, 185.0), rng.uniform(-25.0, 25.0)])
    macula = centre + np.array([-side * rng.uniform(20.0, 50.0), rng.uniform(-15.0, 15.0)])
    vessels = _vessel_tree(rng, disc, macula, centre, radius) & fov

    # Background fundus: colour, illumination gradient, vignetting, disc and macula.
    angle = rng.uniform(0, 2 * np.pi)
    gradient = (
        1.0 + rng.uniform(0.08, 0.2) * ((xx - centre[0]) * np.cos(angle) + (yy - centre[1]) * np.sin(angle)) / radius
    )
    vignette = 1.0 - rng.uniform(0.25, 0.4) * (rho / radius) ** 3
    light = (gradient * vignette).astype(np.float32)
    macula_dip = 1.0 - rng.uniform(0.2, 0.3) * np.exp(-((xx - macula[0]) ** 2 + (yy - macula[1]) ** 2) / (2 * 45.0**2))
    disc_glow = np.exp(-((((xx - disc[0]) ** 2 + (yy - disc[1]) ** 2) / (2 * rng.uniform(22.0, 28.0) ** 2)) ** 2))
    # Coarse noise zoomed up (to exactly HEIGHT x WIDTH): the choroid's slow blotches.
    texture = ndimage.zoom(rng.normal(0.0, 1.0, (37, 37)).astype(np.float32), (HEIGHT / 37, WIDTH / 37), order=1)
    base = np.array([rng.uniform(185, 215), rng.uniform(100, 130), rng.uniform(55, 85)], np.float32)
    disc_colour = np.array([250.0, 215.0, 160.0], np.float32)
    # Darkening inside vessels per channel: strongest in green, weakest in red (as in fundus photos).
    contrast = np.array([rng.uniform(0.06, 0.1), rng.uniform(0.3, 0.4), rng.uniform(0.15, 0.22)], np.float32)
    image = np.empty((HEIGHT, WIDTH, 3), np.float32)
    vessel_layer = vessels.astype(np.float32)
    for c in range(3):
        channel = base[c] * light * macula_dip * (1.0 + 0.03 * texture)
        channel = channel * (1 - disc_glow) + disc_colour[c] * light * disc_glow
        channel *= 1.0 - contrast[c] * vessel_layer
        image[..., c] = channel
    image = ndimage.gaussian_filter(image, (0.6, 0.6, 0))
    image += rng.normal(0.0, 2.5, image.shape).astype(np.float32)
    # Outside the field of view: the camera's near-black surround.
    image[~fov] = rng.uniform(0.0, 6.0, (int((~fov).sum()), 3)).astype(np.float32)
    return np.clip(image, 0, 255).round().astype(np.uint8), vessels, fov


def _walk(
    rng: np.random.Generator, start: np.ndarray, heading: float, steps: int, bend: float, step: float = 4.0
) -> np.ndarray:
    """Smooth curve of ``steps`` moves, a steady ``bend`` (rad/step) plus wiggle: ``(steps + 1, 2)`` in (x, y)."""
    curvature = bend + ndimage.gaussian_filter1d(rng.normal(0.0, 0.06, steps), 3.0) * 0.9
    angles = heading + np.cumsum(curvature)
    moves = np.stack([np.cos(angles), np.sin(angles)], axis=1) * step
    return np.vstack([start, start + np.cumsum(moves, axis=0)])


def _vessel_tree(
    rng: np.random.Generator, disc: np.ndarray, macula: np.ndarray, centre: np.ndarray, radius: float
) -> np.ndarray:
    """Boolean mask of a branching vessel tree rooted at the optic disc."""
    canvas = Image.new("1", (WIDTH, HEIGHT), 0)
    draw = ImageDraw.Draw(canvas)
    towards_macula = float(np.arctan2(*(macula - disc)[::-1]))
    stack: list[tuple[np.ndarray, float, float, float, int]] = []
    # Two arcades curving around the macula (upper and lower) and two to three nasal trunks.
    for vertical in (-1.0, 1.0):
        heading = towards_macula + vertical * rng.uniform(0.9, 1.2) * np.sign(np.cos(towards_macula))
        bend = -vertical * rng.uniform(0.010, 0.016) * np.sign(np.cos(towards_macula))
        for _ in range(2):  # artery and vein run side by side
            stack.append((disc.copy(), heading + rng.uniform(-0.15, 0.15), rng.uniform(6.0, 8.0), bend, 0))
    for _ in range(int(rng.integers(2, 4))):
        heading = towards_macula + np.pi + rng.uniform(-1.3, 1.3)
        stack.append((disc.copy(), heading, rng.uniform(4.0, 6.0), rng.uniform(-0.008, 0.008), 0))
    while stack:
        start, heading, width, bend, depth = stack.pop()
        steps = int(width * rng.uniform(10.0, 18.0)) + 12
        points = _walk(rng, start, heading, steps, bend)
        inside = np.hypot(*(points - centre).T) < radius + 4
        stop = int(np.argmin(inside)) if not inside.all() else len(points)
        points = points[: max(stop, 2)]
        begin = 0
        while begin < len(points) - 1:
            end = min(begin + int(rng.integers(8, 20)), len(points) - 1)
            draw.line([tuple(p) for p in points[begin : end + 1]], fill=1, width=max(1, round(width)), joint="curve")
            if end < len(points) - 1 and depth < 6 and width > 1.3 and rng.random() < 0.6:
                direction = float(np.arctan2(*(points[end] - points[end - 1])[::-1]))
                child = max(width * rng.uniform(0.45, 0.7), 1.0)
                turn = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.1)
                stack.append((points[end].copy(), direction + turn, child, rng.uniform(-0.02, 0.02), depth + 1))
                width = max(width * 0.88, 1.0)
            begin = end
    return np.asarray(canvas, dtype=bool)
