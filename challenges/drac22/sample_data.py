"""Synthetic DRAC22 data sets in the official folder layouts (Task 1 masks; Tasks 2 and 3 label CSVs).

The images mimic ultra-wide-field OCT angiography (dark fundus, bright vessel tree, dense
capillary mesh) and the three lesion classes are drawn exactly where their masks are, so a
small segmentation network can learn them in minutes:

* NPA (nonperfusion area): large smooth blobs with no capillaries, darker and less noisy.
* IRMA: small clusters of dilated, tortuous, bright vessel segments, often at an NPA border.
* NV: fan-shaped, very bright, lacy tufts of fine loops.

Tasks 2 and 3 take the same images with a grade that shows: image quality degrades them (poor:
strong blur, noise and motion stripes; good: mild blur and noise; excellent: as drawn), the DR
grade decides the lesions (normal: none; NPDR: nonperfusion, with IRMA in every other case; PDR:
also neovascularisation).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from eyegc.challenges.drac22.grading_layout import GradingLayout
from eyegc.challenges.drac22.layout import CLASS_FOLDERS, gt_class_dir, image_dir
from PIL import Image, ImageDraw
from scipy import fft, ndimage
from tqdm import tqdm

__all__ = ["make_drac22_grading_sample_data", "make_drac22_sample_data"]

SIZE = 1024
#: Share of images showing each class in the real training set (roughly).
CLASS_RATES = {"irma": 0.65, "npa": 0.80, "nv": 0.35}
#: Names the organisers' test set is known to hold; tools must cope with their zero padding.
FIXED_TEST_NAMES = (86, 402, 1299)
MAX_NAME = 1500
_SPLIT_CODES = {"train": 0, "test": 1}
# The first cases of each split get fixed class sets so that every class is scored in small
# sets and absent mask files occur; later cases draw their classes at the real rates.
_FORCED_CLASSES = {
    "train": [
        {"irma", "npa", "nv"},
        {"npa", "nv"},
        {"irma"},
        {"irma", "npa"},
        {"npa", "nv"},
    ],
    "test": [{"irma", "npa", "nv"}, {"npa"}, {"irma", "npa"}],
}


def make_drac22_sample_data(out: Path, cases: int = 24, test_cases: int = 8, seed: int = 0) -> None:
    """Write a synthetic DRAC22 Task 1 data set (images and ground truth of both splits).

    Case ``i`` of a split is generated from its own generator seeded by ``(seed, split, i)``,
    so a larger ``cases`` keeps the first cases, and the test split never depends on ``cases``.

    Args:
        out: Existing, empty folder that becomes the data root (it receives ``A. Segmentation``).
        cases: Number of training images.
        test_cases: Number of test images (with ground truth, for local scoring).
        seed: Seed of everything random; equal arguments give byte-identical files.

    Raises:
        ValueError: a count or the seed is negative, or more images are asked for than names exist.
    """
    out = Path(out)
    jobs = _jobs(cases, test_cases, seed)
    for split in _SPLIT_CODES:
        image_dir(out, split).mkdir(parents=True, exist_ok=True)
        for key in CLASS_FOLDERS:
            gt_class_dir(out, split, key).mkdir(parents=True, exist_ok=True)
    for split, index, name in tqdm(jobs, desc="drac22 sample data", unit="case"):
        rng = np.random.default_rng([seed, _SPLIT_CODES[split], index])
        image, masks = _make_case(rng, _case_classes(rng, split, index), overlap=index == 0)
        file_name = f"{name:03d}.png"
        Image.fromarray(image).save(image_dir(out, split) / file_name)
        for key, mask in masks.items():
            Image.fromarray(mask.astype(np.uint8) * 255).save(gt_class_dir(out, split, key) / file_name)


def make_drac22_grading_sample_data(
    out: Path, layout: GradingLayout, cases: int = 24, test_cases: int = 8, seed: int = 0
) -> None:
    """Write a synthetic DRAC22 Task 2 or Task 3 data set: images of both splits and their label CSVs.

    Grades cycle 0, 1, 2 through each split, so every set of three or more covers all grades. The
    CSVs are written as the public code reads the training one: ``image name,<grade column>``,
    names with ``.png``; the testing CSV (never published) in the same form.

    Raises:
        ValueError: a count or the seed is negative, or more images are asked for than names exist.
    """
    out = Path(out)
    jobs = _jobs(cases, test_cases, seed)
    rows = {split: [",".join(layout.header)] for split in ("train", "test")}
    for split in rows:
        layout.image_dir(out, split).mkdir(parents=True, exist_ok=True)
    for split, index, name in tqdm(jobs, desc=f"drac22 task {layout.task} sample data", unit="case"):
        rng = np.random.default_rng([seed, 10 * layout.task + _SPLIT_CODES[split], index])
        grade = index % 3
        if layout.task == 2:
            classes = {key for key, rate in CLASS_RATES.items() if rng.random() < rate}
            image = _degraded(rng, _make_case(rng, classes, overlap=False)[0], grade)
        else:
            classes = _DR_CLASSES[grade] | ({"irma"} if grade and index % 2 else set())
            image = _make_case(rng, classes, overlap=False)[0]
        Image.fromarray(image).save(layout.image_dir(out, split) / f"{name:03d}.png")
        rows[split].append(f"{name:03d}.png,{grade}")
    layout.label_dir(out).mkdir(parents=True, exist_ok=True)
    for split, lines in rows.items():
        (layout.label_dir(out) / layout.label_files[split]).write_text("\n".join(lines) + "\n", encoding="utf-8")


#: Task 3: the lesions each DR grade shows (IRMA is added to every other NPDR and PDR case).
_DR_CLASSES: dict[int, set[str]] = {0: set(), 1: {"npa"}, 2: {"npa", "nv"}}


def _degraded(rng: np.random.Generator, image: np.ndarray, quality: int) -> np.ndarray:
    """Task 2: the image as a scan of that quality (0 poor, 1 good, 2 excellent) would show it."""
    if quality == 2:
        return image
    blur, noise = (2.5, 28.0) if quality == 0 else (1.0, 10.0)
    out = ndimage.gaussian_filter(image.astype(np.float32), blur)
    out += noise * rng.standard_normal(out.shape, dtype=np.float32)
    if quality == 0:  # motion artefacts: bright and dark horizontal stripes
        for row in rng.integers(0, SIZE - 12, 6):
            out[row : row + rng.integers(3, 12)] += rng.choice([-60.0, 60.0])
    return np.clip(out, 0, 255).round().astype(np.uint8)


def _jobs(cases: int, test_cases: int, seed: int) -> list[tuple[str, int, int]]:
    """``(split, index, name)`` of every image to write, training images first.

    Raises:
        ValueError: a count or the seed is negative, or more images are asked for than names exist.
    """
    if cases < 0 or test_cases < 0 or seed < 0:
        raise ValueError(f"cases, test_cases and seed must be >= 0; got {cases}, {test_cases}, {seed}")
    if cases + test_cases > MAX_NAME:
        raise ValueError(f"at most {MAX_NAME} images can be named; asked for {cases + test_cases}")
    test_names = _test_names(test_cases, seed)
    train_names = _train_names(cases, seed, set(test_names))
    return [("train", i, name) for i, name in enumerate(train_names)] + [
        ("test", i, name) for i, name in enumerate(test_names)
    ]


def _draw_names(rng: np.random.Generator, count: int, taken: set[int], ranges: Sequence[tuple[int, int]]) -> list[int]:
    """Draw ``count`` new names; the i-th comes from ``ranges[i]`` (the last range repeats)."""
    names: list[int] = []
    while len(names) < count:
        low, high = ranges[min(len(names), len(ranges) - 1)]
        if taken.issuperset(range(low, high + 1)):  # that range is used up: draw from the last (all names)
            low, high = ranges[-1]
        name = int(rng.integers(low, high + 1))
        if name not in taken:
            taken.add(name)
            names.append(name)
    return names


def _test_names(count: int, seed: int) -> list[int]:
    names = list(FIXED_TEST_NAMES[:count])
    rng = np.random.default_rng([seed, 2])
    return names + _draw_names(rng, count - len(names), set(names), [(1, MAX_NAME)])


def _train_names(count: int, seed: int, taken: set[int]) -> list[int]:
    # The first two names make sure readers meet both a zero-padded and a four-digit name.
    rng = np.random.default_rng([seed, 3])
    return _draw_names(rng, count, set(taken), [(1, 99), (1000, MAX_NAME), (1, MAX_NAME)])


def _case_classes(rng: np.random.Generator, split: str, index: int) -> set[str]:
    # Draw even for forced cases so that the generator's later state is the same either way.
    drawn = {key for key, rate in CLASS_RATES.items() if rng.random() < rate}
    forced = _FORCED_CLASSES[split]
    return forced[index] if index < len(forced) else drawn


def _make_case(rng: np.random.Generator, classes: set[str], overlap: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One OCTA-like image and the boolean masks of the classes it shows."""
    base = rng.uniform(22.0, 34.0) * _smooth_field(rng, 0.8, 1.2)
    vessels = _vessel_layer(rng)
    capillaries = _capillary_layer(rng)
    masks: dict[str, np.ndarray] = {}
    npa_centres: list[tuple[float, float]] = []
    perfusion = np.ones((SIZE, SIZE), np.float32)
    if "npa" in classes:
        masks["npa"], npa_centres = _npa_mask(rng)
        # A soft edge keeps the boundary natural while its 0.5 level stays on the mask edge.
        perfusion = 1.0 - _blur_where(masks["npa"].astype(np.float32), masks["npa"], 3.0)
    image = base * (0.75 + 0.25 * perfusion) + capillaries * perfusion + vessels * rng.uniform(150.0, 175.0)
    if "irma" in classes:
        layer, masks["irma"] = _irma(rng, masks.get("npa"), npa_centres, overlap)
        image = np.maximum(image, layer * rng.uniform(205.0, 225.0))
    if "nv" in classes:
        glow, lace, masks["nv"] = _nv(rng, vessels)
        image = np.maximum(image, glow * rng.uniform(115.0, 135.0) + lace * 140.0)
    image = ndimage.gaussian_filter(image, 0.7)
    # Speckle: multiplicative and additive, weaker in nonperfused (flow-free) tissue.
    speckle = rng.standard_normal((SIZE, SIZE), dtype=np.float32)
    image *= 1.0 + 0.12 * speckle * (0.4 + 0.6 * perfusion)
    image += 4.0 * rng.standard_normal((SIZE, SIZE), dtype=np.float32) * (0.4 + 0.6 * perfusion)
    return np.clip(image, 0, 255).round().astype(np.uint8), masks


