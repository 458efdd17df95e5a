"""A thickness-profile glaucoma model for GOALS: RNFL/GCIPL thickness features and a logistic regression.

A small, explainable baseline beside the ``goals-glaucoma`` CNN. Every B-scan is segmented into
layers (by a ``goals-layers`` bundle, or, when fitting, optionally from the ground-truth masks);
the per-column thickness of the RNFL and the GCIPL (pixels of the layer in the column, see
:func:`eyegc.challenges.goals.metric.layer_thickness`) is averaged in ``sectors`` equal column
sectors — a circumpapillary scan's columns go once round the disc, so 12 sectors are about clock
hours — plus the mean over all columns of each layer. These ``2 * (sectors + 1)`` numbers are
standardised and fed to a scikit-learn logistic regression (``class_weight="balanced"``); its
coefficients, one per named feature, are the explanation (a negative coefficient: thinner means
more likely glaucoma).

The fitted model is a folder holding ``thickness_model.json`` (format
``eyegc-thickness-model/1``): plain JSON numbers for the scaler and the regression (no pickle),
the layer bundles it was fit with and the sha256 of their ``bundle.json``, the cross-validated
figures and the tuned threshold; and ``training_features.csv``, the features, label and
out-of-fold probability of every training case. Prediction applies the JSON by hand
(:func:`apply_thickness_model`) and writes the ``goals-glaucoma`` prediction layout
(``<out>/<case_id>.json``, see :mod:`eyegc.common.classification`), which ``eyegc evaluate`` and
``eyegc submission`` read like the CNN's.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from eyegc.challenges.goals.metric import layer_thickness
from eyegc.challenges.goals.options import THICKNESS_OPTIONS
from eyegc.common.bundle import CONFIG_NAME, Bundle, eyegc_version, load_bundle, sha256_file
from eyegc.common.classification import write_classification_case
from eyegc.common.errors import BundleError, DataError, EyegcError
from eyegc.common.imageio import atomic_output_dir, split_image_suffix
from eyegc.common.options import check_options
from eyegc.common.plugin import Case, TaskPlugin
from eyegc.common.registry import get_task, look_up_option
from tqdm import tqdm

__all__ = [
    "FEATURES_CSV",
    "MODEL_FORMAT",
    "MODEL_NAME",
    "SOURCES",
    "THICKNESS_LAYERS",
    "THICKNESS_OPTIONS",
    "apply_thickness_model",
    "build_pipeline",
    "describe_thickness_model",
    "feature_names",
    "fit_thickness_model",
    "load_thickness_model",
    "predict_thickness_model",
    "thickness_features",
]


MODEL_FORMAT = "eyegc-thickness-model/1"
MODEL_NAME = "thickness_model.json"
FEATURES_CSV = "training_features.csv"
GLAUCOMA_TASK = "goals-glaucoma"
LAYERS_TASK = "goals-layers"
#: layer key -> its class index in a GOALS class-index map (0 background, 1 RNFL, 2 GCIPL, 3 choroid).
THICKNESS_LAYERS: dict[str, int] = {"rnfl": 1, "gcipl": 2}
#: where the layer maps of the training cases come from.
SOURCES: dict[str, str] = {
    "predicted": "segmented by the given goals-layers bundle(s), as at prediction time",
    "truth": "the ground-truth layer masks (an upper bound; fast)",
}


# -- features -------------------------------------------------------------------------------------


def _check_sectors(sectors: int, width: int | None = None) -> int:
    sectors = int(THICKNESS_OPTIONS["sectors"].check(sectors))
    if width is not None and sectors > width:
        raise EyegcError(f"--sectors {sectors} is more than the image's {width} columns; use {width} or fewer")
    return int(sectors)


def feature_names(sectors: int = 12) -> list[str]:
    """Names of the features :func:`thickness_features` returns, in order.

    Per layer (``rnfl`` then ``gcipl``): ``<layer>_s01`` ... ``<layer>_sNN`` (sector 1 is the
    leftmost columns) then ``<layer>_mean``. Sector numbers are zero-padded to two digits (more
    when ``sectors`` > 99).
    """
    sectors = _check_sectors(sectors)
    digits = max(2, len(str(sectors)))
    names: list[str] = []
    for layer in THICKNESS_LAYERS:
        names += [f"{layer}_s{k:0{digits}d}" for k in range(1, sectors + 1)]
        names.append(f"{layer}_mean")
    return names


def thickness_features(index_map: np.ndarray, sectors: int = 12) -> np.ndarray:
    """The thickness profile of one B-scan: ``(2 * (sectors + 1),)`` float64, in :func:`feature_names` order.

    Per layer (RNFL, GCIPL): the per-column thickness in pixels (:func:`layer_thickness`)
    averaged over each of ``sectors`` column sectors — sector ``k`` (0-based) covers columns
    ``k * W // sectors`` to ``(k + 1) * W // sectors - 1`` — then over all ``W`` columns.

    Args:
        index_map: ``(H, W)`` or ``(1, H, W)`` class-index map (0 background, 1 RNFL, 2 GCIPL, 3 choroid).
        sectors: number of equal column sectors (12: about clock hours on a circumpapillary scan).

    Raises:
        ValueError: not a 2D class-index map.
        EyegcError: fewer than 1 sector, or more sectors than columns.
    """
    array = np.asarray(index_map)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise ValueError(f"expected an (H, W) or (1, H, W) integer class-index map, got {array.dtype} {array.shape}")
    width = array.shape[1]
    sectors = _check_sectors(sectors, width)
    edges = np.arange(sectors + 1) * width // sectors
    values: list[float] = []
    for class_index in THICKNESS_LAYERS.values():
        profile = layer_thickness(array, class_index)
        values += [float(profile[a:b].mean()) for a, b in itertools.pairwise(edges)]
        values.append(float(profile.mean()))
    return np.asarray(values, dtype=np.float64)


# -- the model ------------------------------------------------------------------------------------


def build_pipeline(C: float = 1.0, seed: int = 0) -> Any:
    """The unfitted scikit-learn pipeline: ``StandardScaler`` then balanced ``LogisticRegression(C=C)``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    C = float(THICKNESS_OPTIONS["C"].check(C))
    return make_pipeline(
        StandardScaler(),
        LogisticRegression(C=float(C), class_weight="balanced", max_iter=10_000, random_state=seed),
    )


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-z))`` without overflow for large ``|z|``."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    positive = z >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-z[positive]))
    e = np.exp(z[~positive])
    out[~positive] = e / (1.0 + e)
    return out


