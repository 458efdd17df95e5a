"""The ``nnunet`` backend: ``eyegc train TASK --backend nnunet`` and ``eyegc nnunet import``.

Training runs nnU-Net v2's own planning, preprocessing and training in the run folder::

    RUN/nnunet/raw/Dataset500_<task>/          the training cases in nnU-Net's raw format (dataset.py)
    RUN/nnunet/preprocessed/Dataset500_<task>/ its plans, preprocessed data and splits_final.json (eyegc's folds)
    RUN/nnunet/results/Dataset500_<task>/<trainer>__<plans>__2d/fold_<k>/   nnU-Net's checkpoints and logs
    RUN/nnunet/<step>.log                      everything nnU-Net printed
    RUN/fold_<k>/nnunet_fold.pt                the fold in the bundle (model.py), checksummed
    RUN/fold_<k>/nnunet_training.json          where nnU-Net trains the fold: the run can be resumed
    RUN/bundle.json, splits.json, oof/, checksums.sha256   as for every backend

so nnU-Net's own commands work on it too (``nnUNet_results=RUN/nnunet/results nnUNetv2_predict ...``).
eyegc's settings map onto nnU-Net's: ``--epochs`` (default nnU-Net's 1000), ``--batch-size``
(default the plans'), ``--working-scale`` (default 1: original size), ``--device``; the rest is
given by ``--network-kwargs`` (:data:`NNUNET_KWARGS`). Settings that nnU-Net chooses itself
(loss, learning rate, patch size, augmentation, ...) are refused, each in one line. After each
fold, its validation cases are predicted through nnU-Net's predictor (the out-of-fold
probabilities eyegc tunes thresholds on).

Prediction of a bundle of this backend goes through nnU-Net's predictor (:class:`NnunetPredictor`),
``--tta none`` turning its mirroring off and any other mode on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from eyegc.common.backend import FoldJob, TrainConfig, TrainingData
from eyegc.common.bundle_config import (
    HISTORY_NAME,
    BundleConfig,
    FoldRecord,
    NetworkSpec,
    Postprocessing,
    Preprocessing,
)
from eyegc.common.errors import EyegcError
from eyegc.common.imageio import atomic_output_dir
from eyegc.common.inference import resolve_device, tta_ops_for
from eyegc.common.nnunet.dataset import dataset_folder_name, label_scheme, write_dataset
from eyegc.common.nnunet.model import (
    NNUNET_FOLD_NAME,
    NnunetNetwork,
    NnunetPredictor,
    fold_file_contents,
    load_nnunet_fold,
    read_nnunet_checkpoint,
    require_nnunet,
)
from eyegc.common.nnunet.worker import ERROR_PREFIX, PLANNERS, TRAINERS, find_class
from eyegc.common.plugin import TaskPlugin
from eyegc.common.postprocessing import plugin_postprocess
from eyegc.common.training import FoldLog, resolve_config
from tqdm import tqdm

__all__ = [
    "NNUNET_BACKEND",
    "NNUNET_KWARGS",
    "NNUNET_LEARNING_RATE",
    "NNUNET_NETWORK",
    "NnunetBackend",
    "nnunet_network_spec",
    "save_fold",
]

NNUNET_NETWORK = "nnUNet"
#: ``--network-kwargs`` of the nnunet backend and their defaults (``None``: nnU-Net's own choice).
NNUNET_KWARGS: dict[str, Any] = {
    "trainer": "nnUNetTrainer",
    "planner": "ExperimentPlanner",
    "plans": "nnUNetPlans",
    "configuration": "2d",
    "gpu_memory_target": None,  # GB; nnU-Net's planner sizes patches and batches for it (default 8)
    "base_features": None,  # the U-Net's first width (nnU-Net: 32)
    "max_features": None,  # its widest (nnU-Net: 512 in 2D)
    "iterations_per_epoch": None,  # nnU-Net: 250
    "val_iterations": None,  # nnU-Net: 50
    "batch_size": None,  # eyegc train's --batch-size, kept here (nnU-Net: the plans')
}
#: ``eyegc train`` options nnU-Net decides for itself: refused under ``--backend nnunet``.
NNUNET_OWN_SETTINGS = {
    "model": "--model",
    "loss": "--loss",
    "class_weights": "--class-weights",
    "rmi_weight": "--rmi-weight",
    "super_resolution": "--super-resolution",
    "sr_weights": "--sr-weights",
    "learning_rate": "--learning-rate",
    "patches_per_image": "--patches-per-image",
    "patch_size": "--patch-size",
    "pretrained": "--pretrained",
    "clahe": "--clahe",
    "clahe_clip": "--clahe-clip",
    "fov_mask": "--fov-mask",
    "augmentation": "--augmentation",
    "validate_every": "--validate-every",
}
RUN_DATASET_ID = 500
MARKER_NAME = "nnunet_training.json"
NNUNET_DEFAULT_EPOCHS = 1000
#: nnUNetTrainer's initial learning rate (SGD, poly decay): what bundle.json records for its runs.
NNUNET_LEARNING_RATE = 1e-2


def nnunet_network_spec(kwargs: dict[str, Any] | None) -> NetworkSpec:
    """``--network-kwargs`` checked against :data:`NNUNET_KWARGS`, defaults filled in."""
    given = dict(kwargs or {})
    unknown = sorted(set(given) - set(NNUNET_KWARGS))
    if unknown:
        raise EyegcError(
            f"--network-kwargs {', '.join(unknown)} is not a setting of the nnunet backend; "
            f"it takes {', '.join(NNUNET_KWARGS)}"
        )
    for key in ("trainer", "planner", "plans"):
        value = given.get(key, NNUNET_KWARGS[key])
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise EyegcError(
                f"--network-kwargs {key} must be a class or plans name (letters, digits, _), not {value!r}"
            )
    for key in (
        "gpu_memory_target",
        "base_features",
        "max_features",
        "iterations_per_epoch",
        "val_iterations",
        "batch_size",
    ):
        value = given.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
            raise EyegcError(f"--network-kwargs {key} must be a positive number, not {value!r}")
    if given.get("configuration", "2d") != "2d":
        raise EyegcError("--network-kwargs configuration: these are 2D images; nnU-Net's configuration is 2d")
    return NetworkSpec(name=NNUNET_NETWORK, kwargs={**NNUNET_KWARGS, **given})


def save_fold(checkpoint_path: Path, plans: dict[str, Any], dataset_json: dict[str, Any], dest: Path) -> dict[str, Any]:
    """Write ``dest`` (``fold_<k>/nnunet_fold.pt``) from an nnU-Net checkpoint; returns the checkpoint."""
    checkpoint = read_nnunet_checkpoint(checkpoint_path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    torch.save(fold_file_contents(checkpoint, plans, dataset_json), tmp)
    os.replace(tmp, dest)
    return checkpoint


class _Paths:
    """A run's nnU-Net folders (module docstring)."""

    def __init__(self, run: Path, plugin: TaskPlugin, kwargs: dict[str, Any]) -> None:
        self.root = run / "nnunet"
        self.dataset = dataset_folder_name(plugin, RUN_DATASET_ID)
        self.raw = self.root / "raw" / self.dataset
        self.preprocessed = self.root / "preprocessed" / self.dataset
        self.plans = self.preprocessed / f"{kwargs['plans']}.json"
        folder = f"{kwargs['trainer']}__{kwargs['plans']}__{kwargs['configuration']}"
        self.results = self.root / "results" / self.dataset / folder

    def environment(self, device: torch.device, training: bool) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            nnUNet_raw=str(self.root / "raw"),
            nnUNet_preprocessed=str(self.root / "preprocessed"),
            nnUNet_results=str(self.root / "results"),
        )
        if training and device.type == "cpu":
            env.setdefault("nnUNet_n_proc_DA", "0")  # augmentation in the training process: 2 cores, no workers
        return env


