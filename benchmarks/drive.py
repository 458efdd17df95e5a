"""Benchmark: does the shared core reach published accuracy on real fundus images? (DRIVE vessels, CPU)

Usage::

    .venv/bin/python benchmarks/drive.py                                # ../shared/data/DRIVE, 5-fold CV
    .venv/bin/python benchmarks/drive.py --data ROOT --test-split test  # ROOT/test has ground truth
    .venv/bin/python benchmarks/drive.py --epochs 10 --folds 2          # a quick look
    .venv/bin/python benchmarks/drive.py --patch-size 96 --channels rgb # other settings than the plugin's
    .venv/bin/python benchmarks/drive.py --out OUT --resume             # continue an interrupted run

``--test-split cv`` (the default when ROOT has no ``test/``) trains k folds on ``training/`` with
``eyegc train``, then predicts each fold's held-out images with that fold's network and TTA, and
scores all held-out images pooled with the plugin's metric (F1 and AUC inside the field of view)
at the threshold tuned on the out-of-fold probabilities (slightly optimistic: the same images
choose it). ``--test-split test`` trains the same k folds and scores their ensemble on ``test/``.

Prints F1, AUC, accuracy, sensitivity, specificity, training time and inference seconds per
image, and writes them to ``OUT/result.json``. The run is kept in ``OUT/run`` (a normal bundle).
Published U-Nets on the DRIVE test set: F1 0.81-0.83, AUC 0.975-0.98.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from eyegc.challenges.drive.plugin import DriveVessels
from eyegc.common.bundle import CONFIG_NAME, BundleConfig, load_bundle, read_config
from eyegc.common.evaluation import evaluate_predictions, format_leaderboard
from eyegc.common.imageio import atomic_output_dir
from eyegc.common.inference import Predictor
from eyegc.common.plugin import Case
from eyegc.common.registry import get_task
from eyegc.common.training import TrainConfig, train
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "DRIVE"
#: a one-thread fold runs this much slower while another fold trains beside it (shared caches and
#: memory bandwidth; 2-core machine: 11.5 s per epoch beside another vs 11.2 s alone, benchmarks/README.md).
CONCURRENCY_SLOWDOWN = 1.05
#: the benchmark's own options (split, TTA, jobs, budget), kept in OUT so that --resume uses them.
OPTIONS_NAME = "benchmark.json"
#: the share of a budget spent besides epochs (loading, worker start, validation every few epochs,
#: out-of-fold predictions, threshold tuning): ~3 % on the same machine.
OVERHEAD_SHARE = 0.05


def _predict(plugin: DriveVessels, work: list[tuple[str, Predictor, list[Case]]], out: Path) -> tuple[float, float]:
    """Predict and write the cases of each (label, predictor, cases) item; returns (s per image, float AUC).

    The float AUC ranks the unquantised probabilities inside the field of view, as papers compute
    it; the plugin's metric ranks the 8-bit PNGs a submission holds (ties at 1/255 count one half).
    """
    elapsed, count = 0.0, 0
    scores, truths = [], []
    with atomic_output_dir(out, overwrite=True) as tmp:
        for label, predictor, cases in work:
            for case in tqdm(cases, desc=label, unit="image"):
                started = time.perf_counter()
                masks, probs = predictor.predict(plugin.read_image(case.image))
                plugin.write_prediction(tmp, case.case_id, masks, probs)
                elapsed += time.perf_counter() - started
                count += 1
                fov = plugin.read_roi(case).astype(bool)
                scores.append(probs[0][fov])
                truths.append(plugin.read_target(case)[0][fov] > 0)
    return elapsed / count, float(roc_auc_score(np.concatenate(truths), np.concatenate(scores)))


def _cv_work(plugin: DriveVessels, run: Path, data: Path, tta: str) -> list[tuple[str, Predictor, list[Case]]]:
    """Each fold's held-out images, to be predicted by that fold's network alone."""
    config = read_config(run)
    cases = {c.case_id: c for c in plugin.list_cases(data, "train")}
    return [
        (
            f"fold {fold} held-out",
            Predictor(plugin, [load_bundle(run, folds=[fold])], tta=tta, device="cpu"),
            [cases[c] for c in record.validation_cases],
        )
        for fold, record in config.folds.items()
    ]


def _probe_epoch_seconds(plugin: DriveVessels, data: Path, cfg: TrainConfig, probe: Path) -> float:
    """Seconds one epoch of one fold takes here while ``cfg.jobs`` folds train at once.

    A probe trains fold 0 for four epochs with the threads one of the workers gets and times
    epochs 2 and 3 (the first warms up, the last validates).
    """
    threads = torch.get_num_threads()
    stamps: list[float] = []
    torch.set_num_threads(max(1, threads // cfg.jobs))
    try:
        probe_cfg = replace(cfg, epochs=4, fold="0", validate_every=1000, tune=False, jobs=1)
        train(plugin, data, probe, probe_cfg, callbacks=[lambda *_: stamps.append(time.perf_counter())])
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(probe, ignore_errors=True)
    return (stamps[2] - stamps[0]) / 2 * (CONCURRENCY_SLOWDOWN if cfg.jobs > 1 else 1.0)


def _epochs_within(seconds: float, epoch_seconds: float, folds: int, jobs: int) -> int:
    """Epochs per fold that fit ``seconds`` when the folds train ``jobs`` at a time."""
    rounds = -(-folds // jobs)
    return max(1, int(seconds * (1 - OVERHEAD_SHARE) / (rounds * epoch_seconds)))


def _per_fold(plugin: DriveVessels, run: Path, data: Path, pred: Path) -> list[dict[str, float]]:
    """F1 and AUC of each fold's held-out images alone (one network ranks them all, as on a test set)."""
    config = read_config(run)
    cases = {c.case_id: c for c in plugin.list_cases(data, "train")}
    figures = []
    for fold, record in config.folds.items():
        ids = list(record.validation_cases)
        result = plugin.metric(
            plugin.name,
            plugin.read_predictions(pred, ids),
            [plugin.read_target(cases[i]) for i in ids],
            ids,
            probabilities=plugin.read_probabilities(pred, ids),
            rois=[plugin.read_roi(cases[i]) for i in ids],
        )
        vessel = result.per_class["vessel"]
        figures.append({"fold": int(fold), "f1": vessel["f1"], "auc": vessel["auc"]})
    return figures


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="DRIVE root (holds training/ and maybe test/)")
    parser.add_argument("--test-split", choices=("test", "cv"), default=None, help="default: test if ROOT/test exists")
    parser.add_argument("--out", type=Path, default=Path("build/bench-drive"), help="work folder (replaced)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument(
        "--minutes",
        type=float,
        default=30.0,
        help="training budget in wall-clock minutes (default 30): epochs are fitted to this machine by a short probe",
    )
    parser.add_argument("--epochs", type=int, default=None, help="fixed epochs instead of --minutes (0: the plugin's)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="folds trained at once, each with threads/jobs CPU threads (default: 2 on 2 or more threads, else 1)",
    )
    parser.add_argument("--patch-size", type=int, default=None, help="training/inference window; default: the plugin's")
    parser.add_argument("--patches-per-image", type=int, default=None, help="patches per image per epoch")
    parser.add_argument("--learning-rate", type=float, default=None, help="AdamW peak learning rate")
    parser.add_argument("--loss", choices=("dice_bce", "dice_focal", "bce"), default=None, help="default: the plugin's")
    parser.add_argument(
        "--channels", choices=("rgb", "green"), default=None, help="network input; default: the plugin's"
    )
    parser.add_argument(
        "--network-kwargs", type=json.loads, default=None, help="JSON, e.g. '{\"channels\": [32, 64, 128, 256]}'"
    )
    parser.add_argument("--tta", default="dihedral", help="none, flip or dihedral (default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted benchmark in OUT with its own settings (training time: this run only)",
    )
    return parser.parse_args(argv)


