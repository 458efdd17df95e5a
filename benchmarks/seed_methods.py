"""Benchmark: the seeds' methods (CBCE, RMI, super-resolution-aided segmentation, dense CRF, an smp
UNet++ with an SE-ResNet50 encoder) each against the task's default, on the same folds, the same CPU
budget and the task's own metric.

Usage::

    .venv/bin/python benchmarks/seed_methods.py                               # DRIVE + IDRiD samples (../shared/data)
    .venv/bin/python benchmarks/seed_methods.py --datasets drive --minutes 6  # 6 min of training per variant
    .venv/bin/python benchmarks/seed_methods.py --variants default cbce crf   # some variants only

Every variant is ``eyegc train`` with the task's defaults plus one option:

- ``default``: nothing added;
- ``cbce``: ``--loss cbce``; ``rmi``: ``--rmi-weight 0.5`` on the default loss (the authors'
  ``0.5 BCE + 0.5 RMI`` weighs RMI as ``--rmi-weight 1`` does: this is half that);
- ``sr``: ``--super-resolution 2`` with a patch twice as wide, so the network sees as many pixels per
  patch as the default's; on DRIVE at the default's working scale, on IDRiD at twice it (the
  network then runs at the default's scale and the output has twice its resolution);
- ``smp``: ``--model smp:UnetPlusPlus --network-kwargs '{"encoder_name": "se_resnet50"}'`` (randomly
  initialised: nothing is downloaded);
- ``crf``: the default's trained run re-tuned with ``eyegc tune --crf`` (no training of its own).

The budget is the same wall-clock training time for each trained variant: a probe times the second
epoch of fold 0 here (stopped before any validation), and each variant gets the epochs that fit
``--minutes`` over its folds, at least one. Each fold's held-out images are predicted by that fold
alone (``--tta``, default none) with the run's tuned post-processing and scored pooled with the
task's leaderboard metric. The IDRiD samples (4 images) use 2 folds and half the task's default
working scale (0.25, not 0.5), to fit a CPU.
Prints one table per data set and writes ``OUT/result.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from eyegc.common.plugin import TaskPlugin
from eyegc.common.registry import get_task
from eyegc.common.training import TrainConfig, train
from eyegc.common.tuning import tune
from heldout import format_leaderboard, held_out_scores

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
VARIANTS = ("default", "cbce", "rmi", "sr", "smp", "crf")


@dataclass(frozen=True)
class Dataset:
    """A data set's task, root, folds and the default's working scale and patch."""

    task: str
    root: Path
    folds: int
    scale: float
    patch: int
    #: the super-resolution variant's working scale, as a multiple of ``scale``.
    sr_scale: float


def _datasets(args: argparse.Namespace) -> dict[str, Dataset]:
    return {
        "drive": Dataset("drive-vessels", args.drive, args.folds, 1.0, 128, 1.0),
        "idrid": Dataset("idrid-lesions", args.idrid, 2, 0.25, 256, 2.0),
    }


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=("drive", "idrid"), default=["drive", "idrid"])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--drive", type=Path, default=SHARED_DATA / "DRIVE", help="the DRIVE root (training/)")
    parser.add_argument("--idrid", type=Path, default=SHARED_DATA / "IDRiD", help="the IDRiD root (A. Segmentation/)")
    parser.add_argument("--minutes", type=float, default=3.0, help="DRIVE: training budget per variant")
    parser.add_argument("--idrid-minutes", type=float, default=1.5, help="IDRiD samples: training budget per variant")
    parser.add_argument("--folds", type=int, default=5, help="DRIVE's folds (the IDRiD samples: 2)")
    parser.add_argument("--tta", default="none", help="held-out prediction's TTA (none, flip)")
    parser.add_argument("--reuse", action="store_true", help="score runs an earlier invocation finished, not retrain")
    parser.add_argument("--out", type=Path, default=Path("build/bench-seed-methods"))
    return parser.parse_args(argv)


def _config(variant: str, data: Dataset) -> TrainConfig:
    base = TrainConfig(folds=data.folds, working_scale=data.scale, patch_size=data.patch, device="cpu")
    if variant == "cbce":
        return replace(base, loss="cbce")
    if variant == "rmi":
        return replace(base, rmi_weight=0.5)
    if variant == "sr":
        return replace(base, super_resolution=2, working_scale=data.scale * data.sr_scale, patch_size=data.patch * 2)
    if variant == "smp":
        return replace(base, model="smp:UnetPlusPlus", network_kwargs={"encoder_name": "se_resnet50"})
    return base


class _ProbeDone(Exception):
    """Raised by the probe's epoch callback: the probe has its timing."""


