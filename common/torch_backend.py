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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from eyegc.common.augmentation import AugmentationSpec, BatchAugmentation
from eyegc.common.backend import EpochCallback, FoldFinished
from eyegc.common.bundle import CONFIG_NAME, WEIGHTS_NAME, build_from_config
from eyegc.common.bundle_config import BundleConfig, FoldRecord, Postprocessing
from eyegc.common.distributed import (
    GlobalBatchLoss,
    broadcast_from_main,
    gather_to_main,
    start_process_group,
    sync_buffers,
)
from eyegc.common.errors import BundleError, EyegcError
from eyegc.common.inference import predict_with_tta, resolve_device
from eyegc.common.losses import FREQUENCY_LOSSES, build_loss, class_frequencies
from eyegc.common.networks import load_pretrained
from eyegc.common.plugin import TaskKind, TaskPlugin
from eyegc.common.postprocessing import plugin_postprocess, postprocess
from eyegc.common.preprocessing import resize_probabilities
from eyegc.common.ranks import SINGLE_PROCESS, Ranks
from eyegc.common.super_resolution import AuxiliaryOutput
from eyegc.common.training import (
    FoldJob,
    FoldLog,
    TrainConfig,
    TrainingData,
    resolve_config,
)
from monai.data import DataLoader, Dataset, get_track_meta, set_track_meta
from monai.transforms import (
    ClassesToIndicesd,
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
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

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
    crop_only: bool = False,
) -> Compose:
    """Random patches and augmentation; class-index labels (``categorical``) and fields of view are resampled nearest.

    Classification moves only the image (its label is a grade). ``crop_only``: patches only, the
    rest is the batched augmentation's (:mod:`eyegc.common.augmentation`).
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
        # are seen as often as large ones. "crop_label" holds background + one channel per class;
        # its pixels per class were listed once (_with_crop_indices).
        steps.append(
            RandCropByLabelClassesd(
                keys,
                label_key="crop_label",
                spatial_size=(patch, patch),
                ratios=[1.0] * crop_classes,
                num_classes=crop_classes,
                num_samples=patches_per_image,
                indices_key=CROP_INDICES,
                warn=False,
            )
        )
    if not classification:
        steps.append(DeleteItemsd(["crop_label", CROP_INDICES] if patch else "crop_label"))
    if crop_only:
        return Compose(steps)
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
    ranks: Ranks = SINGLE_PROCESS,
) -> tuple[float, dict[str, np.ndarray]]:
    """The leaderboard metric on the validation cases at the original size (threshold 0.5, no TTA).

    Under DDP each rank predicts every ``world``-th case and rank 0 gathers them and scores; the
    other ranks get ``(nan, {})``.
    """
    network.eval()
    if plugin.kind == TaskKind.CLASSIFICATION:
        return _validate_classification(plugin, network, data, ids, config, device, ranks)
    probabilities, predictions = {}, {}
    with torch.no_grad():
        for case_id in ids[ranks.rank :: ranks.world]:
            probs = predict_with_tta(
                network, data.images[case_id].to(device), ("identity",), config.patch_size, plugin.kind
            )
            full = resize_probabilities(probs.float().cpu(), data.targets[case_id].shape[-2:]).numpy()
            probabilities[case_id] = full.astype(np.float16)
            predictions[case_id] = plugin_postprocess(plugin, full, Postprocessing())
    gathered = gather_to_main(ranks, (probabilities, predictions))
    if gathered is None:
        return float("nan"), {}
    for shard_probabilities, shard_predictions in gathered[1:]:
        probabilities.update(shard_probabilities)
        predictions.update(shard_predictions)
    targets = [data.targets[c] for c in ids]
    rois = [data.rois.get(c) for c in ids]
    result = plugin.metric(
        plugin.name,
        [predictions[c] for c in ids],
        targets,
        ids,
        probabilities=[probabilities[c] for c in ids],
        rois=rois,
    )
    return float(result.leaderboard[plugin.metric.primary]), probabilities


def _validate_classification(
    plugin: TaskPlugin,
    network: torch.nn.Module,
    data: TrainingData,
    ids: list[str],
    config: BundleConfig,
    device: torch.device,
    ranks: Ranks,
) -> tuple[float, dict[str, np.ndarray]]:
    probabilities: dict[str, np.ndarray] = {}
    share = ids[ranks.rank :: ranks.world]
    with torch.no_grad():
        for start in range(0, len(share), 8):
            chunk = share[start : start + 8]
            batch = torch.stack([data.images[c] for c in chunk]).to(device)
            probs = _classify_batch(network, batch, config.head_classes).cpu().numpy()
            probabilities.update(zip(chunk, probs, strict=True))
    gathered = gather_to_main(ranks, probabilities)
    if gathered is None:
        return float("nan"), {}
    for shard in gathered[1:]:
        probabilities.update(shard)
    predictions = [postprocess(probabilities[c], plugin.kind, config.classes, config.postprocessing) for c in ids]
    targets = [data.targets[c] for c in ids]
    result = plugin.metric(plugin.name, predictions, targets, ids, probabilities=[probabilities[c] for c in ids])
    return float(result.leaderboard[plugin.metric.primary]), probabilities


#: the pixels of each class of "crop_label", listed once per training image.
CROP_INDICES = "crop_label_indices"


def _with_crop_indices(items: list[dict[str, Any]], patch: int, crop_classes: int) -> list[dict[str, Any]]:
    """Items padded to at least one patch, with each class's pixel indices listed once.

    MONAI's patch sampler would otherwise search every image for every class's pixels at every draw:
    on DRIVE (565x584, 32 patches per image) that search was most of the per-sample CPU time.
    The sampler draws the same patches from the listed indices.
    """
    prepare = Compose(
        [
            SpatialPadd(list(items[0]), spatial_size=(patch, patch)),
            ClassesToIndicesd("crop_label", num_classes=crop_classes, indices_postfix="_indices"),
        ]
    )
    tracking = get_track_meta()
    set_track_meta(False)
    try:
        prepared = [prepare(item) for item in items]
    finally:
        set_track_meta(tracking)
    for item in prepared:  # int32 halves the lists (IDRiD at scale 0.5: 24 MB per image as int64)
        item[CROP_INDICES] = [torch.as_tensor(i).to(torch.int32) for i in item[CROP_INDICES]]
    return prepared


def _fold_dataset(
    plugin: TaskPlugin, config: BundleConfig, data: TrainingData, split: dict[str, list[str]]
) -> tuple[Dataset, Compose, int]:
    """The fold's training cases with their CPU transforms; also how many patches each image gives a step."""
    t = config.training
    classification = plugin.kind == TaskKind.CLASSIFICATION
    with_roi = bool(data.roi_tensors)
    patch = config.patch_size
    crop_classes = len(config.classes) + (plugin.kind == TaskKind.MULTILABEL_SEGMENTATION)
    transforms = _augmentation(
        patch,
        set().union(*config.allowed_tta.values()),
        t.patches_per_image,
        crop_classes,
        plugin.kind == TaskKind.MULTICLASS_SEGMENTATION,
        roi=with_roi,
        classification=classification,
        elastic_probability=t.elastic_probability,
        crop_only=t.augmentation == "batched",
    )
    items = []
    for c in split["train"]:
        item = {"image": data.images[c], "label": data.labels[c]}
        if not classification:
            item["crop_label"] = _crop_label(data.labels[c], plugin.kind)
        if with_roi:
            item["roi"] = data.roi_tensors[c]
        items.append(item)
    if patch and not classification:
        items = _with_crop_indices(
            items, patch, len(config.classes) + (plugin.kind == TaskKind.MULTILABEL_SEGMENTATION)
        )
    per_image = t.patches_per_image if patch and not classification else 1
    return Dataset(items, transform=transforms), transforms, per_image