def apply_thickness_model(model: dict[str, Any], features: np.ndarray) -> np.ndarray:
    """Glaucoma probabilities from features with a loaded model document (no scikit-learn).

    ``p = 1 / (1 + exp(-(((x - mean) / scale) · coef + intercept)))``, exactly what the fitted
    pipeline's ``predict_proba(x)[:, 1]`` computes.

    Args:
        model: the document :func:`load_thickness_model` returns.
        features: ``(F,)`` or ``(N, F)`` features in the model's feature order.

    Returns:
        ``(N,)`` float64 probabilities (``(1,)`` for a single feature vector).
    """
    x = np.atleast_2d(np.asarray(features, dtype=np.float64))
    mean = np.asarray(model["scaler"]["mean"], dtype=np.float64)
    scale = np.asarray(model["scaler"]["scale"], dtype=np.float64)
    coef = np.asarray(model["logistic_regression"]["coef"], dtype=np.float64)
    if x.shape[1] != coef.shape[0]:
        raise ValueError(f"{x.shape[1]} features given; the model has {coef.shape[0]}")
    z = ((x - mean) / scale) @ coef + float(model["logistic_regression"]["intercept"])
    return _sigmoid(z)


def _finite_list(value: Any, length: int, what: str, path: Path) -> None:
    if (
        not isinstance(value, list)
        or len(value) != length
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    ):
        raise BundleError(f"{path}: {what} must be a list of {length} finite numbers; the model file is damaged")