def _epoch_seconds(plugin: TaskPlugin, data: Path, cfg: TrainConfig, probe: Path, per_fold: float) -> float:
    """Seconds of the second epoch of fold 0, stopped before the validation of a third.

    When the first epoch (with the data loading before it) already takes more than a fold's share
    of the budget, the variant gets one epoch whatever the second takes: its time is that estimate.
    """
    started = time.perf_counter()
    stamps: list[float] = []

    def stamp(*_: Any) -> None:
        stamps.append(time.perf_counter())
        if len(stamps) == 2 or stamps[0] - started > per_fold:
            raise _ProbeDone

    shutil.rmtree(probe, ignore_errors=True)
    with contextlib.suppress(_ProbeDone):
        train(plugin, data, probe, replace(cfg, epochs=3, fold="0", tune=False, validate_every=1000), callbacks=[stamp])
    shutil.rmtree(probe, ignore_errors=True)
    return stamps[1] - stamps[0] if len(stamps) == 2 else stamps[0] - started


def _finished(run: Path, folds: int) -> dict[str, Any] | None:
    """A run from an earlier invocation with every fold trained (``--reuse``), as its bundle.json."""
    path = run / "bundle.json"
    if not path.is_file():
        return None
    config = json.loads(path.read_text())
    return config if len(config.get("folds", {})) == folds else None


def _variant(args: argparse.Namespace, data: Dataset, variant: str, out: Path, minutes: float) -> dict[str, Any]:
    plugin = get_task(data.task)
    run = out / variant
    earlier = _finished(run, data.folds) if args.reuse and variant != "crf" else None
    if earlier is not None:  # trained by an earlier invocation under the same budget: scored again
        leaderboard, per_image = held_out_scores(plugin, run, data.root, args.tta)
        seconds = sum(float(f.get("seconds") or 0) for f in earlier["folds"].values())
        epochs = earlier["training"]["epochs"]
        return {
            "leaderboard": leaderboard,
            "epochs": epochs,
            "epoch_seconds": None,
            "seconds": round(seconds, 1),
            "seconds_per_image": round(per_image, 2),
            "crf": None,
            "reused": True,
        }
    shutil.rmtree(run, ignore_errors=True)
    started = time.perf_counter()
    if variant == "crf":  # the default's run, re-tuned with the CRF
        shutil.copytree(out / "default", run)
        tune(plugin, run, data.root, crf=True)
        epochs, epoch = None, None
    else:
        cfg = _config(variant, data)
        per_fold = minutes * 60 / data.folds
        epoch = _epoch_seconds(plugin, data.root, cfg, out / f"probe-{variant}", per_fold)
        epochs = max(1, int(per_fold / epoch))
        train(plugin, data.root, run, replace(cfg, epochs=epochs))
    seconds = time.perf_counter() - started
    leaderboard, per_image = held_out_scores(plugin, run, data.root, args.tta)
    config = json.loads((run / "bundle.json").read_text())
    return {
        "leaderboard": leaderboard,
        "epochs": epochs,
        "epoch_seconds": None if epoch is None else round(epoch, 2),
        "seconds": round(seconds, 1),
        "seconds_per_image": round(per_image, 2),
        "crf": config["postprocessing"].get("crf") or None,
    }


def _print(results: dict[str, Any]) -> None:
    for name, result in results.items():
        print(f"\n{name} ({result['task']}, {result['folds']}-fold CV, {result['minutes']} min per variant)")
        print(f"{'variant':8} {'epochs':>6} {'s/epoch':>8} {'s':>8} {'s/image':>8}  leaderboard")
        for variant, row in result["variants"].items():
            board = format_leaderboard(row["leaderboard"])
            epochs = "-" if row["epochs"] is None else str(row["epochs"])
            per_epoch = "-" if row["epoch_seconds"] is None else f"{row['epoch_seconds']:.2f}"
            print(
                f"{variant:8} {epochs:>6} {per_epoch:>8} {row['seconds']:8.1f} {row['seconds_per_image']:8.2f}  {board}"
            )


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    torch.manual_seed(0)
    variants = [v for v in VARIANTS if v in args.variants]
    if "crf" in variants and "default" not in variants:
        variants.insert(0, "default")  # the CRF re-tunes the default's run
    results: dict[str, Any] = {}
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        data = _datasets(args)[name]
        if not data.root.is_dir():
            print(f"skipping {name}: no data at {data.root}", file=sys.stderr)
            continue
        minutes = args.minutes if name == "drive" else args.idrid_minutes
        out = args.out / name
        result_file = args.out / "result.json"
        earlier = json.loads(result_file.read_text()) if result_file.is_file() else {}
        rows = earlier.get(name, {}).get("variants", {})
        for variant in variants:  # each row saved as it is measured: an interrupted run keeps its rows
            rows[variant] = _variant(args, data, variant, out, minutes)
            results[name] = {"task": data.task, "folds": data.folds, "minutes": minutes, "variants": rows}
            result_file.write_text(json.dumps({**earlier, **results}, indent=1) + "\n")
    _print(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