class _Refused(Exception):
    """A one-line reason to stop (exit status 2)."""


@dataclass
class _Plan:
    """What the benchmark runs: the task, the split scored, and the options kept for --resume."""

    plugin: DriveVessels
    split: str
    jobs: int
    saved: dict[str, Any]
    previous: BundleConfig | None


def _plan(args: argparse.Namespace) -> _Plan:
    """A new benchmark in an emptied OUT, or the interrupted one there (``--resume``) with its own options."""
    if not (args.data / "training").is_dir():
        raise _Refused(f"no DRIVE training set in {args.data} (expected {args.data / 'training'})")
    jobs = min(2, torch.get_num_threads()) if args.jobs is None else args.jobs
    if jobs < 1:
        raise _Refused(f"--jobs must be at least 1, got {jobs}")
    split = args.test_split or ("test" if (args.data / "test").is_dir() else "cv")
    run, options_path = args.out / "run", args.out / OPTIONS_NAME
    if not args.resume:
        # The colour variant is a registered task of its own, so that its bundle predicts in colour.
        plugin = get_task("drive-vessels-rgb" if args.channels == "rgb" else "drive-vessels")
        shutil.rmtree(args.out, ignore_errors=True)
        args.out.mkdir(parents=True)
        return _Plan(plugin, split, jobs, {}, None)
    if not (run / CONFIG_NAME).is_file() or not options_path.is_file():
        raise _Refused(
            f"nothing to resume in {args.out}: no benchmark run there ({run / CONFIG_NAME} or {options_path} "
            "is missing); run without --resume"
        )
    previous = read_config(run)
    plugin = get_task(previous.task)
    if plugin.challenge != "drive":
        raise _Refused(f"{run} holds a {plugin.name} run, not a DRIVE one; choose another --out")
    # The benchmark's own options as the interrupted run had them (the bundle holds the training's).
    saved = json.loads(options_path.read_text())
    args.tta = saved["tta"]
    args.folds = previous.training.folds
    return _Plan(plugin, saved["test_split"], saved["jobs"], saved, previous)


