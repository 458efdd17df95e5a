"""nnU-Net's planning, preprocessing and training, run by ``eyegc train --backend nnunet`` as a child
process (``python -m eyegc.common.nnunet.worker plan|train ...``).

A child process so that nnU-Net's ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results``
are the run's own folders (the parent sets them in the child's environment) and its printing, its
worker processes and its memory end with the step. The steps are nnU-Net's own API, as its
``nnUNetv2_plan_and_preprocess`` and ``nnUNetv2_train`` commands call it; eyegc changes only what
the user asked for: the planner's memory target and feature widths, the batch size, the epochs, the
iterations per epoch, a checkpoint every epoch (written to a temporary file and renamed, so an
interrupt never leaves half a checkpoint), and the split (eyegc's folds, as ``splits_final.json``).
A checkpoint is resumed only after torch's safe unpickler has read it. Everything nnU-Net prints
goes to the log file the parent names; an epoch progress bar goes to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

__all__ = ["ERROR_PREFIX", "PLANNERS", "TRAINERS", "find_class", "main", "plan", "train_fold"]

#: the packages nnU-Net looks its planners and trainers up in, by class name.
PLANNERS = "nnunetv2.experiment_planning"
TRAINERS = "nnunetv2.training.nnUNetTrainer"

#: the log's last line when a step failed: what the parent reports.
ERROR_PREFIX = "eyegc-nnunet-error: "


def find_class(package: str, name: str) -> type | None:
    """A class by name in a package's modules, as nnU-Net's ``recursive_find_python_class``, except that
    a module that fails to import is skipped: nnunetv2 2.8.1's Primus trainers import timm and so
    torchvision, which does not import beside the pinned CPU torch, and nnU-Net's own search then
    fails for every trainer it meets after them."""
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, f"{package}.", onerror=lambda _: None):
        try:
            module = importlib.import_module(info.name)
        except Exception:  # an architecture whose extra dependency is absent or broken here
            continue
        found = getattr(module, name, None)
        if isinstance(found, type):
            return found
    return None


def plan(
    dataset_id: int,
    planner: str,
    plans_name: str,
    gpu_memory_target: float | None,
    base_features: int | None,
    max_features: int | None,
    processes: int,
) -> None:
    """Fingerprint (with nnU-Net's dataset check), plan and preprocess the ``2d`` configuration."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, preprocess

    extract_fingerprints([dataset_id], num_processes=processes, check_dataset_integrity=True)
    planner_class = find_class(PLANNERS, planner)
    if planner_class is None:
        raise SystemExit(f"nnU-Net has no experiment planner named {planner!r}")
    kwargs: dict[str, Any] = {"plans_name": plans_name}
    if gpu_memory_target is not None:
        kwargs["gpu_memory_target_in_gb"] = gpu_memory_target
    experiment = planner_class(dataset_id, **kwargs)
    if base_features is not None:
        experiment.UNet_base_num_features = base_features
    if max_features is not None:
        experiment.UNet_max_features_2d = max_features
    experiment.plan_experiment()
    preprocess([dataset_id], plans_name, configurations=("2d",), num_processes=[processes])


def train_fold(
    dataset_name: str,
    plans_name: str,
    configuration: str,
    trainer: str,
    fold: int,
    device: str,
    settings: dict[str, int | None],
    resume: bool,
    marker: str | None = None,
) -> None:
    """Train one fold as ``nnUNetv2_train`` does, with eyegc's settings (``None``: nnU-Net's own).
    ``marker`` is written once the first checkpoint is: from then on the run can be resumed."""
    from batchgenerators.utilities.file_and_folder_operations import join, load_json
    from nnunetv2.paths import nnUNet_preprocessed

    trainer_class = find_class(TRAINERS, trainer)
    if trainer_class is None:
        raise SystemExit(f"nnU-Net has no trainer named {trainer!r} here")
    folder = join(nnUNet_preprocessed, dataset_name)
    plans = load_json(join(folder, plans_name + ".json"))
    if settings.get("batch_size"):
        plans["configurations"][configuration]["batch_size"] = settings["batch_size"]
    plans["continue_training"] = resume
    network_trainer = trainer_class(
        plans=plans,
        configuration=configuration,
        fold=fold,
        dataset_json=load_json(join(folder, "dataset.json")),
        device=torch.device(device),
    )
    for attribute, key in (
        ("num_epochs", "epochs"),
        ("num_iterations_per_epoch", "iterations_per_epoch"),
        ("num_val_iterations_per_epoch", "val_iterations"),
    ):
        if settings.get(key):
            setattr(network_trainer, attribute, int(settings[key]))  # type: ignore[arg-type]
    network_trainer.save_every = 1
    _save_atomically(network_trainer, marker)
    if resume:
        _resume_safely(network_trainer)
    _epoch_progress(network_trainer, fold)
    network_trainer.run_training()
    final = Path(network_trainer.output_folder) / "checkpoint_final.pth"
    latest = final.with_name("checkpoint_latest.pth")
    if final.is_file() and not latest.exists():
        os.link(final, latest)  # nnU-Net deletes it at the end; a later --resume of this fold starts from final


def _save_atomically(network_trainer: Any, marker: str | None) -> None:
    """Checkpoints via a temporary file and a rename; the marker once one exists."""
    save = network_trainer.save_checkpoint

    def save_then_rename(filename: str) -> None:
        tmp = f"{filename}.tmp"
        save(tmp)
        if os.path.isfile(tmp):
            os.replace(tmp, filename)
            if marker and not os.path.isfile(marker):
                Path(marker).write_text(json.dumps({"nnunet_fold": str(Path(filename).parent)}) + "\n")

    network_trainer.save_checkpoint = save_then_rename


def _resume_safely(network_trainer: Any) -> None:
    """nnU-Net's ``maybe_load_checkpoint`` (final, else latest, else best), after torch's safe
    unpickler has read the file: nnU-Net itself loads with ``weights_only=False``."""
    from eyegc.common.nnunet.model import read_nnunet_checkpoint

    folder = Path(network_trainer.output_folder)
    for name in ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth"):
        if (folder / name).is_file():
            read_nnunet_checkpoint(folder / name)  # raises on anything that could run code
            network_trainer.load_checkpoint(str(folder / name))
            return


def _epoch_progress(network_trainer: Any, fold: int) -> None:
    """A progress bar on stderr, advanced after each of nnU-Net's epochs."""
    bar = tqdm(
        total=network_trainer.num_epochs,
        initial=network_trainer.current_epoch,
        desc=f"nnU-Net fold {fold}",
        unit="epoch",
        file=sys.__stderr__,
    )
    on_epoch_end = network_trainer.on_epoch_end

    def on_epoch_end_with_progress() -> None:
        on_epoch_end()
        logged = network_trainer.logger.local_logger.my_fantastic_logging
        bar.update(1)
        bar.set_postfix(
            loss=f"{float(logged['train_losses'][-1]):.4f}", ema_dice=f"{float(logged['ema_fg_dice'][-1]):.4f}"
        )

    network_trainer.on_epoch_end = on_epoch_end_with_progress


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m eyegc.common.nnunet.worker")
    parser.add_argument("step", choices=("plan", "train"))
    parser.add_argument("--settings", required=True, help="the step's arguments as JSON")
    parser.add_argument("--log", required=True, help="where nnU-Net's own output goes")
    args = parser.parse_args(argv)
    settings = json.loads(args.settings)
    with open(args.log, "a", buffering=1) as log:
        # At the descriptor: nnU-Net's preprocessing pool prints from its own processes too.
        os.dup2(log.fileno(), 1)
        sys.stdout = log
        warnings.showwarning = lambda message, category, *_: print(f"{category.__name__}: {message}", file=log)
        try:
            if args.step == "plan":
                plan(**settings)
            else:
                train_fold(**settings)
        except KeyboardInterrupt:
            raise SystemExit(130) from None
        except BaseException as exc:
            traceback.print_exc(file=log)
            print(
                f"{ERROR_PREFIX}{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
                file=log,
            )
            raise SystemExit(1) from None


if __name__ == "__main__":
    main()