def _fold_loss(plugin: TaskPlugin, config: BundleConfig, data: TrainingData, train_ids: list[str]) -> nn.Module:
    """The fold's loss; CBCE's class frequencies are those of the fold's training labels (inside the fields of view)."""
    t = config.training
    frequencies = None
    if t.loss in FREQUENCY_LOSSES:
        rois = [data.roi_tensors.get(c) for c in train_ids]
        labels = [data.labels[c] for c in train_ids]
        frequencies = class_frequencies(labels, plugin.kind, len(config.classes), rois)
    return build_loss(t.loss, plugin.kind, t.class_weights, config.head_classes, frequencies, t.rmi_weight)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    loss_fn: nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
) -> float:
    """One optimiser step on a batch already on the device (mixed precision on CUDA); returns the loss."""
    images, labels, roi = batch
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(images.device.type, enabled=images.device.type == "cuda"):
        outputs = model(images)
        # A super-resolution-aided network adds its training-only branch's loss (eyegc.common.super_resolution).
        logits, extra = outputs if isinstance(outputs, AuxiliaryOutput) else (outputs, None)
        loss = loss_fn(_outside_roi_is_background(logits, roi), labels)
        if extra is not None:
            loss = loss + extra
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach())


#: how far apart the ranks' random streams start, so that the ranks draw different patches.
RANK_SEED_STRIDE = 7919


