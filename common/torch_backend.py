"""The torch training backend: MONAI networks for every task kind, trained one fold at a time or
several folds side by side in worker processes (``jobs``, CPU).

The run around the folds (splits, data, resume, tuning) is :mod:`eyegc.common.training`'s and shared
with every backend; this module trains and loads one fold. It is found by name through the
``eyegc.backends`` entry-point group (:func:`eyegc.common.registry.get_backend`).
"""

from __future__ import annotations

import io
import os
import random
import signal
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from eyegc.common.backend import EpochCallback, FoldFinished
from eyegc.common.bundle import CONFIG_NAME, WEIGHTS_NAME, build_from_config
from eyegc.common.bundle_config import BundleConfig, FoldRecord, Postprocessing
from eyegc.common.errors import BundleError, EyegcError
from eyegc.common.inference import predict_with_tta, resolve_device
from eyegc.common.losses import build_loss
from eyegc.common.networks import load_pretrained
from eyegc.common.plugin import TaskKind, TaskPlugin
from eyegc.common.postprocessing import plugin_postprocess, postprocess
from eyegc.common.preprocessing import resize_probabilities
from eyegc.common.training import (
    FoldJob,
    FoldLog,
    TrainConfig,
    TrainingData,
    resolve_config,
)
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
from torch import nn

__all__ = ["CHECKPOINT_NAME", "TORCH_BACKEND", "TorchBackend"]

#: Each fold's checkpoint, rewritten every epoch; ``--resume`` continues from it.
CHECKPOINT_NAME = "checkpoint.pt"


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
    data: TrainingData,
    ids: list[str],
    config: BundleConfig,
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
                network, data.images[case_id].to(device), ("identity",), config.patch_size, plugin.kind
            )
            full = resize_probabilities(probs.float().cpu(), data.targets[case_id].shape[-2:]).numpy()
            probabilities[case_id] = full.astype(np.float16)
            predictions.append(plugin_postprocess(plugin, full, Postprocessing()))
    targets = [data.targets[c] for c in ids]
    rois = [data.rois.get(c) for c in ids]
    result = plugin.metric(
        plugin.name, predictions, targets, ids, probabilities=[probabilities[c] for c in ids], rois=rois
    )
    return float(result.leaderboard[plugin.metric.primary]), probabilities


def _validate_classification(
    plugin: TaskPlugin,
    network: torch.nn.Module,
    data: TrainingData,
    ids: list[str],
    config: BundleConfig,
    device: torch.device,
) -> tuple[float, dict[str, np.ndarray]]:
    probabilities: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for start in range(0, len(ids), 8):
            chunk = ids[start : start + 8]
            batch = torch.stack([data.images[c] for c in chunk]).to(device)
            probs = _classify_batch(network, batch, config.head_classes).cpu().numpy()
            probabilities.update(zip(chunk, probs, strict=True))
    predictions = [postprocess(probabilities[c], plugin.kind, config.classes, config.postprocessing) for c in ids]
    targets = [data.targets[c] for c in ids]
    result = plugin.metric(plugin.name, predictions, targets, ids, probabilities=[probabilities[c] for c in ids])
    return float(result.leaderboard[plugin.metric.primary]), probabilities


def _fold_dataset(
    plugin: TaskPlugin, config: BundleConfig, data: TrainingData, split: dict[str, list[str]]
) -> tuple[Dataset, Compose, int]:
    """The fold's training cases with their augmentation; also how many patches each image gives a step."""
    t = config.training
    classification = plugin.kind == TaskKind.CLASSIFICATION
    with_roi = bool(data.roi_tensors)
    patch = config.patch_size
    transforms = _augmentation(
        patch,
        set().union(*config.allowed_tta.values()),
        t.patches_per_image,
        len(config.classes) + (plugin.kind == TaskKind.MULTILABEL_SEGMENTATION),
        plugin.kind == TaskKind.MULTICLASS_SEGMENTATION,
        roi=with_roi,
        classification=classification,
        elastic_probability=t.elastic_probability,
    )
    items = []
    for c in split["train"]:
        item = {"image": data.images[c], "label": data.labels[c]}
        if not classification:
            item["crop_label"] = _crop_label(data.labels[c], plugin.kind)
        if with_roi:
            item["roi"] = data.roi_tensors[c]
        items.append(item)
    per_image = t.patches_per_image if patch and not classification else 1
    return Dataset(items, transform=transforms), transforms, per_image


