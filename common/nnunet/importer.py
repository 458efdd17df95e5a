"""``eyegc nnunet import``: a trained nnU-Net v2 model folder as an eyegc bundle.

The model folder is nnU-Net's ``nnUNet_results/DatasetNNN_<name>/<trainer>__<plans>__<configuration>``
(``plans.json``, ``dataset.json``, ``fold_<k>/checkpoint_final.pth``). Its ``dataset.json`` must
describe the task as ``eyegc nnunet dataset`` writes it: the same labels (regions for overlapping
classes) and channels; the working scale it records is applied at prediction. Each fold becomes
``fold_<k>/nnunet_fold.pt`` (:mod:`eyegc.common.nnunet.model`); ``bundle.json`` records the backend
``nnunet``, the trainer, plans and configuration, the epochs trained and, per fold, nnU-Net's EMA
pseudo-Dice (the only score the folder holds) and the validation cases its ``validation/`` folder
names. The thresholds stay at 0.5: ``eyegc tune`` needs out-of-fold predictions, which
``eyegc train --backend nnunet`` makes and an import does not.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from eyegc.common.backend import TrainConfig
from eyegc.common.bundle import SPLITS_NAME, write_checksums, write_config
from eyegc.common.bundle_config import BundleConfig, FoldRecord, Preprocessing
from eyegc.common.errors import BundleError, EyegcError
from eyegc.common.imageio import atomic_output_dir
from eyegc.common.nnunet.backend import NNUNET_BACKEND, NNUNET_LEARNING_RATE, nnunet_network_spec, save_fold
from eyegc.common.nnunet.dataset import DATASET_FORMAT, label_scheme
from eyegc.common.nnunet.model import NNUNET_FOLD_NAME, check_plans, load_nnunet_fold, require_nnunet
from eyegc.common.outputs import OutputKind, check_output_path
from eyegc.common.plugin import TaskPlugin
from eyegc.common.training import resolve_config
from tqdm import tqdm

__all__ = ["CHECKPOINT_NAMES", "check_dataset_json", "import_model", "model_folds"]

CHECKPOINT_NAMES = ("checkpoint_final.pth", "checkpoint_best.pth", "checkpoint_latest.pth")
#: nnU-Net's usual 5-fold split; ``bundle.json`` needs the number of folds of the split.
NNUNET_FOLDS = 5


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise BundleError(f"{path} is missing: give the model folder nnU-Net trained into (<trainer>__<plans>__2d)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc})") from None


def _labels(labels: Any, source: Path) -> list[tuple[str, list[int]]]:
    """``dataset.json``'s labels in their order (nnU-Net orders its output channels by it)."""
    if not isinstance(labels, dict):
        raise BundleError(f"{source}: labels must be an object of name -> value or list of values")
    ordered = []
    for name, value in labels.items():
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise BundleError(f"{source}: label {name!r} has a value that is not an integer ({value!r})")
        ordered.append((name, sorted(values)))
    return ordered


