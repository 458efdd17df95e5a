"""Benchmark: IDRiD-style pooled AUPR over full-size 8-bit probability maps with ``BinnedCurve``.

Usage::

    .venv/bin/python benchmarks/aupr.py                      # 27 cases of 4288x2848, 4 lesions
    .venv/bin/python benchmarks/aupr.py --cases 3 --height 1424 --width 2144
    .venv/bin/python benchmarks/aupr.py --baseline-pixels 2000000   # smaller scikit-learn baseline

Synthetic data: one random 8-bit probability map and one blob-shaped lesion mask per lesion are made
once; each case perturbs them cheaply (a roll and an XOR of the low bits), one case and one lesion
at a time, so memory stays bounded. Only the ``BinnedCurve.update`` calls and the final area
computations are timed; generation is reported separately. Peak memory is reported three ways:
the process's ``ru_maxrss`` (everything, interpreter and base maps included), the tracemalloc peak
over the streaming phase, and the largest extra allocation made by one ``update`` call.

The baseline is ``sklearn.metrics.average_precision_score`` on the first case of the first lesion
(all of it, or its first ``--baseline-pixels`` pixels), run after the streaming phase so it does not
inflate the figures above; the script checks that both give the same AP on that subset and exits
with status 1 if not. Issue targets: 27 full-size cases x 4 lesions in under 20 s and 2 GB.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from collections.abc import Sequence

import numpy as np
from eyegc.common.curves import BinnedCurve
from tqdm import tqdm

__all__ = ["main"]

#: lesion key -> (pixel prevalence, weight of the label in positives' scores); roughly IDRiD-like.
#: Weights below 0.5 keep the classes overlapping, so no lesion is trivially separable.
LESIONS: dict[str, tuple[float, float]] = {
    "ma": (0.0008, 0.20),
    "he": (0.006, 0.30),
    "ex": (0.012, 0.40),
    "se": (0.002, 0.25),
}
_BLOCK = 16


def _mib(n_bytes: float) -> float:
    return n_bytes / 2**20


def _max_rss_mib() -> float:
    # Linux reports ru_maxrss in KiB (macOS in bytes; this harness targets Linux).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_base_maps(height: int, width: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One ``(uint8 scores, bool labels)`` pair per lesion: blocky blobs and noisy scores."""
    rng = np.random.default_rng(seed)
    low_h, low_w = -(-height // _BLOCK), -(-width // _BLOCK)
    maps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for key, (prevalence, signal) in LESIONS.items():
        field = rng.random((low_h, low_w), dtype=np.float32)
        blobs = field > np.quantile(field, 1.0 - prevalence)
        labels = np.repeat(np.repeat(blobs, _BLOCK, axis=0), _BLOCK, axis=1)[:height, :width]
        noise = rng.random((height, width), dtype=np.float32)
        noise *= np.float32(255.0 * (1.0 - signal))
        noise[labels] += np.float32(255.0 * signal)
        maps[key] = (np.rint(noise).astype(np.uint8), np.ascontiguousarray(labels))
    return maps


def case_maps(base: tuple[np.ndarray, np.ndarray], case: int, lesion_index: int) -> tuple[np.ndarray, np.ndarray]:
    """A cheap per-case variant of a base map: shifted, with the low score bits scrambled."""
    scores, labels = base
    shift = 7919 * case + 104729 * lesion_index
    scores = np.roll(scores, shift)
    labels = np.roll(labels, shift)
    scores ^= np.uint8((case * 5 + lesion_index) % 8)
    return scores, labels


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=27, help="number of cases (IDRiD test set: 27)")
    parser.add_argument("--height", type=int, default=2848, help="image height in pixels")
    parser.add_argument("--width", type=int, default=4288, help="image width in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--baseline-pixels", type=int, default=None, help="pixels of one case for the scikit-learn baseline (all)"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the scikit-learn baseline")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its figures; returns the exit status."""
    args = _parse_args(argv)
    pixels = args.height * args.width
    print(
        f"{args.cases} cases x {len(LESIONS)} lesions of {args.height}x{args.width} "
        f"({pixels * args.cases / 1e6:.0f} M pixels per lesion, "
        f"{pixels * args.cases * len(LESIONS) / 1e9:.2f} G in all)"
    )

    started = time.perf_counter()
    bases = make_base_maps(args.height, args.width, args.seed)
    base_seconds = time.perf_counter() - started

    curves = {key: BinnedCurve(256) for key in LESIONS}
    update_seconds = 0.0
    generate_seconds = 0.0
    update_extra_peak = 0
    tracemalloc.start()
    for case in tqdm(range(args.cases), desc="cases", leave=False):
        for index, key in enumerate(LESIONS):
            t0 = time.perf_counter()
            scores, labels = case_maps(bases[key], case, index)
            t1 = time.perf_counter()
            before, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            curves[key].update(scores, labels)
            t2 = time.perf_counter()
            update_extra_peak = max(update_extra_peak, tracemalloc.get_traced_memory()[1] - before)
            generate_seconds += t1 - t0
            update_seconds += t2 - t1
            del scores, labels
    t0 = time.perf_counter()
    results = {key: (c.average_precision(), c.pr_auc_trapezoid(), c.roc_auc()) for key, c in curves.items()}
    area_seconds = time.perf_counter() - t0
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_streaming = _max_rss_mib()

    total = update_seconds + area_seconds
    n_updates = args.cases * len(LESIONS)
    print(f"AUPR computation (updates + areas): {total:.2f} s  ({1e3 * update_seconds / n_updates:.1f} ms per image)")
    print(
        f"  data generation, not timed above: base maps {base_seconds:.2f} s, "
        f"per-case variants {generate_seconds:.2f} s"
    )
    print(
        f"peak memory: ru_maxrss {rss_streaming:.0f} MiB (whole process); tracemalloc peak {_mib(traced_peak):.0f} MiB "
        f"(streaming phase, one case map included); largest extra in one update {_mib(update_extra_peak):.1f} MiB"
    )
    print(f"  {'lesion':<6} {'positives':>12} {'negatives':>14} {'AP':>8} {'PR-AUC':>8} {'ROC-AUC':>8}")
    for key, (ap, pr_auc, roc) in results.items():
        c = curves[key]
        print(f"  {key:<6} {c.positives:>12,} {c.negatives:>14,} {ap:>8.4f} {pr_auc:>8.4f} {roc:>8.4f}")
    within = total < 20 and rss_streaming < 2048
    print(f"targets (< 20 s, < 2 GB): {'met' if within else 'NOT met'}")
    if args.no_baseline:
        return 0
    return _baseline(args, bases, update_seconds / (args.cases * len(LESIONS)))


def _baseline(
    args: argparse.Namespace, bases: dict[str, tuple[np.ndarray, np.ndarray]], per_image_binned: float
) -> int:
    """sklearn's average_precision_score on part of one image, against the histogram: time and exactness."""
    from sklearn.metrics import average_precision_score  # only the baseline needs it

    pixels = args.height * args.width
    n_updates = args.cases * len(LESIONS)
    key = next(iter(LESIONS))
    scores, labels = case_maps(bases[key], 0, 0)
    n = pixels if args.baseline_pixels is None else min(args.baseline_pixels, pixels)
    sub_scores, sub_labels = scores.reshape(-1)[:n], labels.reshape(-1)[:n]
    t0 = time.perf_counter()
    sklearn_ap = float(average_precision_score(sub_labels, sub_scores))
    sklearn_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    subset = BinnedCurve(256)
    subset.update(sub_scores, sub_labels)
    binned_ap = subset.average_precision()
    binned_seconds = time.perf_counter() - t0
    per_image_sklearn = sklearn_seconds * pixels / n
    print(
        f"baseline: sklearn average_precision_score on case 0 / {key}, {n / 1e6:.1f} M pixels: {sklearn_seconds:.2f} s"
    )
    print(
        f"  per full image: sklearn ~{per_image_sklearn:.2f} s (extrapolated linearly) vs histogram "
        f"{per_image_binned * 1e3:.1f} ms -> {per_image_sklearn / per_image_binned:.0f}x; "
        f"all {n_updates} images at that rate: >= {per_image_sklearn * n_updates:.0f} s, and pooling for "
        f"sklearn would hold all {args.cases} cases of a lesion in memory"
    )
    print(f"  process ru_maxrss after baseline: {_max_rss_mib():.0f} MiB")
    diff = abs(sklearn_ap - binned_ap)
    print(
        f"  check on the subset: histogram AP {binned_ap:.12f} ({binned_seconds * 1e3:.0f} ms) vs sklearn "
        f"{sklearn_ap:.12f}: |diff| {diff:.1e} {'OK' if diff <= 1e-12 else 'MISMATCH'}"
    )
    return 0 if diff <= 1e-12 else 1


if __name__ == "__main__":
    sys.exit(main())