def load_thickness_model(model: Path) -> dict[str, Any]:
    """Read and check a thickness model (its folder, or the ``thickness_model.json`` inside).

    Raises:
        BundleError: missing or unreadable file, another format, or inconsistent contents
            (feature names not those of its ``sectors``, lists of the wrong length, a scale <= 0).
    """
    path = Path(model)
    if path.is_dir():
        path = path / MODEL_NAME
    if not path.is_file():
        raise BundleError(
            f"{path} is missing: {model} is not a thickness model (fit one with `eyegc thickness-model fit`)"
        )
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"cannot read {path} as JSON ({exc}); the model file is damaged") from None
    if not isinstance(doc, dict) or doc.get("format") != MODEL_FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise BundleError(f"{path} has format {found!r}; this eyegc reads {MODEL_FORMAT!r}")
    try:
        sectors = int(doc["features"]["sectors"])
        names = list(doc["features"]["names"])
        expected = feature_names(sectors)
        if names != expected:
            raise BundleError(f"{path}: the feature names do not match {sectors} sectors; the model file is damaged")
        _finite_list(doc["scaler"]["mean"], len(names), "scaler.mean", path)
        _finite_list(doc["scaler"]["scale"], len(names), "scaler.scale", path)
        _finite_list(doc["logistic_regression"]["coef"], len(names), "logistic_regression.coef", path)
        _finite_list([doc["logistic_regression"]["intercept"], doc["threshold"]], 2, "intercept and threshold", path)
        if min(doc["scaler"]["scale"]) <= 0:
            raise BundleError(f"{path}: scaler.scale holds a value <= 0; the model file is damaged")
        look_up_option(doc["source"], SOURCES, what="layer source")
        for entry in doc["layers_models"]:
            if not isinstance(entry["path"], str) or len(str(entry["bundle_sha256"])) != 64:
                raise KeyError("layers_models")
    except (KeyError, TypeError, ValueError, EyegcError) as exc:
        if isinstance(exc, BundleError):
            raise
        raise BundleError(f"{path} is not a complete thickness model ({type(exc).__name__}: {exc})") from None
    doc["path"] = str(path)
    return doc


