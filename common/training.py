"""k-fold training on a task's official layout, with exact resume and leaderboard-metric model selection."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from eyegc.common.bundle import (
    BUNDLE_FORMAT,
    SPLITS_NAME,
    WEIGHTS_NAME,
    build_from_config,
    cases_fingerprint,
    check_input_channels,
    check_same_data,
    eyegc_version,
    read_config,
    save_config_keeping_signature,
    save_signed_config,
    write_checksums,
)
from eyegc.common.datafiles import check_training_classes
from eyegc.common.errors import EyegcError
from eyegc.common.inference import predict_with_tta, resolve_device
from eyegc.common.losses import build_loss
from eyegc.common.networks import CLASSIFIERS, NETWORKS, check_network_kwargs, load_pretrained
from eyegc.common.options import TRAIN_OPTIONS, check_options
from eyegc.common.outputs import OutputKind, check_output_path
from eyegc.common.plugin import Case, TaskKind, TaskPlugin
from eyegc.common.postprocessing import plugin_postprocess, postprocess
from eyegc.common.preprocessing import CLAHE_SPACES, prepare_image, prepare_target, resize_probabilities
from eyegc.common.registry import look_up_option
from monai.data import DataLoader, Dataset, get_track_meta, set_track_meta
from monai.transforms import (
    Compose,
    DeleteItemsd,
    Rand2DElasticd,
    RandAdjustContrastd,
    RandCropByLabelClassesd,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandRotated,
    RandScaleIntensityd,
    SpatialPadd,
)
from sklearn.model_selection import KFold
from tqdm import tqdm

__all__ = ["EpochCallback", "TrainConfig", "check_train_config", "has_checkpoint", "make_splits", "train"]

#: called after each epoch's checkpoint is saved: (fold, epoch, history). May raise to stop.
EpochCallback = Callable[[int, int, dict[str, list[float]]], None]


@dataclass
class TrainConfig:
    """Everything ``eyegc train`` lets the user choose; ``None`` means the task's default."""

    model: str | None = None
    network_kwargs: dict[str, Any] | None = None
    folds: int | None = None
    fold: str = "all"
    epochs: int | None = None
    batch_size: int | None = None
    patch_size: int | None = None
    working_scale: float | None = None
    loss: str | None = None
    class_weights: list[float] | None = None
    learning_rate: float | None = None
    patches_per_image: int | None = None
    pretrained: str | None = None
    device: str = "auto"
    seed: int = 0
    tune: bool = True
    #: "torch" (MONAI networks) or "paddle" (classification tasks; eyegc.common.paddle_backend).
    backend: str = "torch"
    #: CLAHE before normalising: "none", "channels" or "lab"; ``clahe_clip`` its clip limit.
    clahe: str | None = None
    clahe_clip: float | None = None
    fov_mask: bool | None = None
    validate_every: int | None = None
    #: folds trained at once, each in its own process with ``torch threads / jobs`` threads (CPU).
    jobs: int = 1
    #: a missing ground-truth class folder, or a class no training case shows, is no error (``--allow-missing-class``).
    allow_missing_class: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def check_train_config(cfg: TrainConfig) -> None:
    """Check every numeric setting against its option's rule (:data:`eyegc.common.options.TRAIN_OPTIONS`).

    ``None`` is "the task's default"; ``extra["input_size"]`` is checked as ``--input-size``.

    Raises:
        EyegcError: the first bad value, naming its command-line option and the allowed range.
    """
    values = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    values["input_size"] = cfg.extra.get("input_size")
    check_options(TRAIN_OPTIONS, values)


def has_checkpoint(run: Path) -> bool:
    """Whether ``run`` holds a fold checkpoint (torch or paddle) that ``resume=True`` continues."""
    from eyegc.common.paddle_backend import PADDLE_CHECKPOINT_NAME

    run = Path(run)
    return any(run.glob("fold_*/checkpoint.pt")) or any(run.glob(f"fold_*/{PADDLE_CHECKPOINT_NAME}"))


def _or_default(value: Any, default: Any) -> Any:
    """``value`` unless it is ``None``: 0 is a value (its option's rule allows it or not), never "the default"."""
    return default if value is None else value