def _smooth_field(rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """Slowly varying field in [low, high] (illumination, projection strength)."""
    # Smoothing a coarse grid and upsampling is ~50x cheaper than a wide blur at full size.
    coarse = ndimage.gaussian_filter(rng.uniform(0.0, 1.0, (32, 32)), 3.0, mode="reflect")
    coarse = (coarse - coarse.min()) / max(float(np.ptp(coarse)), 1e-6)
    field = ndimage.zoom(
        (low + (high - low) * coarse).astype(np.float32), SIZE / 128, order=1, mode="nearest", grid_mode=True
    )
    # 4-px blocks are invisible in a field this smooth and save a full-size interpolation.
    return np.repeat(np.repeat(field, 4, axis=0), 4, axis=1)


def _band_noise(rng: np.random.Generator, sigma: float) -> np.ndarray:
    """White noise low-passed by a Gaussian of ``sigma`` px, normalised to unit variance."""
    # Filtering in Fourier space costs the same for any sigma, unlike a spatial blur.
    spectrum = fft.rfft2(rng.standard_normal((SIZE, SIZE), dtype=np.float32), workers=1)
    fy = fft.fftfreq(SIZE).astype(np.float32)[:, None]
    fx = fft.rfftfreq(SIZE).astype(np.float32)[None, :]
    spectrum *= np.exp(-2.0 * (np.pi * sigma) ** 2 * (fy * fy + fx * fx))
    noise = fft.irfft2(spectrum, s=(SIZE, SIZE), workers=1)
    return noise / noise.std()


def _blur_where(layer: np.ndarray, where: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a layer that is zero outside ``where``, computed on its bounding box only."""
    if not where.any():
        return layer
    box = _crop_box(where, int(4 * sigma) + 2)
    out = np.zeros_like(layer)
    out[box] = ndimage.gaussian_filter(layer[box], sigma)
    return out


def _capillary_layer(rng: np.random.Generator) -> np.ndarray:
    """Dense mesh of capillaries: the zero lines of band-limited noise form a connected net."""
    mesh = np.zeros((SIZE, SIZE), np.float32)
    for sigma, width, brightness in ((2.2, 0.22, 80.0), (5.5, 0.12, 95.0)):
        noise = _band_noise(rng, sigma)
        mesh = np.maximum(mesh, np.exp(-((noise / width) ** 2)) * brightness)
    return mesh * _smooth_field(rng, 0.7, 1.1)


def _walk(
    rng: np.random.Generator, start: np.ndarray, heading: float, steps: int, step: float, turn: float
) -> np.ndarray:
    """Smooth random curve: (steps + 1, 2) points in (x, y)."""
    curvature = ndimage.gaussian_filter1d(rng.normal(0.0, turn, steps), 3.0) * 3.0
    angles = heading + np.cumsum(curvature)
    moves = np.stack([np.cos(angles), np.sin(angles)], axis=1) * step
    return np.vstack([start, start + np.cumsum(moves, axis=0)])


def _inside(points: np.ndarray, margin: float = -20.0) -> int:
    """Number of leading points that lie within the image (plus ``-margin`` outside it)."""
    ok = np.all((points >= margin) & (points < SIZE - margin), axis=1)
    return int(np.argmin(ok)) if not ok.all() else len(points)


def _vessel_layer(rng: np.random.Generator) -> np.ndarray:
    """Tree-like large vessels in [0, 1] that branch and thin, as in the retinal arcades."""
    canvas = Image.new("L", (SIZE, SIZE), 0)
    draw = ImageDraw.Draw(canvas)
    # Trunks grow from the optic disc beyond one side edge, a few more from random edge points.
    disc = np.array([rng.choice([-80.0, SIZE + 80.0]), rng.uniform(0.3, 0.7) * SIZE])
    stack = []
    # Fanned-out trunk headings (like the upper and lower arcades) keep the trees from tangling.
    trunks = int(rng.integers(3, 6))
    towards_centre = np.arctan2(SIZE / 2 - disc[1], SIZE / 2 - disc[0])
    for offset in np.linspace(-1.2, 1.2, trunks) + rng.uniform(-0.15, 0.15, trunks):
        stack.append((disc, towards_centre + offset, rng.uniform(6.5, 9.0), 0))
    for _ in range(int(rng.integers(1, 4))):
        t = rng.uniform(0.1, 0.9) * SIZE
        start = [(t, -5.0), (SIZE + 5.0, t), (t, SIZE + 5.0), (-5.0, t)][int(rng.integers(4))]
        heading = np.arctan2(SIZE / 2 - start[1], SIZE / 2 - start[0]) + rng.uniform(-0.7, 0.7)
        stack.append((np.array(start), heading, rng.uniform(4.5, 6.5), 0))
    while stack:
        start, heading, width, depth = stack.pop()
        # Thinner vessels are shorter, so the tree looks hierarchical rather than like spaghetti.
        steps = int(width * rng.uniform(10.0, 22.0)) + 10
        points = _walk(rng, start, heading, steps, 6.0, 0.045)
        points = points[: max(_inside(points, -90.0), 2)]
        begin = 0
        while begin < len(points) - 1:
            end = min(begin + int(rng.integers(15, 40)), len(points) - 1)
            draw.line(
                [tuple(p) for p in points[begin : end + 1]],
                fill=255,
                width=max(2, round(width)),
                joint="curve",
            )
            if end < len(points) - 1 and depth < 5 and width > 2.2 and rng.random() < 0.7:
                side = rng.choice([-1.0, 1.0])
                direction = np.arctan2(*(points[end] - points[end - 1])[::-1])
                child = width * rng.uniform(0.45, 0.7)
                stack.append((points[end], direction + side * rng.uniform(0.5, 1.1), child, depth + 1))
                width *= 0.9
            begin = end
    # Soft vessel walls: a slight blur here plus the final blur of the whole image.
    return ndimage.uniform_filter(np.asarray(canvas, np.float32) / 255.0, 2)


def _blob(rng: np.random.Generator, centre: tuple[float, float], radius: float, rough: float) -> np.ndarray:
    """Boolean image of a smooth irregular blob (radius modulated by low harmonics)."""
    cy, cx = centre
    reach = radius * (1.0 + 2.5 * rough) + 2
    # Clipped to the image so that a lobe lying wholly outside gives an empty (not wrapped) box.
    y0, y1 = (int(np.clip(v, 0, SIZE)) for v in (cy - reach, cy + reach + 1))
    x0, x1 = (int(np.clip(v, 0, SIZE)) for v in (cx - reach, cx + reach + 1))
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    theta = np.arctan2(yy - cy, xx - cx)
    outline = np.ones_like(theta)
    for k in range(2, 6):
        outline += rng.normal(0.0, rough / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    mask = np.zeros((SIZE, SIZE), bool)
    mask[y0:y1, x0:x1] = np.hypot(yy - cy, xx - cx) < radius * np.clip(outline, 0.4, 1.0 + 2.5 * rough)
    return mask


def _npa_mask(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """1-3 nonperfusion blobs covering ~3-15% of the image, and their centres."""
    count = int(rng.integers(1, 4))
    shares = rng.dirichlet(np.ones(count) * 2.0) * rng.uniform(0.03, 0.15) * SIZE * SIZE
    mask = np.zeros((SIZE, SIZE), bool)
    centres = []
    for area in shares:
        radius = max(float(np.sqrt(area / np.pi)), 40.0)
        centre = tuple(rng.uniform(radius * 0.6, SIZE - radius * 0.6, 2))
        # A union of a main lobe and a few offset lobes gives the ragged outline of real NPA.
        mask |= _blob(rng, centre, radius, 0.25)
        for _ in range(int(rng.integers(0, 3))):
            offset = rng.normal(0.0, radius * 0.5, 2)
            mask |= _blob(rng, (centre[0] + offset[0], centre[1] + offset[1]), radius * 0.5, 0.2)
        centres.append(centre)
    return mask, centres


def _crop_box(mask: np.ndarray, margin: int) -> tuple[slice, slice]:
    ys, xs = np.nonzero(mask)
    return (
        slice(max(ys.min() - margin, 0), min(ys.max() + margin + 1, SIZE)),
        slice(max(xs.min() - margin, 0), min(xs.max() + margin + 1, SIZE)),
    )


def _irma(
    rng: np.random.Generator, npa: np.ndarray | None, npa_centres: list[tuple[float, float]], overlap: bool
) -> tuple[np.ndarray, np.ndarray]:
    """IRMA: clusters of short, wide, tortuous bright segments; the mask follows them."""
    canvas = Image.new("L", (SIZE, SIZE), 0)
    draw = ImageDraw.Draw(canvas)
    border = None
    if npa is not None:
        border = np.argwhere(npa & ~ndimage.binary_erosion(npa))
    for cluster in range(int(rng.integers(1, 5))):
        radius = rng.uniform(30.0, 60.0)
        if border is not None and len(border) and rng.random() < 0.8:
            point = border[rng.integers(len(border))].astype(float)
            if (overlap and cluster == 0) or rng.random() < 0.5:
                centre = point  # straddles the NPA edge, so the masks overlap
            else:
                nearest = min(npa_centres, key=lambda c: np.hypot(*(point - c)))
                direction = point - np.asarray(nearest)
                centre = point + direction / max(np.hypot(*direction), 1.0) * (radius + 8.0)
        else:
            centre = rng.uniform(radius + 10.0, SIZE - radius - 10.0, 2)
        centre = np.clip(centre, radius + 5.0, SIZE - radius - 5.0)
        # Enough segments for the radius that the cluster reads as one lesion, not a stray curl.
        for _ in range(int(radius * radius / rng.uniform(120.0, 180.0))):
            start = centre + rng.uniform(-0.6, 0.6, 2) * radius
            points = _tortuous_walk(rng, start[::-1], centre[::-1], radius, int(rng.integers(15, 35)))
            draw.line([tuple(p) for p in points], fill=255, width=int(rng.integers(3, 6)), joint="curve")
    drawn = np.asarray(canvas) > 0
    box = _crop_box(drawn, 8)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[box] = ndimage.binary_fill_holes(ndimage.distance_transform_edt(~drawn[box]) <= 3.0)
    layer = np.asarray(canvas, np.float32) / 255.0
    return layer, mask


def _tortuous_walk(
    rng: np.random.Generator, start: np.ndarray, centre: np.ndarray, radius: float, steps: int
) -> np.ndarray:
    """Sharp-turning walk of 3 px steps that turns back into the circle it must stay in."""
    turns = rng.normal(0.0, 0.55, steps)
    heading = rng.uniform(0, 2 * np.pi)
    points = [np.asarray(start, float)]
    for turn in turns:
        point = points[-1]
        if np.hypot(*(point - centre)) > radius:
            heading = np.arctan2(*(centre - point)[::-1]) + rng.normal(0.0, 0.4)
        heading += turn
        points.append(point + 3.0 * np.array([np.cos(heading), np.sin(heading)]))
    return np.asarray(points)


def _nv(rng: np.random.Generator, vessels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NV: fan-shaped tufts of fine bright loops; returns glow, lace and the filled mask."""
    mask = np.zeros((SIZE, SIZE), bool)
    canvas = Image.new("L", (SIZE, SIZE), 0)
    draw = ImageDraw.Draw(canvas)
    on_vessel = np.argwhere(vessels[100:-100, 100:-100] > 0.7) + 100
    for _ in range(int(rng.integers(1, 3))):
        radius = rng.uniform(40.0, 70.0)
        # New vessels sprout from existing ones, so the fan's root usually sits on a vessel.
        if len(on_vessel) and rng.random() < 0.8:
            root = on_vessel[rng.integers(len(on_vessel))].astype(float)
        else:
            root = rng.uniform(100.0, SIZE - 100.0, 2)  # (y, x)
        direction = rng.uniform(0, 2 * np.pi)
        spread = rng.uniform(1.2, 2.0)
        low, high = (root - radius).astype(int) - 6, (root + radius).astype(int) + 7
        box = (slice(low[0], high[0]), slice(low[1], high[1]))
        yy, xx = np.mgrid[box].astype(np.float32)
        theta = np.arctan2(yy - root[0], xx - root[1])
        rho = np.hypot(yy - root[0], xx - root[1])
        off_axis = np.angle(np.exp(1j * (theta - direction)))
        reach = radius * (0.85 + 0.15 * np.cos(3 * theta + rng.uniform(0, 2 * np.pi)))
        # Rounded fan: a sector with a scalloped rim whose tip at the root is blunted by a disc.
        fan = ((rho < reach) & (np.abs(off_axis) < spread)) | (rho < radius * 0.3)
        mask[box] |= fan
        # Fine fronds radiate from the root, then dense small loops make the tuft lacy.
        for _ in range(int(rng.integers(12, 20))):
            angle = direction + rng.uniform(-spread, spread)
            frond = _walk(rng, root[::-1], angle, int(radius / 2.5), 2.5, 0.12)
            draw.line([tuple(p) for p in frond], fill=255, width=1)
        n_loops = int(radius * radius * spread * rng.uniform(0.011, 0.015))
        for _ in range(n_loops):
            dist = np.sqrt(rng.uniform(0.0, 1.0)) * radius
            # The blunt disc at the root is lacy all round, the rest only inside the fan.
            half = np.pi if dist < 0.3 * radius else spread + 0.3
            angle = direction + rng.uniform(-half, half)
            cy, cx = root + dist * np.array([np.sin(angle), np.cos(angle)])
            ry, rx = rng.uniform(3.0, 9.0, 2)
            draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], outline=255, width=1)
    # Keep lace and glow inside the filled tuft so image and mask agree exactly.
    lace = (np.asarray(canvas, np.float32) / 255.0) * mask
    glow = _blur_where(mask.astype(np.float32), mask, 2.0) * mask
    return glow, _blur_where(lace, mask, 0.6) * 1.6, mask