def _json_number(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _layer_entry(bundle: Bundle) -> dict[str, str]:
    path = Path(bundle.path).resolve()
    return {"path": str(path), "bundle_sha256": sha256_file(path / CONFIG_NAME)}


def _load_layer_bundles(models: Sequence[Path]) -> list[Bundle]:
    return [load_bundle(Path(m), task=LAYERS_TASK) for m in models]


def _refuse_overwriting_inputs(out: Path, inputs: Sequence[Path]) -> None:
    target = Path(out).resolve()
    for keep in inputs:
        keep = Path(keep).resolve()
        if keep == target or target in keep.parents:
            raise DataError(f"--out {out} holds {keep}; --overwrite would delete it. Choose another --out")


def _fit_features(
    case_ids: Sequence[str],
    images: Sequence[Path],
    truth: dict[str, Any] | None,
    predictor: Any,
    sectors: int,
) -> np.ndarray:
    """Features of each training case from its ground-truth mask (``truth``) or the layer predictor."""
    layers = get_task(LAYERS_TASK)
    rows = []
    for case_id, image in tqdm(list(zip(case_ids, images, strict=True)), desc="thickness features", unit="case"):
        if truth is not None:
            index_map = layers.read_target(truth[case_id])
        else:
            index_map = predictor.predict(layers.read_image(image))[0]
        rows.append(thickness_features(index_map, sectors))
    return np.stack(rows)


def _youden_threshold(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The threshold maximising Youden's J on the out-of-fold probabilities (the CNN's rule) and J."""
    from eyegc.common.tuning import tune_binary_heads

    probs = np.stack([1.0 - probabilities, probabilities], axis=1)[:, None, :]
    tuned = tune_binary_heads(get_task(GLAUCOMA_TASK), list(probs), list(labels[:, None]))
    head = get_task(GLAUCOMA_TASK).classes[0].key
    return float(tuned["thresholds"][head]), float(tuned["class_scores"][head])


def fit_thickness_model(
    layers_models: Sequence[Path],
    data_root: Path,
    out: Path,
    *,
    split: str = "train",
    tta: str = "none",
    device: str = "cpu",
    source: str = "predicted",
    sectors: int = 12,
    C: float = 1.0,
    folds: int = 5,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Fit the thickness-profile glaucoma model on a labelled GOALS split and save it to ``out``.

    Every case of ``goals-glaucoma``'s ``split`` gets a layer map, its :func:`thickness_features`
    are computed, and ``StandardScaler`` + ``LogisticRegression(C, class_weight="balanced")`` is
    fit (:func:`build_pipeline`). The out-of-fold probabilities of a stratified ``folds``-fold
    cross-validation (shuffled with ``seed``) are scored with the task's metric (AUC with a
    bootstrap interval, accuracy, F1, kappa at the threshold) and give the threshold (Youden's J,
    the rule used for the CNN); the final model is fit on all cases. ``out`` appears only when
    complete (its files: the module docstring).

    Args:
        layers_models: ``goals-layers`` bundle folder(s), ensembled; required with ``source="predicted"``
            (with ``"truth"`` only recorded for :func:`predict_thickness_model`).
        data_root: the GOALS data root (holds ``Train/``, ``Validation/``).
        out: the model folder to create.
        split: ``"train"`` or ``"test"`` (the labelled ``Validation/`` split).
        tta, device: the layer model's TTA mode (stored and reused at prediction) and device.
        source: ``"predicted"`` (layer maps from the bundle(s), as at prediction time; fit on cases
            the layer model did not train on where you can) or ``"truth"`` (ground-truth masks: an
            upper bound, and fast).
        sectors: column sectors per layer (:func:`thickness_features`).
        C: inverse regularisation strength of the logistic regression.
        folds, seed: cross-validation folds (2 .. the smaller class's count) and their shuffle seed.
        overwrite: replace an existing ``out``.

    Returns:
        A summary: ``out``, ``cases``, ``positives``, ``source``, ``sectors``, ``cross_validation``
        (the task's figures and ``youden_j``; NaN as None), ``threshold``, ``coefficients`` (per
        standard deviation, largest first) and ``intercept``.

    Raises:
        EyegcError: a bad setting, a single class or too few of one for ``folds``, or ``out`` exists.
        DataError: missing or malformed data (a case without a layer mask with ``source="truth"``).
        BundleError: a layer bundle that is missing, damaged or not for ``goals-layers``.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    glaucoma, layers, models = _check_fit_settings(layers_models, data_root, out, source, sectors, C, folds, seed, tta)
    if overwrite:
        _refuse_overwriting_inputs(out, [Path(data_root), *models])
    cases = glaucoma.list_cases(Path(data_root), split)
    labels = np.array([int(c.labels["glaucoma"]) for c in cases], dtype=np.int64)  # type: ignore[index]
    counts = _check_class_counts(labels, split, data_root, folds)
    bundles = _load_layer_bundles(models)
    truth, predictor, tta_ops = _layer_source(source, layers, cases, data_root, split, bundles, tta, device)
    with atomic_output_dir(Path(out), overwrite=overwrite) as tmp:
        case_ids = [c.case_id for c in cases]
        features = _fit_features(case_ids, [c.image for c in cases], truth, predictor, sectors)
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        oof = cross_val_predict(build_pipeline(C, seed), features, labels, cv=cv, method="predict_proba")[:, 1]
        threshold, figures = _cross_validation_figures(glaucoma, oof, labels, case_ids)
        pipeline = build_pipeline(C, seed).fit(features, labels)
        run = {"data_root": str(Path(data_root).resolve()), "split": split, "cases": len(cases)}
        run |= {"positives": int(counts[1]), "folds": folds, "seed": seed}
        layer_source = {
            "source": source,
            "tta": tta,
            "tta_ops": tta_ops,
            "layers_models": [_layer_entry(b) for b in bundles],
        }
        doc = _model_document(glaucoma, pipeline, C, sectors, threshold, layer_source, run, figures)
        (tmp / MODEL_NAME).write_text(json.dumps(doc, indent=2) + "\n")
        fitted = pipeline.predict_proba(features)[:, 1]
        _write_features_csv(tmp / FEATURES_CSV, case_ids, labels, oof, fitted, features, doc["features"]["names"])
    return _fit_summary(out, doc)


def _fit_summary(out: Path, doc: dict[str, Any]) -> dict[str, Any]:
    """What :func:`fit_thickness_model` returns, read from the model it wrote."""
    return {
        "out": str(out),
        "cases": doc["training"]["cases"],
        "positives": doc["training"]["positives"],
        "source": doc["source"],
        "sectors": doc["features"]["sectors"],
        "cross_validation": doc["cross_validation"],
        "threshold": doc["threshold"],
        "coefficients": doc["coefficients"],
        "intercept": doc["logistic_regression"]["intercept"],
    }


def _check_fit_settings(
    layers_models: Sequence[Path],
    data_root: Path,
    out: Path,
    source: str,
    sectors: int,
    C: float,
    folds: int,
    seed: int,
    tta: str,
) -> tuple[TaskPlugin, TaskPlugin, list[Path]]:
    """Every fit setting checked before slow work; the glaucoma and layers tasks and the layer bundles' paths."""
    from eyegc.common.inference import tta_ops_for

    look_up_option(source, SOURCES, what="layer source")
    _check_sectors(sectors)
    build_pipeline(C, seed)  # validates C before any slow work
    check_options(THICKNESS_OPTIONS, {"folds": folds, "seed": seed})
    layers = get_task(LAYERS_TASK)
    tta_ops_for(layers, tta)  # an unknown mode fails now, not at prediction time
    models = [Path(m) for m in layers_models]
    if source == "predicted" and not models:
        raise EyegcError(
            "give the goals-layers bundle(s) that segment the layers (--layers-model RUN), "
            "or fit on the ground-truth masks with --source truth"
        )
    return get_task(GLAUCOMA_TASK), layers, models


def _check_class_counts(labels: np.ndarray, split: str, data_root: Path, folds: int) -> np.ndarray:
    """Normal and glaucoma case counts; both classes, and enough of each for ``folds`` stratified folds."""
    counts = np.bincount(labels, minlength=2)
    if counts.min() == 0:
        raise EyegcError(
            f"the {split!r} split of {data_root} holds only {'normal' if counts[0] else 'glaucoma'} cases; "
            "the model needs both classes"
        )
    if counts.min() < 2:
        raise EyegcError(
            f"{counts[0]} normal and {counts[1]} glaucoma cases: cross-validation needs at least 2 of each class"
        )
    if counts.min() < folds:
        raise EyegcError(
            f"{counts[0]} normal and {counts[1]} glaucoma cases cannot be split into {folds} stratified folds; "
            f"use --folds {int(counts.min())} or fewer"
        )
    return counts


def _layer_source(
    source: str,
    layers: TaskPlugin,
    cases: Sequence[Case],
    data_root: Path,
    split: str,
    bundles: list[Bundle],
    tta: str,
    device: str,
) -> tuple[dict[str, Case] | None, Any, list[str]]:
    """Where the layer maps come from: ground-truth cases (``truth``) or a predictor of the bundles, and its TTA ops."""
    from eyegc.common.inference import Predictor, resolve_device

    if source == "truth":
        by_id = {c.case_id: c for c in layers.list_cases(Path(data_root), split)}
        lacking = [c.case_id for c in cases if c.case_id not in by_id]
        if lacking:
            raise DataError(
                f"no layer mask for case(s) {', '.join(lacking[:5])} of {data_root}; --source truth needs one"
            )
        return {c.case_id: by_id[c.case_id] for c in cases}, None, []
    predictor = Predictor(layers, bundles, tta=tta, device=resolve_device(device))
    return None, predictor, list(predictor.ops)


def _cross_validation_figures(
    glaucoma: TaskPlugin, oof: np.ndarray, labels: np.ndarray, case_ids: list[str]
) -> tuple[float, dict[str, Any]]:
    """The threshold (Youden's J) and the task's metric of the out-of-fold probabilities."""
    threshold, youden_j = _youden_threshold(oof, labels)
    grades = (oof >= threshold).astype(np.int64)
    result = glaucoma.metric(
        GLAUCOMA_TASK,
        [np.array([g]) for g in grades],
        [np.array([y]) for y in labels],
        case_ids,
        [np.array([[1.0 - p, p]]) for p in oof],
    )
    figures = {k: _json_number(v) for k, v in result.leaderboard.items()}
    figures["youden_j"] = _json_number(youden_j)
    return threshold, figures


def _model_document(
    glaucoma: TaskPlugin,
    pipeline: Any,
    C: float,
    sectors: int,
    threshold: float,
    layer_source: dict[str, Any],
    run: dict[str, Any],
    figures: dict[str, Any],
) -> dict[str, Any]:
    """``thickness_model.json``: features, scaler, regression, threshold, layer source, training run, figures."""
    scaler, regression = pipeline[0], pipeline[-1]
    names = feature_names(sectors)
    coef = [float(v) for v in regression.coef_[0]]
    return {
        "format": MODEL_FORMAT,
        "task": GLAUCOMA_TASK,
        "head": glaucoma.classes[0].key,
        "layers_task": LAYERS_TASK,
        "features": {
            "names": names,
            "sectors": int(sectors),
            "layers": dict(THICKNESS_LAYERS),
            "units": "pixels per column (layer_thickness), averaged per sector",
        },
        "scaler": {"mean": [float(v) for v in scaler.mean_], "scale": [float(v) for v in scaler.scale_]},
        "logistic_regression": {
            "coef": coef,
            "intercept": float(regression.intercept_[0]),
            "C": float(C),
            "class_weight": "balanced",
        },
        "threshold": threshold,
        **layer_source,
        "training": run,
        "cross_validation": figures,
        "coefficients": dict(sorted(zip(names, coef, strict=True), key=lambda item: -abs(item[1]))),
        "eyegc_version": eyegc_version(),
    }


def _write_features_csv(
    path: Path,
    case_ids: list[str],
    labels: np.ndarray,
    oof: np.ndarray,
    fitted: np.ndarray,
    features: np.ndarray,
    names: list[str],
) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "glaucoma", "cv_probability", "fitted_probability", *names])
        for n, case_id in enumerate(case_ids):
            row = [f"{v:.6g}" for v in features[n]]
            writer.writerow([case_id, int(labels[n]), f"{oof[n]:.6f}", f"{fitted[n]:.6f}", *row])