def make_splits(case_ids: Sequence[str], folds: int, seed: int) -> list[dict[str, list[str]]]:
    """A deterministic k-fold split of ``case_ids`` (order-independent)."""
    ids = sorted(case_ids)
    if folds < 2:
        raise EyegcError(f"--folds must be at least 2 (got {folds}): each fold validates on held-out cases")
    if len(ids) < folds:
        raise EyegcError(
            f"{len(ids)} training cases cannot be split into {folds} folds; use --folds {len(ids)} or fewer"
        )
    kfold = KFold(n_splits=folds, shuffle=True, random_state=seed)
    return [
        {"train": [ids[i] for i in train], "val": [ids[i] for i in val]}
        for train, val in kfold.split(np.arange(len(ids)))
    ]


def _resolve_clahe(plugin: TaskPlugin, cfg: TrainConfig) -> dict[str, Any] | None:
    """The task's CLAHE settings with the user's ``--clahe``/``--clahe-clip`` on top (``None`` = off)."""
    clahe = dict(plugin.defaults.clahe) if plugin.defaults.clahe else None
    if cfg.clahe is not None:
        space = look_up_option(cfg.clahe, ("none", *CLAHE_SPACES), what="CLAHE mode")
        clahe = None if space == "none" else {**(clahe or {}), "space": space}
    if cfg.clahe_clip is not None:  # its range is checked with the other numbers (check_train_config)
        clahe = {**(clahe or {"space": "channels"}), "clip_limit": cfg.clahe_clip}
    if clahe and clahe.get("space") == "lab" and plugin.in_channels != 3:
        raise EyegcError(f"CLAHE in L*a*b* needs RGB input; {plugin.name} feeds {plugin.in_channels} channel(s)")
    return clahe


def _resolve(plugin: TaskPlugin, cfg: TrainConfig) -> dict[str, Any]:
    check_train_config(cfg)
    d = plugin.defaults
    classification = plugin.kind == TaskKind.CLASSIFICATION
    network = _or_default(cfg.model, d.network)
    look_up_option(network, NETWORKS, what="network")
    if classification != (network in CLASSIFIERS):
        wanted = sorted(CLASSIFIERS) if classification else sorted(set(NETWORKS) - CLASSIFIERS)
        raise EyegcError(f"{network} does not fit a {plugin.kind.value} task; choose one of {', '.join(wanted)}")
    kwargs = dict(d.network_kwargs) if network == d.network else {}
    kwargs.update(cfg.network_kwargs or {})
    try:
        check_network_kwargs(network, kwargs)  # by name now; bad values fail when the network is first built
    except EyegcError as exc:
        raise EyegcError(f"--network-kwargs: {exc}") from None
    loss = _or_default(cfg.loss, d.loss)
    head_classes = [int(c.num_classes or 0) for c in plugin.classes] if classification else None
    build_loss(loss, plugin.kind, cfg.class_weights, head_classes)  # validates the name and weights early
    if cfg.class_weights and len(cfg.class_weights) != len(plugin.classes):
        what = "heads" if classification else "classes"
        raise EyegcError(
            f"--class-weights needs {len(plugin.classes)} values, one per {what[:-2]} "
            f"({', '.join(c.key for c in plugin.classes)})"
        )
    preprocessing: dict[str, Any] = {
        "working_scale": _or_default(cfg.working_scale, d.working_scale),
        "normalize": d.normalize,
        "clahe": _resolve_clahe(plugin, cfg),
        "fov_mask": bool(d.fov_mask if cfg.fov_mask is None else cfg.fov_mask),
    }
    if preprocessing["fov_mask"] and plugin.in_channels != 3:
        raise EyegcError(f"--fov-mask needs RGB fundus input; {plugin.name} feeds {plugin.in_channels} channel(s)")
    preprocessing.update(cfg.extra.get("preprocessing", {}))
    thresholds = {c.key: 0.5 for c in plugin.classes if not classification or c.num_classes == 2}
    config: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "task": plugin.name,
        "eyegc_version": eyegc_version(),
        "kind": plugin.kind.value,
        "classes": [c.key for c in plugin.classes],
        "in_channels": plugin.in_channels,
        "network": {"name": network, "kwargs": kwargs},
        "preprocessing": preprocessing,
        "patch_size": _or_default(cfg.patch_size, d.patch_size),
        "allowed_tta": {k: list(v) for k, v in plugin.allowed_tta.items()},
        "training": {
            "folds": _or_default(cfg.folds, d.folds),
            "epochs": _or_default(cfg.epochs, d.epochs),
            "batch_size": _or_default(cfg.batch_size, d.batch_size),
            "learning_rate": _or_default(cfg.learning_rate, d.learning_rate),
            "loss": loss,
            "class_weights": cfg.class_weights,
            "patches_per_image": _or_default(cfg.patches_per_image, d.patches_per_image),
            "elastic_probability": float(d.elastic_probability),
            "validate_every": int(_or_default(cfg.validate_every, d.validate_every)),
            "seed": cfg.seed,
            "pretrained": cfg.pretrained,
            "metric": plugin.metric.primary,
            "allow_missing_class": bool(cfg.allow_missing_class),
        },
        "postprocessing": {
            "thresholds": thresholds,
            "min_component_size": {c.key: 0 for c in plugin.classes},
            "tuned": False,
        },
        "folds": {},
        "cross_validation": None,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if classification:
        config["head_classes"] = head_classes
        config["patch_size"] = 0
        size = _or_default(cfg.extra.get("input_size"), d.input_size)
        if not size:
            raise EyegcError(f"{plugin.name}: a classification task needs an input size (ModelDefaults.input_size)")
        config["preprocessing"]["input_size"] = [int(size[0]), int(size[1])]
    return config