def check_dataset_json(plugin: TaskPlugin, dataset_json: Any, source: Path) -> float:
    """Refuse a model trained on other labels (or the same in another order), regions or channels than
    the task's; returns its working scale."""
    if not isinstance(dataset_json, dict):
        raise BundleError(f"{source} is not an nnU-Net dataset.json (not a JSON object)")
    ours = dataset_json.get("eyegc") if isinstance(dataset_json.get("eyegc"), dict) else {}
    if ours.get("format") == DATASET_FORMAT and ours.get("task") != plugin.name:
        raise BundleError(f"{source} describes an export of {ours.get('task')!r}, not {plugin.name!r}")
    scheme = label_scheme(plugin)
    if _labels(dataset_json.get("labels"), source) != _labels(scheme.labels, source):
        raise BundleError(
            f"{source} declares labels {json.dumps(dataset_json.get('labels'))}; {plugin.name} needs "
            f"{json.dumps(scheme.labels)}, in this order (make the dataset with `eyegc nnunet dataset {plugin.name}`)"
        )
    if scheme.region_based and dataset_json.get("regions_class_order") != scheme.regions_class_order:
        raise BundleError(f"{source}: regions_class_order must be {scheme.regions_class_order} for {plugin.name}")
    names = dataset_json.get("channel_names")
    channels = len(names) if isinstance(names, dict) else 0
    if channels != plugin.in_channels:
        raise BundleError(f"{source} has {channels} input channel(s); {plugin.name} reads {plugin.in_channels}")
    scale = ours.get("working_scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 < scale <= 1:
        raise BundleError(f"{source}: eyegc.working_scale {scale!r} is not in (0, 1]")
    return float(scale)


def model_folds(results: Path, folds: Sequence[int] | None, checkpoint: str) -> dict[int, Path]:
    """``fold -> checkpoint file`` of the folds asked for (default: every ``fold_<k>`` that has one)."""
    if folds is None:
        found = sorted(p for p in results.glob("fold_*") if p.name[5:].isdigit() and (p / checkpoint).is_file())
        chosen = {int(p.name[5:]): p / checkpoint for p in found}
        if not chosen and (results / "fold_all" / checkpoint).is_file():
            raise BundleError(
                f"{results} holds fold_all only (nnU-Net trained on every case): an eyegc bundle holds "
                "cross-validation folds; train numbered folds (nnUNetv2_train ... 0 to 4) and import those"
            )
        if not chosen:
            raise BundleError(f"{results} holds no fold_<k>/{checkpoint} (has training finished?)")
        return dict(sorted(chosen.items()))
    chosen = {}
    for fold in folds:
        path = results / f"fold_{fold}" / checkpoint
        if not path.is_file():
            raise BundleError(f"{path} is missing: train fold {fold}, or leave it out of --folds")
        chosen[fold] = path
    return chosen


def _validation_cases(fold_dir: Path, file_ending: str) -> list[str]:
    folder = fold_dir / "validation"
    return sorted(p.name[: -len(file_ending)] for p in folder.glob(f"*{file_ending}")) if folder.is_dir() else []


def _bundle_config(plugin: TaskPlugin, plans: dict[str, Any], checkpoint: dict[str, Any], scale: float) -> BundleConfig:
    configuration = str(checkpoint["init_args"]["configuration"])
    if configuration != "2d":
        raise BundleError(f"the model was trained in nnU-Net's {configuration!r} configuration; eyegc predicts 2d")
    config = resolve_config(plugin, TrainConfig())
    config.backend = NNUNET_BACKEND.name
    config.network = nnunet_network_spec(
        {"trainer": str(checkpoint["trainer_name"]), "plans": str(plans.get("plans_name", "nnUNetPlans"))}
    )
    config.preprocessing = Preprocessing(working_scale=scale)
    planned = plans["configurations"][configuration]
    config.patch_size = int(max(planned["patch_size"]))
    config.training.batch_size = int(planned["batch_size"])
    config.training.epochs = int(checkpoint.get("current_epoch") or 1)
    config.training.loss = "nnunet"
    rates = (checkpoint.get("logging") or {}).get("lrs") or [NNUNET_LEARNING_RATE]
    config.training.learning_rate = float(rates[0])
    return config


def import_model(
    plugin: TaskPlugin,
    results: Path,
    out: Path,
    folds: Sequence[int] | None = None,
    checkpoint: str = "checkpoint_final.pth",
    overwrite: bool = False,
) -> Path:
    """Make the bundle ``out`` from the nnU-Net model folder ``results`` (module docstring).

    Raises:
        EyegcError: nnunetv2 missing; a folder, file or checkpoint that is not what it should be;
            a model of other labels, channels or configuration; an output that would overwrite.
    """
    if checkpoint not in CHECKPOINT_NAMES:
        raise EyegcError(f"--checkpoint {checkpoint} is not one of nnU-Net's: {', '.join(CHECKPOINT_NAMES)}")
    require_nnunet()
    results = Path(results)
    if not results.is_dir():
        raise EyegcError(
            f"--results {results} is not a folder (nnUNet_results/DatasetNNN_<name>/<trainer>__<plans>__2d)"
        )
    check_output_path(out, "--out", OutputKind.FOLDER, [("--results", results)])
    plans = _read_json(results / "plans.json")
    dataset_json = _read_json(results / "dataset.json")
    scale = check_dataset_json(plugin, dataset_json, results / "dataset.json")
    check_plans(plans, dataset_json, "2d", str(results / "plans.json"))
    chosen = model_folds(results, folds, checkpoint)
    count = max(NNUNET_FOLDS, max(chosen) + 1)
    splits: list[dict[str, list[str]]] = [{"train": [], "val": []} for _ in range(count)]
    with atomic_output_dir(Path(out), overwrite=overwrite) as tmp:
        config = None
        for fold, path in tqdm(chosen.items(), desc="import nnU-Net folds", unit="fold"):
            trained = save_fold(path, plans, dataset_json, tmp / f"fold_{fold}" / NNUNET_FOLD_NAME)
            load_nnunet_fold(
                tmp / f"fold_{fold}" / NNUNET_FOLD_NAME
            )  # the weights fit the plans: refused now, not at predict
            config = config or _bundle_config(plugin, plans, trained, scale)
            splits[fold]["val"] = _validation_cases(path.parent, str(dataset_json.get("file_ending", ".png")))
            ema = trained.get("_best_ema")
            config.record_fold(
                fold,
                FoldRecord(
                    best_epoch=int(trained.get("current_epoch") or 1),
                    best_score=float(ema) if ema is not None and np.isfinite(float(ema)) else 0.0,
                    epochs_done=int(trained.get("current_epoch") or 1),
                    weights=f"fold_{fold}/{NNUNET_FOLD_NAME}",
                    validation_cases=splits[fold]["val"],
                ),
            )
        assert config is not None
        config.training.folds = count
        (tmp / SPLITS_NAME).write_text(json.dumps(splits, indent=1) + "\n")
        write_config(tmp, config)
        write_checksums(tmp)
    return Path(out)
