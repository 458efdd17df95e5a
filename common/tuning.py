"""Per-class threshold and minimum component size, chosen on out-of-fold predictions.

The choice maximises the leaderboard metric itself (``Metric.class_score``), class by class. For
DRAC22 this matters: images whose ground truth is empty for a class are ignored by the metric, so
false positives there cost nothing and the best threshold is usually well below 0.5.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from eyegc.common.bundle import (
    SPLITS_NAME,
    cases_fingerprint,
    check_same_data,
    read_config,
    save_signed_config,
    verify_checksums,
)
from eyegc.common.bundle_config import DEFAULT_THRESHOLD, CrfSettings, CrossValidation, Postprocessing
from eyegc.common.crf import CRF_CANDIDATES, crf_image, import_densecrf, refine, refine_classes
from eyegc.common.errors import BundleError, EyegcError
from eyegc.common.plugin import TaskKind, TaskPlugin
from eyegc.common.postprocessing import EIGHT_CONNECTED, postprocess
from scipy import ndimage
from tqdm import tqdm

__all__ = [
    "DEFAULT_MIN_SIZES",
    "DEFAULT_THRESHOLDS",
    "check_crf_request",
    "load_oof",
    "tune",
    "tune_binary_heads",
    "tune_crf",
    "tune_grade_offsets",
    "tune_postprocessing",
]

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(np.round(np.arange(0.05, 0.951, 0.05), 2))
DEFAULT_MIN_SIZES: tuple[int, ...] = (0, 16, 64, 256, 1024, 4096)
#: candidate offsets (added to a grade's log-probability) for ``tune --grade-offsets``.
DEFAULT_GRADE_OFFSETS: tuple[float, ...] = tuple(np.round(np.arange(-2.0, 2.001, 0.25), 2))


def _size_filtered(mask: np.ndarray, min_sizes: Sequence[int]) -> list[np.ndarray]:
    """The mask with components below each size removed (one labelling for all sizes).

    A size that removes nothing more than the previous one returns the same array object, so
    callers can skip re-scoring it.
    """
    if not mask.any():
        return [mask] * len(min_sizes)
    labels, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    out: list[np.ndarray] = []
    removed = -1
    for min_size in min_sizes:
        now_removed = int(np.count_nonzero(sizes[1:] < min_size))
        if now_removed != removed:
            keep = sizes >= max(min_size, 1)
            keep[0] = False
            current = mask if now_removed == 0 else keep[labels]
            removed = now_removed
        out.append(current)
    return out


def _best_threshold(
    plugin: TaskPlugin,
    class_index: int,
    probabilities: Sequence[np.ndarray],
    truth: Sequence[np.ndarray],
    thresholds: Sequence[float],
    min_sizes: Sequence[int],
    desc: str,
) -> tuple[float, float, int] | None:
    """One class's best ``(score, threshold, min_size)`` on its ``(H, W)`` probabilities; ``None``: no score.

    Ties go to the threshold nearest 0.5 and then the smallest component size.
    """
    best: tuple[float, float, float, int] | None = None  # (score, -|t-0.5|, t, -size) maximised
    for threshold in tqdm(thresholds, desc=desc, unit="threshold", leave=False):
        filtered = [_size_filtered(p >= threshold, min_sizes) for p in probabilities]
        score = float("nan")
        for s, min_size in enumerate(min_sizes):
            if s == 0 or any(f[s] is not f[s - 1] for f in filtered):
                score = plugin.metric.class_score(class_index, [f[s] for f in filtered], truth)
            if np.isnan(score):
                continue
            key = (round(score, 12), -abs(threshold - DEFAULT_THRESHOLD), float(threshold), -int(min_size))
            if best is None or key > best:
                best = key
    return None if best is None else (best[0], best[2], -best[3])


def tune_postprocessing(
    plugin: TaskPlugin,
    probabilities: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    min_sizes: Sequence[int] = DEFAULT_MIN_SIZES,
) -> dict[str, Any]:
    """Grid-search each class's threshold and minimum component size on ``(C, H, W)`` probabilities.

    Ties go to the threshold nearest 0.5 and then the smallest component size, so a flat metric
    does not move the defaults.

    Returns:
        ``{"thresholds": {cls: t}, "min_component_size": {cls: n}, "tuned": True, "class_scores": {cls: s}}``
    """
    if plugin.kind != TaskKind.MULTILABEL_SEGMENTATION:
        raise EyegcError(f"{plugin.name}: threshold tuning applies to multi-label segmentation tasks only")
    if not probabilities:
        raise EyegcError("no out-of-fold predictions to tune on")
    result: dict[str, Any] = {"thresholds": {}, "min_component_size": {}, "tuned": True, "class_scores": {}}
    for c, spec in enumerate(plugin.classes):
        truth = [t[c] > 0 for t in targets]
        class_probabilities = [p[c] for p in probabilities]
        best = _best_threshold(plugin, c, class_probabilities, truth, thresholds, min_sizes, f"tune {spec.key}")
        score, threshold, min_size = (float("nan"), DEFAULT_THRESHOLD, 0) if best is None else best
        result["thresholds"][spec.key] = float(threshold)
        result["min_component_size"][spec.key] = int(min_size)
        result["class_scores"][spec.key] = float(score)
    return result


def check_crf_request(plugin: TaskPlugin) -> None:
    """``--crf`` before any work: the task must have per-class thresholds, and pydensecrf2 be installed."""
    if plugin.kind != TaskKind.MULTILABEL_SEGMENTATION:
        raise EyegcError(f"--crf refines per-class probabilities before their thresholds; {plugin.name} has none")
    import_densecrf()


def tune_crf(
    plugin: TaskPlugin,
    probabilities: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    images: Sequence[np.ndarray],
    rois: Sequence[np.ndarray | None],
    chosen: dict[str, Any],
    candidates: Sequence[CrfSettings] = CRF_CANDIDATES,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    min_sizes: Sequence[int] = DEFAULT_MIN_SIZES,
) -> dict[str, Any]:
    """Per class, a dense CRF (:mod:`eyegc.common.crf`) with its own threshold and size, where it beats none.

    Each candidate refines the class's out-of-fold probabilities on their images; its threshold
    and minimum size are searched as without one. A CRF is kept only where its class score is
    strictly higher than ``chosen``'s (:func:`tune_postprocessing` without a CRF).

    Returns:
        ``chosen`` with ``crf`` set and the thresholds, sizes and scores of the refined classes replaced.
    """
    if plugin.kind != TaskKind.MULTILABEL_SEGMENTATION:
        raise EyegcError(f"{plugin.name}: dense CRF post-processing applies to multi-label segmentation tasks only")
    import_densecrf()  # one line before any work when pydensecrf2 is missing
    result = {**chosen, "crf": {}}
    for key in ("thresholds", "min_component_size", "class_scores"):
        result[key] = dict(chosen[key])
    rgb = [crf_image(image) for image in images]
    for c, spec in enumerate(plugin.classes):
        truth = _inside([t[c] > 0 for t in targets], rois)
        baseline = result["class_scores"][spec.key]
        best = -np.inf if np.isnan(baseline) else round(float(baseline), 12)
        for n, settings in enumerate(candidates):
            desc = f"CRF {n + 1}/{len(candidates)} {spec.key}"
            images_shown = tqdm(rgb, desc=desc, leave=False)
            refined = [refine(p[c], image, settings) for p, image in zip(probabilities, images_shown, strict=True)]
            found = _best_threshold(plugin, c, _inside(refined, rois), truth, thresholds, min_sizes, desc)
            if found is not None and round(found[0], 12) > best:
                best = round(found[0], 12)
                result["crf"][spec.key] = settings.model_dump()
                result["thresholds"][spec.key], result["min_component_size"][spec.key] = found[1], found[2]
                result["class_scores"][spec.key] = found[0]
    return result


def tune_binary_heads(plugin: TaskPlugin, probabilities: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> dict:
    """The threshold of each binary classification head that maximises Youden's J (sensitivity + specificity - 1).

    Candidates are the out-of-fold scores themselves (quantised to 1/255) and 0.5; ties go to the
    one nearest 0.5. Heads with more than two grades keep the argmax. The ranking metric (AUC)
    does not depend on it; accuracy, F1 and kappa are reported at it.

    Returns:
        ``{"thresholds": {head: t}, "tuned": True, "class_scores": {head: J}}``
    """
    if plugin.kind != TaskKind.CLASSIFICATION:
        raise EyegcError(f"{plugin.name}: head thresholds apply to classification tasks only")
    probs = np.asarray(probabilities, dtype=np.float64)
    truth = np.asarray(targets, dtype=np.int64).reshape(len(probs), -1)
    result: dict[str, Any] = {"thresholds": {}, "tuned": True, "class_scores": {}}
    for h, spec in enumerate(plugin.classes):
        if spec.num_classes != 2:
            continue
        scores, positive = probs[:, h, 1], truth[:, h] == 1
        best = (-np.inf, 0.0, 0.5)
        if positive.any() and (~positive).any():
            for t in np.unique(np.append(scores, 0.5)):
                predicted = scores >= t
                j = predicted[positive].mean() + (~predicted[~positive]).mean() - 1
                key = (round(float(j), 12), -abs(float(t) - 0.5), float(t))
                best = max(best, key)
        result["thresholds"][spec.key] = best[2]
        result["class_scores"][spec.key] = best[0] if np.isfinite(best[0]) else float("nan")
    return result


def load_oof(
    plugin: TaskPlugin, run: Path, data_root: Path, allow_missing_class: bool = False
) -> tuple[list[str], list[np.ndarray], list[np.ndarray], list[np.ndarray | None]]:
    """Out-of-fold probabilities saved by training, with their ground truth and fields of view.

    ``allow_missing_class``: as the run was trained (a ground-truth class folder may be missing).
    """
    run = Path(run)
    oof = run / "oof"
    listed = plugin.list_cases(data_root, "train", allow_missing_class=allow_missing_class)
    check_same_data(read_config(run), cases_fingerprint(listed, data_root), data_root, "tune")
    cases = {c.case_id: c for c in listed}
    ids = sorted(p.name[: -len(".npz")] for p in oof.glob("*.npz")) if oof.is_dir() else []
    if not ids:
        raise EyegcError(f"{run} has no out-of-fold predictions (oof/*.npz); train every fold first")
    absent = [i for i in ids if i not in cases]
    if absent:
        raise EyegcError(f"out-of-fold cases {absent[:5]} are not in {data_root}; pass the training data with --data")
    validated = _validation_cases(run)
    untrained = sorted(validated - set(ids))
    if untrained:
        # Tuning on some folds only would fit thresholds to a subset and call it cross-validation.
        raise EyegcError(
            f"{run} has no out-of-fold predictions for {len(untrained)} case(s) ({', '.join(untrained[:5])}); "
            "train every fold first (eyegc train --resume)"
        )
    probs = [_read_oof(oof / f"{i}.npz") for i in ids]
    targets = [plugin.read_target(cases[i]) for i in ids]
    rois = [None if plugin.kind == TaskKind.CLASSIFICATION else plugin.read_roi(cases[i]) for i in ids]
    return ids, probs, targets, rois


def _training_images(plugin: TaskPlugin, root: Path, ids: Sequence[str], allow_missing_class: bool) -> list[np.ndarray]:
    """The training images of ``ids`` at their original size, for the CRF's appearance kernel."""
    cases = {c.case_id: c for c in plugin.list_cases(root, "train", allow_missing_class=allow_missing_class)}
    return [plugin.read_image(cases[i].image) for i in tqdm(ids, desc="read images for the CRF", leave=False)]