def _augmentation(
    patch: int,
    ops: set[str],
    patches_per_image: int,
    crop_classes: int,
    categorical: bool = False,
    roi: bool = False,
    classification: bool = False,
    elastic_probability: float = 0.15,
) -> Compose:
    """Random patches and augmentation; class-index labels (``categorical``) and fields of view are resampled nearest.

    Classification moves only the image (its label is a grade).
    """
    if classification:
        keys = ["image"]
        modes: tuple[str, ...] = ("bilinear",)
    else:
        keys = ["image", "label"] + (["roi"] if roi else [])
        modes = ("bilinear", "nearest" if categorical else "bilinear") + (("nearest",) if roi else ())
    steps: list[Any] = []
    if patch:
        # Patches centred on each class (and background) equally often: rare, small lesion types
        # are seen as often as large ones. "crop_label" holds background + one channel per class.
        steps += [
            SpatialPadd([*keys, "crop_label"], spatial_size=(patch, patch)),
            RandCropByLabelClassesd(
                keys,
                label_key="crop_label",
                spatial_size=(patch, patch),
                ratios=[1.0] * crop_classes,
                num_classes=crop_classes,
                num_samples=patches_per_image,
                warn=False,
            ),
        ]
    if not classification:
        steps.append(DeleteItemsd("crop_label"))
    # Geometric augmentation stays inside the symmetries the task allows for TTA (OCT: left-right only).
    if "flip_lr" in ops:
        steps.append(RandFlipd(keys, prob=0.5, spatial_axis=1))
    if "flip_ud" in ops:
        steps.append(RandFlipd(keys, prob=0.5, spatial_axis=0))
    if "rot90" in ops and patch:
        steps.append(RandRotate90d(keys, prob=0.5, max_k=3))
    steps.append(RandRotated(keys, range_x=0.26, prob=0.3, mode=modes, padding_mode="zeros"))
    if elastic_probability > 0:
        steps.append(
            Rand2DElasticd(
                keys,
                spacing=(32, 32),
                magnitude_range=(1, 2),
                prob=elastic_probability,
                mode=modes,
                padding_mode="zeros",
            )
        )
    steps += [
        RandScaleIntensityd("image", factors=0.15, prob=0.5),
        RandAdjustContrastd("image", gamma=(0.8, 1.25), prob=0.3),
        RandGaussianNoised("image", std=0.05, prob=0.2),
    ]
    return Compose(steps)


def _crop_label(label: torch.Tensor, kind: TaskKind) -> torch.Tensor:
    """Background + one channel per class, for class-balanced patch sampling."""
    if kind == TaskKind.MULTICLASS_SEGMENTATION:
        return label  # class indices already
    foreground = label > 0
    return torch.cat([~foreground.any(dim=0, keepdim=True), foreground]).to(torch.uint8)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _save_atomic(obj: Any, path: Path) -> None:
    # Serialised in memory, then written by Python: a full disk or a lost mount is then an OSError
    # naming the file and its cause (torch's own writer reports only "file write failed").
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(buffer.getbuffer())
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror, str(path)) from None
    os.replace(tmp, path)


@dataclass
class _Data:
    cases: list[Case]
    images: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    targets: dict[str, np.ndarray]
    #: field of view at the original size (metric) and at the working size (loss); absent: whole image.
    rois: dict[str, np.ndarray] = field(default_factory=dict)
    roi_tensors: dict[str, torch.Tensor] = field(default_factory=dict)