def _run_worker(step: str, settings: dict[str, Any], paths: _Paths, device: torch.device, what: str) -> None:
    """Run one worker step; a failure is one line naming nnU-Net's error and a copy of its log
    (a new run that fails before its first fold is removed, the log with it)."""
    log = paths.root / f"{step}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "eyegc.common.nnunet.worker", step, "--settings", json.dumps(settings)]
    env = paths.environment(device, training=step == "train")
    result = subprocess.run([*command, "--log", str(log)], env=env, check=False)
    if result.returncode == 130:
        raise KeyboardInterrupt
    if result.returncode != 0:
        lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
        error = next((line[len(ERROR_PREFIX) :] for line in reversed(lines) if line.startswith(ERROR_PREFIX)), None)
        kept = Path(tempfile.gettempdir()) / f"eyegc-nnunet-{step}-{os.getpid()}.log"
        if log.is_file():
            shutil.copyfile(log, kept)
        raise EyegcError(
            f"nnU-Net's {what} failed: {error or f'exit status {result.returncode}'} (nnU-Net's output: {kept})"
        )


def _prepare(job: FoldJob, paths: _Paths, device: torch.device) -> dict[str, Any]:
    """Export, plan and preprocess once per run; the split always. Returns the plans."""
    kwargs = job.config.network.kwargs
    if not (paths.raw / "dataset.json").is_file():
        paths.raw.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output_dir(paths.raw, overwrite=True) as tmp:
            write_dataset(job.plugin, tmp, job.data.cases, [], job.config.preprocessing.working_scale)
    if not paths.plans.is_file():
        settings = {
            "dataset_id": RUN_DATASET_ID,
            "planner": kwargs["planner"],
            "plans_name": kwargs["plans"],
            "gpu_memory_target": kwargs["gpu_memory_target"],
            "base_features": kwargs["base_features"],
            "max_features": kwargs["max_features"],
            "processes": max(1, min(8, os.cpu_count() or 1)),
        }
        tqdm.write("nnU-Net: planning and preprocessing (nnUNetv2_plan_and_preprocess)", file=sys.stderr)
        _run_worker("plan", settings, paths, device, "planning and preprocessing")
    (paths.preprocessed / "splits_final.json").write_text(json.dumps(job.splits, indent=1) + "\n")
    return json.loads(paths.plans.read_text())