def _training_config(args: argparse.Namespace, plan: _Plan, started: float) -> tuple[TrainConfig, float | None]:
    """The run's settings, with epochs fitted to ``--minutes`` by a probe; the probe's seconds per epoch."""
    threads = max(1, torch.get_num_threads())
    torch.set_num_threads(threads)
    cfg = TrainConfig(
        folds=args.folds,
        epochs=args.epochs or None,
        patch_size=args.patch_size,
        patches_per_image=args.patches_per_image,
        learning_rate=args.learning_rate,
        loss=args.loss,
        network_kwargs=args.network_kwargs,
        device="cpu",
        seed=args.seed,
        jobs=min(plan.jobs, threads, args.folds),
    )
    epoch_seconds = plan.saved.get("probe_epoch_seconds")
    if plan.previous is not None:
        # The run's own settings; train() continues each fold from its last checkpoint.
        return replace(cfg, epochs=plan.previous.training.epochs), epoch_seconds
    if args.epochs is None:
        epoch_seconds = _probe_epoch_seconds(plan.plugin, args.data, cfg, args.out / "probe")
        left = args.minutes * 60 - (time.perf_counter() - started)
        cfg = replace(cfg, epochs=_epochs_within(left, epoch_seconds, args.folds, cfg.jobs))
        print(
            f"budget {args.minutes:g} min: {cfg.epochs} epochs per fold, {cfg.jobs} folds at a time "
            f"({epoch_seconds:.1f} s per epoch per fold here)"
        )
    return cfg, epoch_seconds


def _settings_figures(config: BundleConfig) -> dict[str, Any]:
    """The trained run's settings, as result.json records them."""
    t = config.training
    return {
        "threshold": config.postprocessing.threshold("vessel"),
        "epochs": t.epochs,
        "network": config.network.model_dump(),
        "patch_size": config.patch_size,
        "patches_per_image": t.patches_per_image,
        "batch_size": t.batch_size,
        "learning_rate": t.learning_rate,
        "loss": t.loss,
        "clahe": config.preprocessing.clahe,
        "elastic_probability": t.elastic_probability,
        "validate_every": t.validate_every,
    }


def _score(args: argparse.Namespace, plan: _Plan) -> tuple[dict[str, Any], Any, float]:
    """Predict the scored split, evaluate it; the figures, the evaluation and seconds per image."""
    plugin, run, pred = plan.plugin, args.out / "run", args.out / "predictions"
    if plan.split == "cv":
        work = _cv_work(plugin, run, args.data, args.tta)
    else:
        ensemble = Predictor(plugin, [load_bundle(run)], tta=args.tta, device="cpu")
        work = [("test", ensemble, plugin.list_cases(args.data, "test"))]
    per_image, auc_float = _predict(plugin, work, pred)
    result = evaluate_predictions(plugin, pred, args.data, "train" if plan.split == "cv" else "test")
    vessel = result.per_class["vessel"]
    cv = plan.split == "cv"
    figures: dict[str, Any] = {
        "evaluation": f"{args.folds}-fold cross-validation on training/" if cv else "test/ (ensemble of the folds)",
        "cases": result.cases,
        **{key: vessel[key] for key in ("f1", "auc")},
        "auc_float": auc_float,
        **{key: vessel[key] for key in ("accuracy", "sensitivity", "specificity")},
    }
    if cv:
        folds = _per_fold(plugin, run, args.data, pred)
        figures["per_fold"] = folds
        figures["mean_fold_f1"] = float(sum(f["f1"] for f in folds) / len(folds))
        figures["mean_fold_auc"] = float(sum(f["auc"] for f in folds) / len(folds))
    return figures, result, per_image