def _resolve_layer_bundles(model: dict[str, Any], layers_models: Sequence[Path] | None) -> list[Bundle]:
    """The layer bundles to segment with: the stored ones (checked unchanged) or ``layers_models``."""
    where = model["path"]
    stored = model["layers_models"]
    if layers_models is None:
        if not stored:
            raise BundleError(
                f"{where} was fit on ground-truth layers and names no layer bundle; "
                "give the goals-layers bundle(s) to segment with (--layers-model RUN)"
            )
        for entry in stored:
            config = Path(entry["path"]) / CONFIG_NAME
            if not config.is_file():
                raise BundleError(
                    f"layer bundle {entry['path']} named in {where} is missing; "
                    "if it moved, pass its new folder with --layers-model"
                )
            if sha256_file(config) != entry["bundle_sha256"]:
                raise BundleError(
                    f"layer bundle {entry['path']} changed since the thickness model was fit (its bundle.json "
                    f"sha256 differs from the one in {where}); refit with `eyegc thickness-model fit`"
                )
        return _load_layer_bundles([Path(e["path"]) for e in stored])
    models = [Path(m) for m in layers_models]
    if not models:
        raise BundleError("--layers-model was given without a bundle; name at least one goals-layers bundle")
    bundles = _load_layer_bundles(models)
    if model["source"] == "predicted":
        expected = sorted(e["bundle_sha256"] for e in stored)
        found = []
        for bundle in bundles:
            digest = sha256_file(Path(bundle.path) / CONFIG_NAME)
            if digest not in expected:
                raise BundleError(
                    f"layer bundle {bundle.path} is not one this thickness model was fit with (its bundle.json sha256 "
                    f"matches none in {where}); its thickness features would differ. Pass the bundle(s) it was fit "
                    "with, or refit with `eyegc thickness-model fit`"
                )
            found.append(digest)
        if sorted(found) != expected:
            raise BundleError(
                f"{where} was fit with an ensemble of {len(expected)} layer bundle(s); give exactly those "
                f"({', '.join(e['path'] for e in stored)}, possibly moved) with --layers-model"
            )
    return bundles


