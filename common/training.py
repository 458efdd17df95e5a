"""k-fold training on a task's official layout, with exact resume and leaderboard-metric model selection.

The run is written once, here, for every backend: settings resolved against the task's defaults,
the k-fold split (kept in ``splits.json``), the data fingerprint checked on resume, the training
data read once, the folds still to train, each finished fold recorded in the signed
``bundle.json``, and the thresholds tuned on the out-of-fold probabilities at the end. A backend
(:class:`~eyegc.common.backend.TrainingBackend`: torch, paddle) only builds, trains and loads
the networks of a fold; it is found by name (:func:`eyegc.common.registry.get_backend`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from eyegc.common.augmentation import DEFAULT_AUGMENTATION, check_augmentation
from eyegc.common.backend import (
    EpochCallback,
    FoldFinished,
    FoldJob,
    OwnPreprocessing,
    TrainConfig,
    TrainingBackend,
    TrainingData,
)
from eyegc.common.bundle import (
    CONFIG_NAME,
    SPLITS_NAME,
    cases_fingerprint,
    check_input_channels,
    check_same_data,
    eyegc_version,
    read_config,
    save_config_keeping_signature,
    save_signed_config,
    write_checksums,
)
from eyegc.common.bundle_config import (
    DEFAULT_THRESHOLD,
    HISTORY_NAME,
    BundleConfig,
    DataFingerprint,
    FoldRecord,
    NetworkSpec,
    Postprocessing,
    Preprocessing,
    SuperResolution,
    TrainingSettings,
)
from eyegc.common.datafiles import check_training_classes
from eyegc.common.distributed import end_process_group, on_main, start_process_group, stop_process_group
from eyegc.common.errors import EyegcError
from eyegc.common.inference import resolve_device
from eyegc.common.losses import build_loss
from eyegc.common.networks import CLASSIFIERS, NETWORKS, check_network_kwargs
from eyegc.common.options import TRAIN_OPTIONS, check_options
from eyegc.common.outputs import OutputKind, check_output_path
from eyegc.common.plugin import Case, TaskKind, TaskPlugin
from eyegc.common.preprocessing import CLAHE_SPACES, prepare_image, prepare_target
from eyegc.common.ranks import SINGLE_PROCESS, Ranks, ranks_from_environment
from eyegc.common.registry import available_backends, get_backend, look_up_option
from eyegc.common.smp_networks import SMP_PREFIX, import_smp
from eyegc.common.tuning import check_crf_request, tune
from sklearn.model_selection import KFold
from tqdm import tqdm

__all__ = [
    "EpochCallback",
    "FoldFinished",
    "FoldJob",
    "FoldLog",
    "TrainConfig",
    "TrainingData",
    "check_train_config",
    "check_train_request",
    "has_checkpoint",
    "load_training_data",
    "make_splits",
    "plot_curve",
    "resolve_config",
    "save_oof",
    "train",
]


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
    """Whether ``run`` holds a fold checkpoint (of any backend) that ``resume=True`` continues."""
    run = Path(run)
    return any(any(run.glob(f"fold_*/{get_backend(name).checkpoint_name}")) for name in available_backends())


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


def _resolve_preprocessing(plugin: TaskPlugin, cfg: TrainConfig) -> Preprocessing:
    """The task's preprocessing with the user's working scale, CLAHE and field-of-view choices on top."""
    d = plugin.defaults
    preprocessing = Preprocessing(
        working_scale=_or_default(cfg.working_scale, d.working_scale),
        normalize=d.normalize,
        clahe=_resolve_clahe(plugin, cfg),
        fov_mask=bool(d.fov_mask if cfg.fov_mask is None else cfg.fov_mask),
    )
    if preprocessing.fov_mask and plugin.in_channels != 3:
        raise EyegcError(f"--fov-mask needs RGB fundus input; {plugin.name} feeds {plugin.in_channels} channel(s)")
    if plugin.kind == TaskKind.CLASSIFICATION:
        size = _or_default(cfg.extra.get("input_size"), d.input_size)
        if not size:
            raise EyegcError(f"{plugin.name}: a classification task needs an input size (ModelDefaults.input_size)")
        preprocessing.input_size = (int(size[0]), int(size[1]))
    return preprocessing


def _resolve_network(plugin: TaskPlugin, cfg: TrainConfig) -> NetworkSpec:
    """The network by name (it must fit the task's kind) and its checked arguments."""
    d = plugin.defaults
    classification = plugin.kind == TaskKind.CLASSIFICATION
    network = _or_default(cfg.model, d.network)
    look_up_option(network, NETWORKS, what="network")
    if classification != (network in CLASSIFIERS):
        wanted = sorted(CLASSIFIERS) if classification else sorted(set(NETWORKS) - CLASSIFIERS)
        raise EyegcError(f"{network} does not fit a {plugin.kind.value} task; choose one of {', '.join(wanted)}")
    kwargs = dict(d.network_kwargs) if network == d.network else {}
    kwargs.update(cfg.network_kwargs or {})
    if network.startswith(SMP_PREFIX):
        import_smp()  # a missing extra is its own one line, before the arguments are read from smp
    try:
        check_network_kwargs(network, kwargs)  # by name now; bad values fail when the network is first built
    except EyegcError as exc:
        raise EyegcError(f"--network-kwargs: {exc}") from None
    return NetworkSpec(name=network, kwargs=kwargs, super_resolution=_resolve_super_resolution(plugin, cfg))


def _resolve_super_resolution(plugin: TaskPlugin, cfg: TrainConfig) -> SuperResolution | None:
    """``--super-resolution FACTOR`` and ``--sr-weights SR,FA`` (segmentation only)."""
    if cfg.super_resolution is None:
        if cfg.sr_weights is not None:
            raise EyegcError("--sr-weights weighs the losses of --super-resolution: add --super-resolution 2")
        return None
    if plugin.kind == TaskKind.CLASSIFICATION:
        raise EyegcError("--super-resolution is for segmentation tasks; a classification network outputs no image")
    sr = SuperResolution(factor=cfg.super_resolution)
    if cfg.sr_weights is not None:
        sr = sr.model_copy(update={"sr_weight": float(cfg.sr_weights[0]), "fa_weight": float(cfg.sr_weights[1])})
    return sr


def _resolve_training(plugin: TaskPlugin, cfg: TrainConfig, head_classes: list[int] | None) -> TrainingSettings:
    """The fold loop's settings; the loss and class weights are checked against the task."""
    d = plugin.defaults
    loss = _or_default(cfg.loss, d.loss)
    rmi_weight = float(_or_default(cfg.rmi_weight, 0.0))
    uniform = [1.0 / len(plugin.classes)] * len(plugin.classes)
    # validates the name, weights and RMI early; CBCE's real frequencies come from each fold's labels
    build_loss(loss, plugin.kind, cfg.class_weights, head_classes, uniform, rmi_weight)
    if cfg.class_weights and len(cfg.class_weights) != len(plugin.classes):
        what = "heads" if head_classes is not None else "classes"
        raise EyegcError(
            f"--class-weights needs {len(plugin.classes)} values, one per {what[:-2]} "
            f"({', '.join(c.key for c in plugin.classes)})"
        )
    return TrainingSettings(
        folds=_or_default(cfg.folds, d.folds),
        epochs=_or_default(cfg.epochs, d.epochs),
        batch_size=_or_default(cfg.batch_size, d.batch_size),
        learning_rate=_or_default(cfg.learning_rate, d.learning_rate),
        loss=loss,
        class_weights=cfg.class_weights,
        rmi_weight=rmi_weight,
        crf=bool(cfg.crf),
        patches_per_image=_or_default(cfg.patches_per_image, d.patches_per_image),
        elastic_probability=float(d.elastic_probability),
        validate_every=int(_or_default(cfg.validate_every, d.validate_every)),
        seed=cfg.seed,
        pretrained=cfg.pretrained,
        metric=plugin.metric.primary,
        allow_missing_class=bool(cfg.allow_missing_class),
        augmentation=check_augmentation(cfg.augmentation or DEFAULT_AUGMENTATION),
    )


def resolve_config(plugin: TaskPlugin, cfg: TrainConfig) -> BundleConfig:
    """A new run's ``bundle.json``: ``cfg`` checked and resolved against the task's defaults.

    Raises:
        EyegcError: a setting out of range, an unknown network, loss or argument, or one that does
            not fit the task.
    """
    check_train_config(cfg)
    classification = plugin.kind == TaskKind.CLASSIFICATION
    network = _resolve_network(plugin, cfg)
    head_classes = [int(c.num_classes or 0) for c in plugin.classes] if classification else None
    training = _resolve_training(plugin, cfg, head_classes)
    preprocessing = _resolve_preprocessing(plugin, cfg)
    thresholds = {c.key: DEFAULT_THRESHOLD for c in plugin.classes if not classification or c.num_classes == 2}
    return BundleConfig(
        task=plugin.name,
        eyegc_version=eyegc_version(),
        kind=plugin.kind,
        classes=[c.key for c in plugin.classes],
        in_channels=plugin.in_channels,
        network=network,
        preprocessing=preprocessing,
        patch_size=0 if classification else _or_default(cfg.patch_size, plugin.defaults.patch_size),
        head_classes=head_classes,
        allowed_tta={k: list(v) for k, v in plugin.allowed_tta.items()},
        training=training,
        postprocessing=Postprocessing(thresholds=thresholds, min_component_size={c.key: 0 for c in plugin.classes}),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def load_training_data(
    plugin: TaskPlugin, cases: list[Case], preprocessing: Preprocessing, prepared: bool = True
) -> TrainingData:
    """Read and prepare every training case once (images at the working size, labels, ROIs).

    ``prepared=False`` reads the targets and fields of view alone, for a backend that prepares its
    inputs itself (:class:`~eyegc.common.backend.OwnPreprocessing`): full-size IDRiD images and
    labels as float32 would take about 20 GB that such a backend never reads.

    Raises:
        EyegcError: some cases have a field of view and others none.
    """
    data = TrainingData(cases, {}, {}, {})
    for case in tqdm(cases, desc="load training data", unit="case", leave=False):
        target = plugin.read_target(case)
        data.targets[case.case_id] = target
        if not prepared:
            roi = plugin.read_roi(case)
            if roi is not None:
                data.rois[case.case_id] = roi.astype(bool)
            continue
        raw = plugin.read_image(case.image)
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


def plot_curve(history: dict[str, list[float]], metric: str, path: Path) -> None:
    """A fold's training loss and validation metric per epoch, as a PNG at ``path``."""
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


def save_oof(run: Path, probabilities: dict[str, np.ndarray]) -> None:
    """Save probabilities quantised to 1/255 (uint8): tuning's 0.05 grid does not need more."""
    oof = run / "oof"
    oof.mkdir(exist_ok=True)
    for case_id, probs in probabilities.items():
        tmp = oof / f".{case_id}.tmp.npz"
        quantised = np.round(np.clip(probs.astype(np.float32), 0, 1) * 255).astype(np.uint8)
        np.savez(tmp, probabilities=quantised)
        os.replace(tmp, oof / f"{case_id}.npz")


@dataclass
class FoldLog:
    """One fold's epochs, kept the same way by every backend.

    The loss and the validation metric per epoch (NaN where an epoch was not validated), the best
    epoch by the task's metric (the first epoch always counts, so a metric that is NaN throughout
    still leaves weights; later ones must beat it), ``history.json``, the progress bar, the epoch
    callbacks, the checkpoint fields that make resume exact, the training curve and the fold's
    record in ``bundle.json``.
    """

    fold: int
    fold_dir: Path
    metric: str
    callbacks: Sequence[EpochCallback] = ()
    history: dict[str, list[float]] = field(default_factory=lambda: {"loss": [], "metric": []})
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": 0, "score": -np.inf})

    @property
    def epochs_done(self) -> int:
        """Epochs recorded so far (those of a resumed checkpoint included)."""
        return len(self.history["loss"])

    def restore(self, state: dict[str, Any]) -> int:
        """Take the record from a checkpoint's :meth:`checkpoint_fields`; returns the epoch to continue at."""
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.best = {"epoch": int(state["best_epoch"]), "score": float(state["best_score"])}
        return int(state["epoch"])

    def checkpoint_fields(self) -> dict[str, Any]:
        """What a checkpoint stores beside the weights and optimiser for :meth:`restore`."""
        return {
            "history": self.history,
            "epoch": self.epochs_done,
            "best_epoch": self.best["epoch"],
            "best_score": self.best["score"],
        }

    def progress(self, start: int, epochs: int, position: int | None = None) -> tqdm:
        """The fold's epoch progress bar, from ``start`` of ``epochs``."""
        return tqdm(
            range(start, epochs), desc=f"fold {self.fold}", unit="epoch", initial=start, total=epochs, position=position
        )

    def add_epoch(self, loss: float, score: float) -> bool:
        """Record an epoch; True when it is the best so far (its weights are the fold's)."""
        self.history["loss"].append(float(loss))
        self.history["metric"].append(score)
        improved = bool(np.isfinite(score)) and not score <= self.best["score"]
        if self.best["epoch"] == 0 or improved:
            self.best = {"epoch": self.epochs_done, "score": score}
            return True
        return False

    def end_epoch(self, progress: tqdm) -> None:
        """After the checkpoint: ``history.json``, the progress bar's figures, the callbacks."""
        (self.fold_dir / HISTORY_NAME).write_text(json.dumps({**self.history, **self.best}, indent=1))
        shown = next((m for m in reversed(self.history["metric"]) if np.isfinite(m)), float("nan"))  # last validated
        progress.set_postfix(loss=f"{self.history['loss'][-1]:.4f}", **{self.metric: f"{shown:.4f}"})
        for callback in self.callbacks:
            callback(self.fold, self.epochs_done, self.history)

    def finish(self, weights_name: str, validation_cases: list[str], out_of_fold: dict[str, np.ndarray]) -> FoldRecord:
        """Draw the training curve and keep the best epoch's out-of-fold probabilities (for tuning; a
        resumed run recomputes them too); the fold's record for ``bundle.json``."""
        plot_curve(self.history, self.metric, self.fold_dir / "training_curve.png")
        save_oof(self.fold_dir.parent, out_of_fold)
        return FoldRecord(
            best_epoch=self.best["epoch"],
            best_score=self.best["score"],
            epochs_done=self.epochs_done,
            weights=f"fold_{self.fold}/{weights_name}",
            validation_cases=validation_cases,
        )


def _prepare_run(
    plugin: TaskPlugin, run: Path, cfg: TrainConfig, resume: bool, backend: TrainingBackend
) -> BundleConfig:
    if resume:
        config = read_config(run)
        if config.task != plugin.name:
            raise EyegcError(f"{run} holds a {config.task} run; cannot resume it as {plugin.name}")
        check_input_channels(config, plugin, run)
        return config
    if run.exists() and any(run.iterdir()):
        raise EyegcError(
            f"{run} already exists and is not empty; pass --resume to continue it, or choose another --out"
        )
    return backend.configure(plugin, cfg)


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
    stopped (the settings and the backend come from the run, not from ``cfg``). The best epoch per
    fold is chosen by the task's leaderboard metric on its validation fold; out-of-fold
    probabilities of that epoch are kept for :func:`eyegc.common.tuning.tune`. When every fold is
    done the thresholds are tuned (unless ``cfg.tune`` is False) and checksums written.

    Returns:
        The run folder.

    Raises:
        EyegcError: a setting out of its range (:func:`check_train_config`, before anything is read),
            unknown network arguments, bad data, or a run folder that cannot be used.
    """
    cfg = cfg or TrainConfig()
    run, data_root = Path(run), Path(data_root)
    ranks = ranks_from_environment()
    backend = check_train_request(plugin, run, data_root, cfg, resume, ranks)
    if cfg.jobs > 1 and callbacks:
        raise EyegcError("epoch callbacks run in the training process: train with jobs=1 to use them")
    if ranks.distributed:
        start_process_group(ranks, resolve_device(cfg.device))
    try:
        # Refused here (a folder that is not empty, another task's run), nothing of the user's is touched.
        config = on_main(ranks, lambda: _prepare_run(plugin, run, cfg, resume, backend))
        try:
            return _run(plugin, data_root, run, cfg, config, backend, callbacks, ranks)
        except BaseException:
            # A new run that failed (or was interrupted) before its first checkpoint leaves nothing behind.
            if ranks.main and not resume and run.is_dir() and not any(run.glob(f"fold_*/{backend.checkpoint_name}")):
                shutil.rmtree(run, ignore_errors=True)
            raise
    finally:
        stop_process_group()


def check_train_request(
    plugin: TaskPlugin, run: Path, data_root: Path, cfg: TrainConfig, resume: bool, ranks: Ranks
) -> TrainingBackend:
    """Everything about a training request that can be refused before any data is read: the
    settings' ranges, the output folder, the backend and the processes. ``eyegc train`` asks this
    before it starts torchrun, so a bad request is one line, not one line per process.

    Returns:
        The backend that will train (the run's own on resume).

    Raises:
        EyegcError: the first problem, naming the option and the fix.
    """
    check_train_config(cfg)  # before anything is read or written: a bad number is the whole message
    check_output_path(run, "--out", OutputKind.FOLDER, [("--data", data_root), ("--pretrained", cfg.pretrained)])
    previous = read_config(run) if resume and (run / CONFIG_NAME).is_file() else None
    backend = get_backend(previous.backend if previous else cfg.backend)
    backend.check_settings(plugin, cfg)
    if cfg.crf:
        _check_crf_request(plugin, cfg)
    if ranks.distributed:
        if not backend.distributed:
            raise EyegcError(f"the {backend.name} backend trains in one process: drop --nproc-per-node and --nnodes")
        if cfg.jobs > 1:
            raise EyegcError("--jobs places folds side by side in one process; with --nproc-per-node use --jobs 1")
        batch = previous.training.batch_size if previous else cfg.batch_size or plugin.defaults.batch_size
        if batch % ranks.world:
            raise EyegcError(
                f"a batch of {batch} patches does not split evenly over {ranks.world} processes; "
                f"use a --batch-size that is a multiple of {ranks.world}"
            )
    return backend


def _check_crf_request(plugin: TaskPlugin, cfg: TrainConfig) -> None:
    """``--crf`` is tuned with the thresholds at the end: a multi-label task, tuning on, pydensecrf2 installed."""
    check_crf_request(plugin)
    if not cfg.tune:
        raise EyegcError("--crf is chosen when the thresholds are tuned at the end: drop --no-tune")


def _folds_to_train(
    run: Path, case_ids: Sequence[str], config: BundleConfig, fold: str, data_root: Path
) -> tuple[list[dict[str, list[str]]], list[int]]:
    """The run's split (saved, or made now) and the folds ``fold`` asks for."""
    splits_path = run / SPLITS_NAME
    if splits_path.is_file():
        splits = json.loads(splits_path.read_text())
    else:
        splits = make_splits(case_ids, config.training.folds, config.training.seed)
    missing = sorted({c for s in splits for c in s["train"] + s["val"]} - set(case_ids))
    if missing:
        raise EyegcError(f"the saved split names cases absent from {data_root}: {', '.join(missing[:5])}")
    if fold == "all":
        return splits, list(range(len(splits)))
    if not str(fold).isdigit() or not 0 <= int(fold) < len(splits):
        raise EyegcError(f"--fold {fold} is not 'all' or a fold of this run (0..{len(splits) - 1})")
    return splits, [int(fold)]


def _run(
    plugin: TaskPlugin,
    data_root: Path,
    run: Path,
    cfg: TrainConfig,
    config: BundleConfig,
    backend: TrainingBackend,
    callbacks: Sequence[EpochCallback],
    ranks: Ranks = SINGLE_PROCESS,
) -> Path:
    t = config.training
    allow_missing_class = t.allow_missing_class
    cases = plugin.list_cases(data_root, "train", allow_missing_class=allow_missing_class)

    def split_and_fingerprint() -> tuple[list[dict[str, list[str]]], list[int], DataFingerprint]:
        splits, todo = _folds_to_train(run, [c.case_id for c in cases], config, cfg.fold, data_root)
        fingerprint = cases_fingerprint(cases, data_root)
        check_same_data(config, fingerprint, data_root, "resume")
        return splits, todo, fingerprint

    splits, todo, fingerprint = on_main(ranks, split_and_fingerprint)
    prepared = not isinstance(backend, OwnPreprocessing)
    data = load_training_data(plugin, cases, config.preprocessing, prepared=prepared)
    absent = check_training_classes(plugin, data.targets.values(), data_root, allow_missing_class)
    if absent:
        t.classes_without_ground_truth = absent
        note = f"note: training without ground truth for class(es) {', '.join(absent)} (--allow-missing-class)"
        if ranks.main:
            tqdm.write(note, file=sys.stderr)
    backend.check_network(config, data, cfg.device)
    config.data_fingerprint = fingerprint
    t.data_root = str(data_root.resolve())
    if ranks.main:
        run.mkdir(parents=True, exist_ok=True)
        if not (run / SPLITS_NAME).is_file():
            (run / SPLITS_NAME).write_text(json.dumps(splits, indent=1) + "\n")
        save_config_keeping_signature(run, config)
    todo = [f for f in todo if f not in config.folds or config.folds[f].epochs_done < t.epochs]

    def finished(fold: int, record: FoldRecord, seconds: float) -> None:
        config.record_fold(fold, record.model_copy(update={"seconds": round(seconds, 1)}))
        save_signed_config(run, config, fresh=[record.weights])

    backend.train_folds(FoldJob(plugin, run, config, data, splits, todo, cfg, callbacks, finished, ranks))
    tunable = plugin.kind in (TaskKind.MULTILABEL_SEGMENTATION, TaskKind.CLASSIFICATION)
    # The ranks leave the group together now; rank 0 then tunes alone, however long that takes.
    if ranks.distributed:
        end_process_group()
    if ranks.main and len(config.folds) == len(splits) and cfg.tune and tunable:
        tune(plugin, run, data_root, crf=config.training.crf)
    elif ranks.main:
        write_checksums(run)
    return run