def _load_data(plugin: TaskPlugin, cases: list[Case], preprocessing: dict[str, Any]) -> _Data:
    data = _Data(cases, {}, {}, {})
    for case in tqdm(cases, desc="load training data", unit="case", leave=False):
        raw = plugin.read_image(case.image)
        target = plugin.read_target(case)
        data.targets[case.case_id] = target
        data.images[case.case_id] = prepare_image(raw, preprocessing)
        if plugin.kind == TaskKind.CLASSIFICATION:
            data.labels[case.case_id] = torch.as_tensor(np.asarray(target, dtype=np.int64).reshape(-1))
            continue
        data.labels[case.case_id] = prepare_target(
            target, preprocessing, categorical=plugin.kind == TaskKind.MULTICLASS_SEGMENTATION
        )
        roi = plugin.read_roi(case)
        if roi is not None:
            data.rois[case.case_id] = roi.astype(bool)
            data.roi_tensors[case.case_id] = prepare_target(roi[None].astype(np.uint8), preprocessing, categorical=True)
    if data.rois and len(data.rois) != len(cases):
        raise EyegcError(f"{plugin.name}: some training cases have a field of view and others none")
    return data


def _outside_roi_is_background(logits: torch.Tensor, roi: torch.Tensor | None) -> torch.Tensor:
    """Logits outside the field of view fixed at a confident "no" (sigmoid 2e-9), so they add no loss nor gradient.

    With the target 0 there too, Dice and BCE count only pixels inside the field of view.
    """
    if roi is None:
        return logits
    return torch.where(roi > 0, logits, torch.full_like(logits, -20.0))


def _classify_batch(network: torch.nn.Module, images: torch.Tensor, head_sizes: Sequence[int]) -> torch.Tensor:
    """Per-head softmax of a batch, ``(B, heads, max classes)`` zero-padded."""
    logits = network(images).float()
    out = logits.new_zeros((len(images), len(head_sizes), max(head_sizes)))
    for h, chunk in enumerate(logits.split(list(head_sizes), dim=1)):
        out[:, h, : chunk.shape[1]] = torch.softmax(chunk, dim=1)
    return out


def _validate(
    plugin: TaskPlugin,
    network: torch.nn.Module,
    data: _Data,
    ids: list[str],
    config: dict[str, Any],
    device: torch.device,
) -> tuple[float, dict[str, np.ndarray]]:
    """The leaderboard metric on the validation cases at the original size (threshold 0.5, no TTA)."""
    network.eval()
    if plugin.kind == TaskKind.CLASSIFICATION:
        return _validate_classification(plugin, network, data, ids, config, device)
    probabilities, predictions = {}, []
    with torch.no_grad():
        for case_id in ids:
            probs = predict_with_tta(
                network, data.images[case_id].to(device), ("identity",), int(config["patch_size"]), plugin.kind
            )
            full = resize_probabilities(probs.float().cpu(), data.targets[case_id].shape[-2:]).numpy()
            probabilities[case_id] = full.astype(np.float16)
            predictions.append(plugin_postprocess(plugin, full, {}))
    targets = [data.targets[c] for c in ids]
    rois = [data.rois.get(c) for c in ids]
    result = plugin.metric(
        plugin.name, predictions, targets, ids, probabilities=[probabilities[c] for c in ids], rois=rois
    )
    return float(result.leaderboard[plugin.metric.primary]), probabilities


def _validate_classification(
    plugin: TaskPlugin,
    network: torch.nn.Module,
    data: _Data,
    ids: list[str],
    config: dict[str, Any],
    device: torch.device,
) -> tuple[float, dict[str, np.ndarray]]:
    probabilities: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for start in range(0, len(ids), 8):
            chunk = ids[start : start + 8]
            batch = torch.stack([data.images[c] for c in chunk]).to(device)
            probs = _classify_batch(network, batch, config["head_classes"]).cpu().numpy()
            probabilities.update(zip(chunk, probs, strict=True))
    predictions = [postprocess(probabilities[c], plugin.kind, config["classes"], config["postprocessing"]) for c in ids]
    targets = [data.targets[c] for c in ids]
    result = plugin.metric(plugin.name, predictions, targets, ids, probabilities=[probabilities[c] for c in ids])
    return float(result.leaderboard[plugin.metric.primary]), probabilities