class FoldSteps:
    """A fold's training machinery: the network (in DistributedDataParallel across ranks), optimiser,
    schedule, loss, this rank's batches and their augmentation.

    ``batch_size`` is the global batch (patches per optimiser step); each of ``ranks.world`` ranks
    takes an equal share and the loss is taken over the whole global batch, so the steps are those
    of one process with that batch.
    """

    def __init__(
        self,
        plugin: TaskPlugin,
        config: BundleConfig,
        data: TrainingData,
        split: dict[str, list[str]],
        device: torch.device,
        ranks: Ranks = SINGLE_PROCESS,
    ) -> None:
        t = config.training
        self.device, self.ranks = device, ranks
        self.network = build_from_config(config)
        if t.pretrained:
            load_pretrained(self.network, Path(t.pretrained))
        if ranks.distributed and device.type == "cuda":
            # Batch-norm statistics over the global batch, as one process would compute them
            # (SyncBatchNorm needs CUDA; on the CPU each rank normalises its own share).
            self.network = nn.SyncBatchNorm.convert_sync_batchnorm(self.network)
        self.network.to(device)
        self.model: nn.Module = self.network
        if ranks.distributed:
            device_ids = [device.index] if device.type == "cuda" else None
            # static_graph: some networks compute outputs they do not return (BasicUNetPlusPlus without
            # deep supervision), whose parameters then get no gradient; DDP must know the graph is fixed.
            self.model = DistributedDataParallel(self.network, device_ids=device_ids, static_graph=True)
        self.optimizer = torch.optim.AdamW(self.network.parameters(), lr=t.learning_rate, weight_decay=1e-4)
        self.scheduler = torch.optim.lr_scheduler.PolynomialLR(self.optimizer, total_iters=t.epochs, power=0.9)
        # .to(device): CBCE's and --class-weights' per-class weights are buffers that must sit beside the logits.
        self.loss_fn = GlobalBatchLoss(_fold_loss(plugin, config, data, split["train"]), ranks).to(device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
        self.dataset, self.transforms, self.per_image = _fold_dataset(plugin, config, data, split)
        self.batch_size = t.batch_size // ranks.world
        self.augment: BatchAugmentation | None = None
        if t.augmentation == "batched":
            spec = AugmentationSpec(
                ops=frozenset().union(*config.allowed_tta.values()),
                square=bool(config.patch_size),
                elastic_probability=t.elastic_probability,
                classification=plugin.kind == TaskKind.CLASSIFICATION,
            )
            self.augment = BatchAugmentation(spec, categorical=plugin.kind == TaskKind.MULTICLASS_SEGMENTATION)

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps besides the fold's record."""
        return {
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's :meth:`state`."""
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"] and self.scaler.is_enabled():  # empty when the run started on the CPU
            self.scaler.load_state_dict(state["scaler"])

    def seed_epoch(self, epoch_seed: int) -> None:
        """Every epoch is a pure function of (weights, optimizer state, epoch, rank): resume is exact."""
        seed = epoch_seed + RANK_SEED_STRIDE * self.ranks.rank
        _seed_everything(seed)
        self.transforms.set_random_state(seed=seed % (2**32))

    def batches(self, epoch_seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """This rank's batches of one epoch, on the device and augmented (after :meth:`seed_epoch`)."""
        per_loader = max(1, self.batch_size // self.per_image)
        if self.ranks.distributed:
            # The same shuffled order on every rank, each taking every world-th image (padded to equal shares).
            sampler = DistributedSampler(self.dataset, self.ranks.world, self.ranks.rank, shuffle=True, seed=epoch_seed)
            loader = DataLoader(self.dataset, batch_size=per_loader, sampler=sampler, num_workers=0)
        else:
            generator = torch.Generator().manual_seed(epoch_seed)
            loader = DataLoader(self.dataset, batch_size=per_loader, shuffle=True, num_workers=0, generator=generator)
        with warnings.catch_warnings():
            # A class absent from an image cannot centre a patch; MONAI says so on every draw.
            warnings.filterwarnings("ignore", message=".*no available indices of class")
            # The loader yields every patch of a few images; the batch size counts patches per step.
            for loaded in loader:
                for start in range(0, len(loaded["image"]), self.batch_size):
                    part = slice(start, start + self.batch_size)
                    images, labels = loaded["image"][part].to(self.device), loaded["label"][part].to(self.device)
                    roi = loaded["roi"][part].to(self.device) if "roi" in loaded else None
                    yield self.augment(images, labels, roi) if self.augment is not None else (images, labels, roi)

    def epoch(self, epoch_seed: int) -> float:
        """One pass over this rank's batches; the mean loss (of the global batches)."""
        self.seed_epoch(epoch_seed)
        self.model.train()
        batches = self.batches(epoch_seed)
        losses = [train_step(self.model, self.optimizer, self.scaler, self.loss_fn, batch) for batch in batches]
        self.scheduler.step()
        return float(np.mean(losses))


def _resume_state(checkpoint_path: Path, ranks: Ranks) -> dict[str, Any] | None:
    """The fold's checkpoint as rank 0 reads it, on every rank (no shared folder needed)."""
    state = None
    if ranks.main and checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    return broadcast_from_main(ranks, state)


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
    ranks: Ranks = SINGLE_PROCESS,
) -> FoldRecord | None:
    """Train one fold; rank 0 writes its files and returns its record (the other ranks ``None``)."""
    t = config.training
    fold_dir = run / f"fold_{fold}"
    if ranks.main:
        fold_dir.mkdir(exist_ok=True)
    base_seed = t.seed * 1000 + fold
    _seed_everything(base_seed)
    steps = FoldSteps(plugin, config, data, split, device, ranks)
    log = FoldLog(fold, fold_dir, t.metric, callbacks)
    start_epoch = 0
    state = _resume_state(fold_dir / CHECKPOINT_NAME, ranks)
    if state is not None:
        steps.restore(state)
        start_epoch = log.restore(state)
    validate_every = max(1, t.validate_every)
    progress = log.progress(start_epoch, t.epochs, position) if ranks.main else range(start_epoch, t.epochs)
    # MONAI metadata tracking costs about a third of the augmentation time and nothing here reads it.
    tracking = get_track_meta()
    set_track_meta(False)
    try:
        for epoch in progress:
            loss = steps.epoch(base_seed * 10007 + epoch)
            score = float("nan")
            sync_buffers(ranks, steps.network)  # every rank validates rank 0's model (batch-norm statistics)
            if (epoch + 1) % validate_every == 0 or epoch + 1 == t.epochs:
                score = _validate(plugin, steps.network, data, split["val"], config, device, ranks)[0]
            if ranks.main:
                if log.add_epoch(loss, score):
                    _save_atomic(steps.network.state_dict(), fold_dir / WEIGHTS_NAME)
                _save_atomic(steps.state() | log.checkpoint_fields(), fold_dir / CHECKPOINT_NAME)
                log.end_epoch(progress)
    finally:
        set_track_meta(tracking)
    best = torch.load(fold_dir / WEIGHTS_NAME, map_location="cpu", weights_only=True) if ranks.main else None
    steps.network.load_state_dict(broadcast_from_main(ranks, best))
    out_of_fold = _validate(plugin, steps.network, data, split["val"], config, device, ranks)[1]
    return log.finish(WEIGHTS_NAME, split["val"], out_of_fold) if ranks.main else None


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
        sr = config.network.super_resolution
        divisor = f"{sr.factor} (--super-resolution) times " if sr else ""
        raise EyegcError(
            f"network {config.network.name} cannot take a {shape[1]}x{shape[0]} input ({str(exc)[:120]}); "
            "use a --patch-size (or, with --patch-size 0, a --working-scale) whose size is divisible by "
            f"{divisor}2 to the number of network strides, e.g. 128 or 256"
        ) from None


@dataclass(frozen=True)
class TorchBackend:
    """MONAI networks on torch (every task kind); ``jobs`` > 1 trains folds side by side."""

    name: str = "torch"
    checkpoint_name: str = CHECKPOINT_NAME
    #: trains under torchrun with DistributedDataParallel.
    distributed: bool = True

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
        """Train the folds ``job.todo``; ``job.finished`` records each (weights, history, best epoch) as it ends.

        Under torchrun every rank trains each fold with DistributedDataParallel; rank 0 records it.
        """
        device = start_process_group(job.ranks, resolve_device(job.cfg.device))
        if job.ranks.distributed:
            for fold in job.todo:
                started = time.perf_counter()
                args = (job.plugin, job.run, job.config, job.data, job.splits[fold], fold, device, job.callbacks)
                record = _train_fold(*args, ranks=job.ranks)
                if record is not None:
                    job.finished(fold, record, time.perf_counter() - started)
            return
        if job.cfg.jobs > 1 and len(job.todo) > 1:
            jobs = min(job.cfg.jobs, len(job.todo))
            _train_folds_in_parallel(
                job.plugin, job.run, job.config, job.data, job.splits, job.todo, device, jobs, job.finished
            )
            return
        for fold in job.todo:
            started = time.perf_counter()
            args = (job.plugin, job.run, job.config, job.data, job.splits[fold], fold, device, job.callbacks)
            job.finished(fold, _train_fold(*args), time.perf_counter() - started)

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