def _train_epoch(
    network: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    loss_fn: nn.Module,
    device: torch.device,
    batch_size: int,
) -> float:
    """One pass over the loader (mixed precision on CUDA); returns the mean loss."""
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
                roi = loaded["roi"][start : start + batch_size].to(device) if "roi" in loaded else None
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device.type, enabled=device.type == "cuda"):
                    loss = loss_fn(_outside_roi_is_background(network(images), roi), labels)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                losses.append(float(loss.detach()))
    return float(np.mean(losses))


def _train_fold(
    plugin: TaskPlugin,
    run: Path,
    config: BundleConfig,
    data: TrainingData,
    split: dict[str, list[str]],
    fold: int,
    device: torch.device,
    callbacks: Sequence[EpochCallback],
    position: int | None = None,
) -> FoldRecord:
    t = config.training
    fold_dir = run / f"fold_{fold}"
    fold_dir.mkdir(exist_ok=True)
    checkpoint_path = fold_dir / CHECKPOINT_NAME
    base_seed = t.seed * 1000 + fold
    _seed_everything(base_seed)
    network = build_from_config(config)
    if t.pretrained and not checkpoint_path.is_file():
        load_pretrained(network, Path(t.pretrained))
    network.to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=t.learning_rate, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=t.epochs, power=0.9)
    loss_fn = build_loss(t.loss, plugin.kind, t.class_weights, config.head_classes)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    log = FoldLog(fold, fold_dir, t.metric, callbacks)
    start_epoch = 0
    if checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location=device, weights_only=True)
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state["scaler"] and scaler.is_enabled():  # empty when the run started on the CPU
            scaler.load_state_dict(state["scaler"])
        start_epoch = log.restore(state)
    dataset, transforms, per_image = _fold_dataset(plugin, config, data, split)
    epochs, batch_size = t.epochs, t.batch_size
    validate_every = max(1, t.validate_every)
    progress = log.progress(start_epoch, epochs, position)
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
            loss = _train_epoch(network, loader, optimizer, scaler, loss_fn, device, batch_size)
            scheduler.step()
            validated = (epoch + 1) % validate_every == 0 or epoch + 1 == epochs
            score = _validate(plugin, network, data, split["val"], config, device)[0] if validated else float("nan")
            if log.add_epoch(loss, score):
                _save_atomic(network.state_dict(), fold_dir / WEIGHTS_NAME)
            state = {"network": network.state_dict(), "optimizer": optimizer.state_dict()}
            state |= {"scheduler": scheduler.state_dict(), "scaler": scaler.state_dict()}
            _save_atomic(state | log.checkpoint_fields(), checkpoint_path)
            log.end_epoch(progress)
    finally:
        set_track_meta(tracking)
    network.load_state_dict(torch.load(fold_dir / WEIGHTS_NAME, map_location=device, weights_only=True))
    return log.finish(WEIGHTS_NAME, split["val"], _validate(plugin, network, data, split["val"], config, device)[1])