def _report(args: argparse.Namespace, figures: dict[str, Any], train_seconds: float) -> None:
    print(
        f"DRIVE {figures['evaluation']}: F1 {figures['f1']:.4f}  AUC {figures['auc']:.4f} "
        f"(unquantised probabilities: {figures['auc_float']:.4f})  "
        f"accuracy {figures['accuracy']:.4f}  sensitivity {figures['sensitivity']:.4f}  "
        f"specificity {figures['specificity']:.4f}  (threshold {figures['threshold']:.2f})"
    )
    if "per_fold" in figures:
        print(
            "per fold (each fold's network ranks its own held-out images, as one network does on a test set): "
            + ", ".join(f"F1 {f['f1']:.4f} AUC {f['auc']:.4f}" for f in figures["per_fold"])
            + f"; mean F1 {figures['mean_fold_f1']:.4f}  mean AUC {figures['mean_fold_auc']:.4f}"
        )
    budget = ""
    if args.resume:
        budget = " (this run only: it resumed an interrupted one)"
    elif figures["budget_minutes"]:
        within = "within" if train_seconds <= args.minutes * 60 else "OVER"
        budget = f" ({within} the {args.minutes:g}-minute budget, probe included)"
    print(
        f"training {train_seconds / 60:.1f} min{budget} for {args.folds} folds x {figures['epochs']} epochs, "
        f"{figures['jobs']} at a time on {figures['cpu_threads']} CPU threads; inference "
        f"{figures['inference_seconds_per_image']:.2f} s per image with TTA {args.tta}"
    )
    print("targets (DRIVE test set): F1 >= 0.80, AUC >= 0.975; published U-Nets 0.81-0.83 / 0.975-0.98")


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        plan = _plan(args)
    except _Refused as refusal:
        print(refusal, file=sys.stderr)
        return 2
    run = args.out / "run"
    started = time.perf_counter()
    cfg, epoch_seconds = _training_config(args, plan, started)
    budget_minutes = plan.saved["minutes"] if args.resume else (args.minutes if args.epochs is None else None)
    if not args.resume:
        options = {"test_split": plan.split, "tta": args.tta, "jobs": cfg.jobs, "probe_epoch_seconds": epoch_seconds}
        (args.out / OPTIONS_NAME).write_text(json.dumps({**options, "minutes": budget_minutes}))
    try:
        train(plan.plugin, args.data, run, cfg, resume=args.resume)
    except KeyboardInterrupt:
        if not (run / CONFIG_NAME).is_file():  # interrupted before its first checkpoint: nothing kept
            print("\ninterrupted before the first checkpoint; run the benchmark again", file=sys.stderr)
            return 130
        print(
            f"\ninterrupted; continue with: {sys.executable} {sys.argv[0]} --data {args.data} --out {args.out} "
            "--resume",
            file=sys.stderr,
        )
        return 130
    train_seconds = time.perf_counter() - started
    figures, result, per_image = _score(args, plan)
    figures |= _settings_figures(read_config(run)) | {
        "training_seconds": round(train_seconds, 1),
        "budget_minutes": budget_minutes,
        "resumed": args.resume,
        "probe_epoch_seconds": round(epoch_seconds, 2) if epoch_seconds else None,
        "jobs": cfg.jobs,
        "inference_seconds_per_image": round(per_image, 2),
        "tta": args.tta,
        "folds": args.folds,
        "channels": plan.plugin.channels,
        "cpu_threads": torch.get_num_threads(),
    }
    (args.out / "result.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(format_leaderboard(result))
    _report(args, figures, train_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