def _validation_cases(run: Path) -> set[str]:
    """The cases of every fold's validation set (``splits.json``), or none when it is absent."""
    path = run / SPLITS_NAME
    if not path.is_file():
        return set()
    try:
        return {case_id for split in json.loads(path.read_text()) for case_id in split["val"]}
    except (json.JSONDecodeError, KeyError, TypeError):
        raise BundleError(f"{path} is not a list of folds with 'val' cases; the bundle is damaged") from None


def _read_oof(path: Path) -> np.ndarray:
    """One case's out-of-fold probabilities (uint8 in the file) as float32 in [0, 1]."""
    try:
        with np.load(path) as saved:
            return saved["probabilities"].astype(np.float32) / 255.0
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise BundleError(
            f"{path} is damaged ({type(error).__name__}); retrain its fold, or copy the run again"
        ) from None


def _inside(arrays: Sequence[np.ndarray], rois: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    """Zero outside each field of view: per-class Dice/F1 then count only inside it (true negatives never count)."""
    return [a if roi is None else a * roi.astype(a.dtype) for a, roi in zip(arrays, rois, strict=True)]


def tune_grade_offsets(
    plugin: TaskPlugin,
    probabilities: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    case_ids: Sequence[str],
    chosen: dict[str, Any],
    candidates: Sequence[float] = DEFAULT_GRADE_OFFSETS,
    rounds: int = 3,
) -> dict[str, Any]:
    """Per-grade offsets of each head with three or more grades that maximise the leaderboard figure.

    The figure (``metric.primary``: DRAC22's kappa, IDRiD's joint accuracy) is computed on the
    out-of-fold grades; grade 0 keeps offset 0 and the others are searched one at a time over
    ``candidates``, ``rounds`` times over (coordinate ascent); a tie keeps the offset nearest 0, so
    without a gain the plain argmax stays. The figure then reached is in ``class_scores``.

    Returns:
        ``chosen`` with ``grade_offsets`` set (the other settings, e.g. binary thresholds, are kept).
    """
    if plugin.kind != TaskKind.CLASSIFICATION:
        raise EyegcError(f"{plugin.name}: grade offsets apply to classification tasks only")
    keys = [c.key for c in plugin.classes]
    settings = {**chosen, "grade_offsets": {}, "class_scores": dict(chosen.get("class_scores") or {})}

    def figure() -> float:
        rules = Postprocessing.model_validate(settings)
        grades = [postprocess(p, plugin.kind, keys, rules) for p in probabilities]
        value = plugin.metric(plugin.name, grades, targets, case_ids, probabilities=probabilities).leaderboard
        return float(value[plugin.metric.primary])

    for spec in plugin.classes:
        grades = int(spec.num_classes or 0)
        if grades < 3:
            continue
        offsets = settings["grade_offsets"][spec.key] = [0.0] * grades
        best = figure()
        for _ in range(rounds):
            before = list(offsets)
            for grade in range(1, grades):
                scores = []
                for value in candidates:
                    offsets[grade] = float(value)
                    scores.append((round(np.nan_to_num(figure(), nan=-np.inf), 12), -abs(float(value)), float(value)))
                top = max(scores)
                offsets[grade] = top[2]
                best = top[0]
            if offsets == before:
                break
        settings["class_scores"][spec.key] = float(best) if np.isfinite(best) else float("nan")  # NaN as JSON null
    return settings


def tune(
    plugin: TaskPlugin,
    run: Path,
    data_root: Path | None = None,
    grade_offsets: bool = False,
    crf: bool = False,
    **grid: Any,
) -> Postprocessing:
    """Tune a finished run's postprocessing on its out-of-fold predictions and store it in the bundle.

    ``grade_offsets`` also tunes the per-grade decision offsets of heads with three or more grades
    (:func:`tune_grade_offsets`); ``crf`` also tries a dense CRF per class (:func:`tune_crf`, which
    reads the training images again). Also records the cross-validation scores before and after
    tuning in ``bundle.json``.

    Returns:
        The bundle's new ``postprocessing`` section.
    """
    run = Path(run)
    verify_checksums(run)  # never re-sign a bundle whose files were changed
    config = read_config(run)
    if config.task != plugin.name:
        raise BundleError(f"{run} was trained for {config.task!r}, not {plugin.name!r}")
    if crf:
        check_crf_request(plugin)
    root = Path(data_root or config.training.data_root or "")
    ids, probs, targets, rois = load_oof(plugin, run, root, config.training.allow_missing_class)
    if plugin.kind == TaskKind.CLASSIFICATION:
        chosen = tune_binary_heads(plugin, probs, targets)
        if grade_offsets:
            chosen = tune_grade_offsets(plugin, probs, targets, ids, chosen)
    else:
        chosen = tune_postprocessing(plugin, _inside(probs, rois), _inside(targets, rois), **grid)
    images: list[np.ndarray] = []
    if crf:
        images = _training_images(plugin, root, ids, config.training.allow_missing_class)
        # The CRF runs where the network saw the image, at the working scale: on IDRiD's 12 MP at full
        # size it took ~15 s a class and image here, ~7 s at 0.5.
        scale = min(1.0, config.preprocessing.working_scale)
        candidates = [c.model_copy(update={"scale": scale}) for c in CRF_CANDIDATES]
        chosen = tune_crf(plugin, probs, targets, images, rois, chosen, candidates, **grid)
    settings = Postprocessing.model_validate(chosen)
    classes = config.classes
    refined = probs
    if crf:
        refined = [refine_classes(p, image, classes, settings.crf) for p, image in zip(probs, images, strict=True)]
    # As predict: the CRF-refined probabilities make the masks, the network's are ranked (AUC, AUPR).
    default, tuned = (
        plugin.metric(
            plugin.name,
            [postprocess(p, plugin.kind, classes, rules) for p in for_masks],
            targets,
            ids,
            probabilities=probs,
            rois=rois,
        )
        for rules, for_masks in ((Postprocessing(), probs), (settings, refined))
    )
    config.postprocessing = settings
    config.cross_validation = CrossValidation(
        cases=len(ids), default_postprocessing=default.to_json_dict(), tuned_postprocessing=tuned.to_json_dict()
    )
    save_signed_config(run, config)
    return settings