def _plot_curve(history: dict[str, list[float]], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = np.arange(1, len(history["loss"]) + 1)
    ax.plot(epochs, history["loss"], label="training loss", color="tab:blue")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    metric_values = np.asarray(history["metric"], dtype=float)
    shown = np.isfinite(metric_values)  # epochs without validation are NaN
    ax2.plot(epochs[shown], metric_values[shown], ".-", label=f"validation {metric}", color="tab:orange")
    ax2.set_ylabel(metric)
    fig.legend(loc="upper center", ncol=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _train_fold(
    plugin: TaskPlugin,
    run: Path,
    config: dict[str, Any],
    data: _Data,
    split: dict[str, list[str]],
    fold: int,
    device: torch.device,
    callbacks: Sequence[EpochCallback],
    position: int | None = None,
) -> dict[str, Any]:
    t = config["training"]
    fold_dir = run / f"fold_{fold}"
    fold_dir.mkdir(exist_ok=True)
    checkpoint_path = fold_dir / "checkpoint.pt"
    base_seed = int(t["seed"]) * 1000 + fold
    _seed_everything(base_seed)
    network = build_from_config(config)
    if t.get("pretrained") and not checkpoint_path.is_file():
        load_pretrained(network, Path(t["pretrained"]))
    network.to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=float(t["learning_rate"]), weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=int(t["epochs"]), power=0.9)
    loss_fn = build_loss(t["loss"], plugin.kind, t.get("class_weights"), config.get("head_classes"))
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    history: dict[str, list[float]] = {"loss": [], "metric": []}
    best = {"epoch": 0, "score": -np.inf}
    start_epoch = 0
    if checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location=device, weights_only=True)
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state["scaler"] and scaler.is_enabled():  # empty when the run started on the CPU
            scaler.load_state_dict(state["scaler"])
        history = {k: list(v) for k, v in state["history"].items()}
        best = {"epoch": int(state["best_epoch"]), "score": float(state["best_score"])}
        start_epoch = int(state["epoch"])
    ops = set().union(*config["allowed_tta"].values())
    crop_classes = len(config["classes"]) + (plugin.kind == TaskKind.MULTILABEL_SEGMENTATION)
    categorical = plugin.kind == TaskKind.MULTICLASS_SEGMENTATION
    classification = plugin.kind == TaskKind.CLASSIFICATION
    with_roi = bool(data.roi_tensors)
    patch = int(config["patch_size"])
    transforms = _augmentation(
        patch,
        ops,
        int(t["patches_per_image"]),
        crop_classes,
        categorical,
        roi=with_roi,
        classification=classification,
        elastic_probability=float(t.get("elastic_probability", 0.15)),
    )
    items = []
    for c in split["train"]:
        item = {"image": data.images[c], "label": data.labels[c]}
        if not classification:
            item["crop_label"] = _crop_label(data.labels[c], plugin.kind)
        if with_roi:
            item["roi"] = data.roi_tensors[c]
        items.append(item)
    dataset = Dataset(items, transform=transforms)
    epochs, batch_size = int(t["epochs"]), int(t["batch_size"])
    validate_every = max(1, int(t.get("validate_every", 1)))
    per_image = int(t["patches_per_image"]) if patch and not classification else 1
    progress = tqdm(
        range(start_epoch, epochs),
        desc=f"fold {fold}",
        unit="epoch",
        initial=start_epoch,
        total=epochs,
        position=position,
    )
    # MONAI metadata tracking costs about a third of the augmentation time and nothing here reads it.
    tracking = get_track_meta()
    set_track_meta(False)
    try:
        for epoch in progress:
            # Every epoch is a pure function of (weights, optimizer state, epoch): resume is exact.
            epoch_seed = base_seed * 10007 + epoch
            _seed_everything(epoch_seed)
            transforms.set_random_state(seed=epoch_seed % (2**32))
            loader = DataLoader(
                dataset,
                batch_size=max(1, batch_size // per_image),
                shuffle=True,
                num_workers=0,
                generator=torch.Generator().manual_seed(epoch_seed),
            )
            network.train()
            losses = []
            with warnings.catch_warnings():
                # A class absent from an image cannot centre a patch; MONAI says so on every draw.
                warnings.filterwarnings("ignore", message=".*no available indices of class")
                # The loader yields every patch of a few images; --batch-size counts patches per step.
                for loaded in loader:
                    for start in range(0, len(loaded["image"]), batch_size):
                        images = loaded["image"][start : start + batch_size].to(device)
                        labels = loaded["label"][start : start + batch_size].to(device)
                        roi = loaded["roi"][start : start + batch_size].to(device) if with_roi else None
                        optimizer.zero_grad(set_to_none=True)
                        with torch.autocast(device.type, enabled=device.type == "cuda"):
                            loss = loss_fn(_outside_roi_is_background(network(images), roi), labels)
                        scaler.scale(loss).backward()
                        scaler.step(optimizer)
                        scaler.update()
                        losses.append(float(loss.detach()))
            scheduler.step()
            validated = (epoch + 1) % validate_every == 0 or epoch + 1 == epochs
            score = _validate(plugin, network, data, split["val"], config, device)[0] if validated else float("nan")
            history["loss"].append(float(np.mean(losses)))
            history["metric"].append(score)
            improved = validated and np.isfinite(score) and not score <= best["score"]
            # The first epoch is always kept: a metric that is NaN on every epoch (AUC on a one-class fold) must still
            # leave weights behind.
            if best["epoch"] == 0 or improved:
                best = {"epoch": epoch + 1, "score": score}
                _save_atomic(network.state_dict(), fold_dir / WEIGHTS_NAME)
            _save_atomic(
                {
                    "network": network.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "history": history,
                    "epoch": epoch + 1,
                    "best_epoch": best["epoch"],
                    "best_score": best["score"],
                },
                checkpoint_path,
            )
            (fold_dir / "history.json").write_text(json.dumps({**history, **best}, indent=1))
            shown = next((m for m in reversed(history["metric"]) if np.isfinite(m)), float("nan"))  # last validated
            progress.set_postfix(loss=f"{history['loss'][-1]:.4f}", **{config["training"]["metric"]: f"{shown:.4f}"})
            for callback in callbacks:
                callback(fold, epoch + 1, history)
    finally:
        set_track_meta(tracking)
    _plot_curve(history, config["training"]["metric"], fold_dir / "training_curve.png")
    # Out-of-fold probabilities of the best epoch, recomputed so that a resumed run has them too.
    network.load_state_dict(torch.load(fold_dir / WEIGHTS_NAME, map_location=device, weights_only=True))
    _save_oof(run, _validate(plugin, network, data, split["val"], config, device)[1])
    return {
        "best_epoch": best["epoch"],
        "best_score": best["score"],
        "epochs_done": len(history["loss"]),
        "weights": f"fold_{fold}/{WEIGHTS_NAME}",
        "validation_cases": split["val"],
    }


def _die_with_parent() -> None:
    """Worker initialiser: on Linux, the kernel ends a worker whose parent died (killed, timed out)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _fold_job(
    plugin: TaskPlugin,
    run: Path,
    config: dict[str, Any],
    data: dict[str, Any],
    split: dict[str, list[str]],
    fold: int,
    device: torch.device,
    threads: int,
    position: int,
) -> dict[str, Any]:
    """One fold in a worker process (:func:`_train_folds_in_parallel`); ``data`` is :func:`_data_as_arrays`."""
    torch.set_num_threads(threads)
    return _train_fold(plugin, run, config, _data_from_arrays(data), split, fold, device, (), position=position)


def _data_as_arrays(data: _Data) -> dict[str, Any]:
    """``data`` with numpy arrays for tensors: pickled by value, not as one shared-memory file per tensor
    (thousands of cases would exceed the open-file limit and a container's small /dev/shm)."""
    state = dict(vars(data))
    for key in ("images", "labels", "roi_tensors"):
        state[key] = {k: v.numpy() for k, v in state[key].items()}
    return state


def _data_from_arrays(state: dict[str, Any]) -> _Data:
    state = dict(state)
    for key in ("images", "labels", "roi_tensors"):
        state[key] = {k: torch.from_numpy(v) for k, v in state[key].items()}
    return _Data(**state)


def _train_folds_in_parallel(
    plugin: TaskPlugin,
    run: Path,
    config: dict[str, Any],
    data: _Data,
    splits: list[dict[str, list[str]]],
    folds: list[int],
    device: torch.device,
    jobs: int,
    finished: Callable[[int, dict[str, Any], float], None],
) -> None:
    """Train ``folds`` in rounds of ``jobs``, each fold in a spawned process; ``finished`` records each as it ends.

    The folds of a round share the torch threads equally (a last, smaller round gets more each),
    so thread counts, and the weights, do not depend on timing. On a CPU, small convolutions use
    two threads poorly and augmentation runs on one, so two one-thread folds outrun one two-thread
    fold (benchmarks/README.md).
    """
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    total_threads = torch.get_num_threads()
    arrays = _data_as_arrays(data)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_die_with_parent) as pool:
        try:
            for first in range(0, len(folds), jobs):
                batch = folds[first : first + jobs]
                threads = max(1, total_threads // len(batch))
                running: dict[Future[dict[str, Any]], tuple[int, float]] = {
                    pool.submit(_fold_job, plugin, run, config, arrays, splits[fold], fold, device, threads, slot): (
                        fold,
                        time.perf_counter(),
                    )
                    for slot, fold in enumerate(batch)
                }
                while running:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    failure: BaseException | None = None
                    for future in sorted(done, key=lambda f: running[f][0]):
                        fold, started = running.pop(future)
                        error = future.exception()
                        if error is None:
                            finished(fold, future.result(), time.perf_counter() - started)
                        elif failure is None:
                            failure = error
                    if isinstance(failure, BrokenProcessPool):
                        raise EyegcError(
                            "a fold's worker process died (out of memory or killed; or train() was called by a "
                            "script without an `if __name__ == '__main__':` guard, which spawned workers need); "
                            "rerun with --resume, with --jobs 1 if it happens again"
                        ) from None
                    if failure is not None:
                        raise failure
        except BaseException:
            # A failed or interrupted fold stops the others too (their checkpoints let --resume continue).
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _save_oof(run: Path, probabilities: dict[str, np.ndarray]) -> None:
    """Save probabilities quantised to 1/255 (uint8): tuning's 0.05 grid does not need more."""
    oof = run / "oof"
    oof.mkdir(exist_ok=True)
    for case_id, probs in probabilities.items():
        tmp = oof / f".{case_id}.tmp.npz"
        quantised = np.round(np.clip(probs.astype(np.float32), 0, 1) * 255).astype(np.uint8)
        np.savez(tmp, probabilities=quantised)
        os.replace(tmp, oof / f"{case_id}.npz")


def _prepare_run(plugin: TaskPlugin, data_root: Path, run: Path, cfg: TrainConfig, resume: bool) -> dict[str, Any]:
    if resume:
        config = read_config(run)
        if config["task"] != plugin.name:
            raise EyegcError(f"{run} holds a {config['task']} run; cannot resume it as {plugin.name}")
        check_input_channels(config, plugin, run)
        return config
    if run.exists() and any(run.iterdir()):
        raise EyegcError(
            f"{run} already exists and is not empty; pass --resume to continue it, or choose another --out"
        )
    return _resolve(plugin, cfg)


def train(
    plugin: TaskPlugin,
    data_root: Path,
    run: Path,
    cfg: TrainConfig | None = None,
    resume: bool = False,
    callbacks: Sequence[EpochCallback] = (),
) -> Path:
    """Train ``cfg.fold`` (``"all"`` or an index) of a k-fold split and write a bundle to ``run``.

    Each epoch ends with a checkpoint; ``resume=True`` continues exactly where an interrupted run
    stopped (the settings come from the run, not from ``cfg``). The best epoch per fold is chosen
    by the task's leaderboard metric on its validation fold; out-of-fold probabilities of that
    epoch are kept for :func:`eyegc.common.tuning.tune`. When every fold is done the thresholds
    are tuned (unless ``cfg.tune`` is False) and checksums written.

    Returns:
        The run folder.

    Raises:
        EyegcError: a setting out of its range (:func:`check_train_config`, before anything is read),
            unknown network arguments, bad data, or a run folder that cannot be used.
    """
    cfg = cfg or TrainConfig()
    check_train_config(cfg)  # before anything is read or written: a bad number is the whole message
    run, data_root = Path(run), Path(data_root)
    check_output_path(run, "--out", OutputKind.FOLDER, [("--data", data_root), ("--pretrained", cfg.pretrained)])
    if cfg.jobs > 1 and callbacks:
        raise EyegcError("epoch callbacks run in the training process: train with jobs=1 to use them")
    backend = look_up_option(cfg.backend, ("torch", "paddle"), what="backend")
    if resume and (run / "bundle.json").is_file():
        backend = read_config(run).get("backend", "torch")
    if backend == "paddle":
        if plugin.kind != TaskKind.CLASSIFICATION:
            raise EyegcError(f"the paddle backend trains classification tasks; {plugin.name} is {plugin.kind.value}")
        if cfg.jobs > 1:
            raise EyegcError("the paddle backend trains its folds one after another: use --jobs 1")
        from eyegc.common.paddle_backend import train_paddle

        return train_paddle(plugin, data_root, run, cfg, resume=resume)
    config = _prepare_run(plugin, data_root, run, cfg, resume)
    fresh = not resume
    try:
        return _train(plugin, data_root, run, cfg, config, callbacks)
    except BaseException:
        # A new run that failed (or was interrupted) before its first checkpoint leaves nothing behind.
        if fresh and run.is_dir() and not any(run.glob("fold_*/checkpoint.pt")):
            shutil.rmtree(run, ignore_errors=True)
        raise


def _check_network(config: dict[str, Any], data: _Data) -> None:
    """Build the network and run one patch through it, so bad settings fail before any training."""
    network = build_from_config(config)
    pretrained = config["training"].get("pretrained")
    if pretrained:
        load_pretrained(network, Path(pretrained))
    first = next(iter(data.images.values()))
    size = int(config["patch_size"]) or None
    shape = (size, size) if size else tuple(first.shape[-2:])
    try:
        with torch.no_grad():
            network.eval()(torch.zeros(1, first.shape[0], *shape))
    except Exception as exc:
        raise EyegcError(
            f"network {config['network']['name']} cannot take a {shape[1]}x{shape[0]} input ({str(exc)[:120]}); "
            "use a --patch-size (or, with --patch-size 0, a --working-scale) whose size is divisible by "
            "2 to the number of network strides, e.g. 128 or 256"
        ) from None


def _train(
    plugin: TaskPlugin,
    data_root: Path,
    run: Path,
    cfg: TrainConfig,
    config: dict[str, Any],
    callbacks: Sequence[EpochCallback],
) -> Path:
    t = config["training"]
    allow_missing_class = bool(t.get("allow_missing_class", False))
    cases = plugin.list_cases(data_root, "train", allow_missing_class=allow_missing_class)
    ids = [c.case_id for c in cases]
    splits_path = run / SPLITS_NAME
    if splits_path.is_file():
        splits = json.loads(splits_path.read_text())
    else:
        splits = make_splits(ids, int(t["folds"]), int(t["seed"]))
    missing = sorted({c for s in splits for c in s["train"] + s["val"]} - set(ids))
    if missing:
        raise EyegcError(f"the saved split names cases absent from {data_root}: {', '.join(missing[:5])}")
    if cfg.fold == "all":
        todo = list(range(len(splits)))
    else:
        if not str(cfg.fold).isdigit() or not 0 <= int(cfg.fold) < len(splits):
            raise EyegcError(f"--fold {cfg.fold} is not 'all' or a fold of this run (0..{len(splits) - 1})")
        todo = [int(cfg.fold)]
    device = resolve_device(cfg.device)
    fingerprint = cases_fingerprint(cases, data_root)
    check_same_data(config, fingerprint, data_root, "resume")
    data = _load_data(plugin, cases, config["preprocessing"])
    absent = check_training_classes(plugin, data.targets.values(), data_root, allow_missing_class)
    if absent:
        t["classes_without_ground_truth"] = absent
        note = f"note: training without ground truth for class(es) {', '.join(absent)} (--allow-missing-class)"
        tqdm.write(note, file=sys.stderr)
    _check_network(config, data)
    run.mkdir(parents=True, exist_ok=True)
    if not splits_path.is_file():
        splits_path.write_text(json.dumps(splits, indent=1) + "\n")
    config["data_fingerprint"] = fingerprint
    config["training"]["data_root"] = str(data_root.resolve())
    save_config_keeping_signature(run, config)
    todo = [f for f in todo if int((config["folds"].get(str(f)) or {}).get("epochs_done", 0)) < int(t["epochs"])]

    def finished(fold: int, info: dict[str, Any], seconds: float) -> None:
        config["folds"][str(fold)] = {**info, "seconds": round(seconds, 1)}
        config["folds"] = dict(sorted(config["folds"].items(), key=lambda item: int(item[0])))
        save_signed_config(run, config, fresh=[info["weights"]])

    if cfg.jobs > 1 and len(todo) > 1:
        _train_folds_in_parallel(plugin, run, config, data, splits, todo, device, min(cfg.jobs, len(todo)), finished)
    else:
        for fold in todo:
            started = time.perf_counter()
            info = _train_fold(plugin, run, config, data, splits[fold], fold, device, callbacks)
            finished(fold, info, time.perf_counter() - started)
    tunable = plugin.kind in (TaskKind.MULTILABEL_SEGMENTATION, TaskKind.CLASSIFICATION)
    if len(config["folds"]) == len(splits) and cfg.tune and tunable:
        from eyegc.common.tuning import tune

        tune(plugin, run, data_root)
    else:
        write_checksums(run)
    return run