def _predict_cases(doc: dict[str, Any], predictor: Any, paths: Sequence[Path], tmp: Path) -> int:
    """Each image's glaucoma prediction into ``tmp`` and its features into ``thickness_features.csv``;
    returns how many are predicted glaucoma."""
    layers, glaucoma = get_task(LAYERS_TASK), get_task(GLAUCOMA_TASK)
    threshold, sectors = float(doc["threshold"]), int(doc["features"]["sectors"])
    positives = 0
    with open(tmp / ".thickness_features.csv.partial", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "glaucoma_probability", "glaucoma", *doc["features"]["names"]])
        for path in tqdm(paths, desc="thickness model", unit="case"):
            case_id = split_image_suffix(path.name)[0]
            index_map = predictor.predict(layers.read_image(path))[0]
            features = thickness_features(index_map, sectors)
            p = float(apply_thickness_model(doc, features)[0])
            grade = int(p >= threshold)
            positives += grade
            write_classification_case(tmp, case_id, glaucoma.classes, np.array([grade]), np.array([[1.0 - p, p]]))
            writer.writerow([case_id, f"{p:.6f}", grade, *(f"{v:.6g}" for v in features)])
    os.replace(tmp / ".thickness_features.csv.partial", tmp / "thickness_features.csv")
    return positives