def _die_with_parent() -> None:
    """Worker initialiser: on Linux, the kernel ends a worker whose parent died (killed, timed out)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _fold_job(
    plugin: TaskPlugin,
    run: Path,
    config: BundleConfig,
    data: dict[str, Any],
    split: dict[str, list[str]],
    fold: int,
    device: torch.device,
    threads: int,
    position: int,
) -> FoldRecord:
    """One fold in a worker process (:func:`_train_folds_in_parallel`); ``data`` is :func:`_data_as_arrays`."""
    torch.set_num_threads(threads)
    return _train_fold(plugin, run, config, _data_from_arrays(data), split, fold, device, (), position=position)


def _data_as_arrays(data: TrainingData) -> dict[str, Any]:
    """``data`` with numpy arrays for tensors: pickled by value, not as one shared-memory file per tensor
    (thousands of cases would exceed the open-file limit and a container's small /dev/shm)."""
    state = dict(vars(data))
    for key in ("images", "labels", "roi_tensors"):
        state[key] = {k: v.numpy() for k, v in state[key].items()}
    return state


def _data_from_arrays(state: dict[str, Any]) -> TrainingData:
    state = dict(state)
    for key in ("images", "labels", "roi_tensors"):
        state[key] = {k: torch.from_numpy(v) for k, v in state[key].items()}
    return TrainingData(**state)


def _train_folds_in_parallel(
    plugin: TaskPlugin,
    run: Path,
    config: BundleConfig,
    data: TrainingData,
    splits: list[dict[str, list[str]]],
    folds: list[int],
    device: torch.device,
    jobs: int,
    finished: FoldFinished,
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
                running: dict[Future[FoldRecord], tuple[int, float]] = {
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


def _check_network(config: BundleConfig, data: TrainingData) -> None:
    """Build the network and run one patch through it, so bad settings fail before any training."""
    network = build_from_config(config)
    pretrained = config.training.pretrained
    if pretrained:
        load_pretrained(network, Path(pretrained))
    first = next(iter(data.images.values()))
    size = config.patch_size or None
    shape = (size, size) if size else tuple(first.shape[-2:])
    try:
        with torch.no_grad():
            network.eval()(torch.zeros(1, first.shape[0], *shape))
    except Exception as exc:
        raise EyegcError(
            f"network {config.network.name} cannot take a {shape[1]}x{shape[0]} input ({str(exc)[:120]}); "
            "use a --patch-size (or, with --patch-size 0, a --working-scale) whose size is divisible by "
            "2 to the number of network strides, e.g. 128 or 256"
        ) from None


@dataclass(frozen=True)
class TorchBackend:
    """MONAI networks on torch (every task kind); ``jobs`` > 1 trains folds side by side."""

    name: str = "torch"
    checkpoint_name: str = CHECKPOINT_NAME

    def check_settings(self, plugin: TaskPlugin, cfg: TrainConfig) -> None:
        """Settings this backend cannot use, before anything is read: here an unusable ``--device``."""
        resolve_device(cfg.device)

    def configure(self, plugin: TaskPlugin, cfg: TrainConfig) -> BundleConfig:
        """A new run's ``bundle.json`` (the shared resolution of ``cfg`` against the task's defaults)."""
        return resolve_config(plugin, cfg)

    def check_network(self, config: BundleConfig, data: TrainingData, device: str) -> None:
        """Build the network and run one input through it, so bad settings fail before any training."""
        _check_network(config, data)

    def train_folds(self, job: FoldJob) -> None:
        """Train the folds ``job.todo``; ``job.finished`` records each (weights, history, best epoch) as it ends."""
        device = resolve_device(job.cfg.device)
        if job.cfg.jobs > 1 and len(job.todo) > 1:
            jobs = min(job.cfg.jobs, len(job.todo))
            _train_folds_in_parallel(
                job.plugin, job.run, job.config, job.data, job.splits, job.todo, device, jobs, job.finished
            )
            return
        for fold in job.todo:
            started = time.perf_counter()
            info = _train_fold(job.plugin, job.run, job.config, job.data, job.splits[fold], fold, device, job.callbacks)
            job.finished(fold, info, time.perf_counter() - started)

    def load_fold(self, config: BundleConfig, weights: Path) -> nn.Module:
        """One trained fold on the CPU in eval mode.

        Raises:
            BundleError: the weights cannot be read or do not fit the network.
        """
        network = build_from_config(config, weights.parent.parent / CONFIG_NAME)
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            network.load_state_dict(state)
        except Exception as exc:  # a torch unpickling or shape error: say which file
            raise BundleError(f"cannot load weights {weights}: {exc}") from None
        return network.eval()


#: The instance the ``eyegc.backends`` entry point ``torch`` names.
TORCH_BACKEND = TorchBackend()