def _history(checkpoint: dict[str, Any]) -> dict[str, list[float]]:
    logged = checkpoint.get("logging") or {}
    return {
        "loss": [float(v) for v in logged.get("train_losses", [])],
        "metric": [float(v) for v in logged.get("ema_fg_dice", [])],
    }


def _out_of_fold(
    job: FoldJob, fold: NnunetNetwork, cases: Sequence[str], device: torch.device
) -> dict[str, np.ndarray]:
    predictor = NnunetPredictor(job.plugin, [fold], job.config.preprocessing.working_scale, True, device)
    by_id = {c.case_id: c for c in job.data.cases}
    return {
        case_id: predictor(job.plugin.read_image(by_id[case_id].image))
        for case_id in tqdm(cases, desc="out-of-fold (nnU-Net predictor)", unit="case", leave=False)
    }


def _train_fold(job: FoldJob, paths: _Paths, plans: dict[str, Any], fold: int, device: torch.device) -> FoldRecord:
    kwargs = job.config.network.kwargs
    fold_dir = job.run / f"fold_{fold}"
    fold_dir.mkdir(parents=True, exist_ok=True)
    results = paths.results / f"fold_{fold}"
    settings = {
        "dataset_name": paths.dataset,
        "plans_name": kwargs["plans"],
        "configuration": kwargs["configuration"],
        "trainer": kwargs["trainer"],
        "fold": fold,
        "device": str(device),
        "settings": {
            "epochs": job.config.training.epochs,
            "batch_size": kwargs.get("batch_size"),
            "iterations_per_epoch": kwargs["iterations_per_epoch"],
            "val_iterations": kwargs["val_iterations"],
        },
        "resume": (results / "checkpoint_latest.pth").is_file() or (results / "checkpoint_final.pth").is_file(),
        "marker": str(fold_dir / MARKER_NAME),
    }
    _run_worker("train", settings, paths, device, f"training of fold {fold}")
    dataset_json = json.loads((paths.preprocessed / "dataset.json").read_text())
    checkpoint = save_fold(results / "checkpoint_final.pth", plans, dataset_json, fold_dir / NNUNET_FOLD_NAME)
    validation = list(job.splits[fold]["val"])
    oof = _out_of_fold(job, load_nnunet_fold(fold_dir / NNUNET_FOLD_NAME), validation, device)
    # The curve is nnU-Net's (its EMA pseudo-Dice per epoch); the fold's score is the task's metric
    # on its validation cases with the weights kept (nnU-Net's final ones), as every backend reports it.
    log = FoldLog(fold, fold_dir, "nnU-Net EMA pseudo-Dice", job.callbacks)
    log.history = _history(checkpoint)
    log.best = {"epoch": log.epochs_done, "score": _validation_score(job, oof)}
    (fold_dir / HISTORY_NAME).write_text(json.dumps({**log.history, **log.best}, indent=1))
    return log.finish(NNUNET_FOLD_NAME, validation, oof)


def _validation_score(job: FoldJob, oof: dict[str, np.ndarray]) -> float:
    """The leaderboard metric of the out-of-fold probabilities at threshold 0.5."""
    ids = list(oof)
    plugin = job.plugin
    result = plugin.metric(
        plugin.name,
        [plugin_postprocess(plugin, oof[c], Postprocessing()) for c in ids],
        [job.data.targets[c] for c in ids],
        ids,
        probabilities=[oof[c] for c in ids],
        rois=[job.data.rois.get(c) for c in ids],
    )
    return float(result.leaderboard[plugin.metric.primary])