def predict_thickness_model(
    model: Path,
    images: Path,
    out: Path,
    *,
    tta: str | None = None,
    device: str = "cpu",
    layers_models: Sequence[Path] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Predict glaucoma for every image in a folder with a thickness model; write ``goals-glaucoma`` predictions.

    Each image is segmented by the layer bundle(s), its features are computed and the model is
    applied by hand from the JSON (:func:`apply_thickness_model`). ``out/<case_id>.json`` holds
    grade ``p >= threshold`` and probabilities ``[1 - p, p]`` — the layout that
    ``eyegc evaluate goals-glaucoma --pred OUT`` and ``eyegc submission goals-glaucoma`` read —
    and ``out/thickness_features.csv`` the features and probability of each case. ``out``
    appears only when every case succeeded.

    Args:
        model: the folder written by :func:`fit_thickness_model` (or its ``thickness_model.json``).
        images: folder of B-scans (e.g. ``Validation/Image`` or the official ``Test/Image``).
        out: the prediction folder to create.
        tta: TTA mode of the layer model; None uses the one the model was fit with.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``, for the layer model.
        layers_models: layer bundle folder(s) replacing the stored paths (bundles that moved, or
            any goals-layers bundle for a model fit on ground-truth layers). For a model fit on
            predicted layers they must be the very bundles it was fit with (same ``bundle.json`` sha256).
        overwrite: replace an existing ``out``.

    Returns:
        A summary: ``cases``, ``positives`` (predicted glaucoma), ``threshold``, ``members``,
        ``tta``, ``seconds_per_case``.

    Raises:
        BundleError: a damaged model; a stored layer bundle missing or changed since the fit
            (the message names it), or a replacement that is not the bundle it was fit with.
        DataError: no images, or an unreadable or wrongly sized image.
    """
    from eyegc.common.inference import Predictor, list_images, resolve_device

    doc = load_thickness_model(Path(model))
    paths = list_images(Path(images))
    if overwrite:
        stored = [Path(e["path"]) for e in doc["layers_models"]]
        _refuse_overwriting_inputs(
            out, [Path(images), Path(doc["path"]).parent, *stored, *map(Path, layers_models or [])]
        )
    bundles = _resolve_layer_bundles(doc, layers_models)
    layers = get_task(LAYERS_TASK)
    predictor = Predictor(layers, bundles, tta=doc["tta"] if tta is None else tta, device=resolve_device(device))
    started = time.perf_counter()
    with atomic_output_dir(Path(out), overwrite=overwrite) as tmp:
        positives = _predict_cases(doc, predictor, paths, tmp)
    elapsed = time.perf_counter() - started
    return {
        "cases": len(paths),
        "positives": positives,
        "threshold": float(doc["threshold"]),
        "members": predictor.members,
        "tta": list(predictor.ops),
        "seconds_per_case": elapsed / len(paths),
    }


def describe_thickness_model(summary: dict[str, Any], top: int = 8) -> str:
    """Readable lines from :func:`fit_thickness_model`'s summary (or a loaded model): CV figures, top coefficients."""
    cv = summary.get("cross_validation", {})
    sectors = summary.get("sectors", summary.get("features", {}).get("sectors", "?"))

    def fmt(value: Any) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    lines = [
        f"thickness model ({summary.get('source')} layers, {sectors} sectors): "
        f"cross-validated auc {fmt(cv.get('auc'))} [{fmt(cv.get('auc_ci_low'))}, {fmt(cv.get('auc_ci_high'))}]  "
        f"accuracy {fmt(cv.get('accuracy'))}  f1 {fmt(cv.get('f1'))}  kappa {fmt(cv.get('kappa'))}  "
        f"threshold {fmt(summary.get('threshold'))}",
        "coefficients per standard deviation (negative: thinner = more likely glaucoma):",
    ]
    for name, value in list(summary.get("coefficients", {}).items())[:top]:
        lines.append(f"  {name:<12} {value:+.4f}")
    return "\n".join(lines)