@dataclass(frozen=True)
class NnunetBackend:
    """nnU-Net v2's planning, preprocessing, training and predictor for segmentation tasks."""

    name: str = "nnunet"
    checkpoint_name: str = MARKER_NAME
    #: one process here; nnU-Net's own multi-GPU training is ``nnUNetv2_train -num_gpus``.
    distributed: bool = False
    #: the optional dependencies an image holding such a bundle installs (NeedsExtra).
    extra: str = "nnunet"
    #: nnU-Net exports and preprocesses the images itself: the run reads targets only (OwnPreprocessing).
    own_preprocessing: bool = True

    def check_settings(self, plugin: TaskPlugin, cfg: TrainConfig) -> None:
        """Segmentation tasks, nnunetv2 installed, and no setting nnU-Net decides itself."""
        label_scheme(plugin)
        for field, option in NNUNET_OWN_SETTINGS.items():
            if getattr(cfg, field) is not None:
                raise EyegcError(f"{option} is nnU-Net's own choice under --backend nnunet; drop it")
        if cfg.jobs > 1:
            raise EyegcError("the nnunet backend trains its folds one after another: use --jobs 1")
        kwargs = nnunet_network_spec(cfg.network_kwargs).kwargs
        require_nnunet()
        resolve_device(cfg.device)
        for key, package in (("trainer", TRAINERS), ("planner", PLANNERS)):
            if find_class(package, kwargs[key]) is None:
                raise EyegcError(f"--network-kwargs {key}: nnU-Net has no {key} named {kwargs[key]!r} here")

    def configure(self, plugin: TaskPlugin, cfg: TrainConfig) -> BundleConfig:
        """The shared run config with nnU-Net's network spec, epochs and the working scale (default 1)."""
        config = resolve_config(plugin, replace(cfg, network_kwargs=None))
        config.backend = self.name
        config.network = nnunet_network_spec({**(cfg.network_kwargs or {}), "batch_size": cfg.batch_size})
        config.preprocessing = Preprocessing(working_scale=cfg.working_scale or 1.0)
        config.training.epochs = cfg.epochs or NNUNET_DEFAULT_EPOCHS
        config.training.loss = "nnunet"
        config.training.learning_rate = NNUNET_LEARNING_RATE
        return config

    def check_network(self, config: BundleConfig, data: TrainingData, device: str) -> None:
        """nnU-Net plans its network from the data; here only what can fail before: the device."""
        resolve_device(device)

    def train_folds(self, job: FoldJob) -> None:
        """Export, plan and preprocess once, then train ``job.todo`` one fold after another."""
        device = resolve_device(job.cfg.device)
        paths = _Paths(job.run, job.plugin, job.config.network.kwargs)
        plans = _prepare(job, paths, device)
        if job.callbacks:
            raise EyegcError("epoch callbacks run in eyegc's training process; nnU-Net trains in its own: drop them")
        planned = plans["configurations"][job.config.network.kwargs["configuration"]]
        # what nnU-Net trains with: the user's --batch-size (kept in the kwargs, so resume keeps it) or the plans'
        job.config.training.batch_size = int(job.config.network.kwargs.get("batch_size") or planned["batch_size"])
        job.config.patch_size = int(max(planned["patch_size"]))
        for fold in job.todo:
            started = time.perf_counter()
            record = _train_fold(job, paths, plans, fold, device)
            job.finished(fold, record, time.perf_counter() - started)

    def load_fold(self, config: BundleConfig, weights: Path) -> NnunetNetwork:
        """One fold of an nnU-Net bundle (:func:`load_nnunet_fold`)."""
        return load_nnunet_fold(weights)

    def bundle_predictor(
        self, plugin: TaskPlugin, config: BundleConfig, folds: Sequence[NnunetNetwork], tta: str, device: torch.device
    ) -> Callable[[np.ndarray], np.ndarray]:
        """nnU-Net's predictor over the bundle's folds; any TTA mode but ``none`` is its mirroring."""
        mirroring = len(tta_ops_for(plugin, tta)) > 1
        return NnunetPredictor(plugin, folds, config.preprocessing.working_scale, mirroring, device)


#: The instance the ``eyegc.backends`` entry point ``nnunet`` names.
NNUNET_BACKEND = NnunetBackend()
