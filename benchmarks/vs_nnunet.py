"""Benchmark: the MONAI core against nnU-Net v2 (2d) on the same folds, the same CPU budget and the
same eyegc metric.

Usage::

    .venv/bin/python benchmarks/vs_nnunet.py                         # DRIVE (../shared/data) and GOALS sample data
    .venv/bin/python benchmarks/vs_nnunet.py --minutes 15 --folds 5  # 15 min of training per system and data set
    .venv/bin/python benchmarks/vs_nnunet.py --datasets goals        # synthetic GOALS layers only (no real data)

For each data set both systems train the same k-fold split (eyegc's: nnU-Net gets it as
``splits_final.json``) with ``eyegc train`` (``--backend torch`` with the task's defaults, and
``--backend nnunet``). The budget is the same wall-clock time for each: a probe times one epoch of
each system here (epochs 2-3 of fold 0), and each gets the epochs that fit ``--minutes`` over its
folds. nnU-Net's own recipe (1000 epochs of 250 iterations, patches sized for an 8 GB GPU) does not
fit a CPU budget: it runs here with its planner's memory target at ``--nnunet-memory`` GB and
``--nnunet-iterations`` iterations an epoch (everything else nnU-Net's own: network, loss,
augmentation, SGD schedule). Planning and preprocessing are timed apart.

Each fold's held-out images are predicted by that fold alone, with TTA (eyegc's flips; nnU-Net's
mirroring), and all held-out images are scored pooled with the task's leaderboard metric, at the
thresholds tuned on each run's out-of-fold probabilities. Prints one table and writes
``OUT/result.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from eyegc.common.nnunet.model import read_nnunet_checkpoint
from eyegc.common.plugin import TaskPlugin
from eyegc.common.registry import get_task
from eyegc.common.sample_data import write_sample_data
from eyegc.common.training import TrainConfig, train
from heldout import format_leaderboard, held_out_scores

DEFAULT_DRIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "DRIVE"
#: data set -> (task, working scale both systems train at)
DATASETS = {"drive": ("drive-vessels", 1.0), "goals": ("goals-layers", 0.5)}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=sorted(DATASETS))
    parser.add_argument("--drive", type=Path, default=DEFAULT_DRIVE, help="the DRIVE root (training/)")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per system and data set")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--goals-cases", type=int, default=10, help="synthetic GOALS training cases")
    parser.add_argument("--nnunet-memory", type=float, default=1.0, help="nnU-Net's planner memory target (GB)")
    parser.add_argument("--nnunet-iterations", type=int, default=25, help="nnU-Net's iterations per epoch")
    parser.add_argument("--out", type=Path, default=Path("build/bench-vs-nnunet"))
    return parser.parse_args(argv)


def _configs(args: argparse.Namespace, scale: float) -> dict[str, TrainConfig]:
    nnunet = {"gpu_memory_target": args.nnunet_memory, "iterations_per_epoch": args.nnunet_iterations}
    return {
        "monai": TrainConfig(folds=args.folds, working_scale=scale, device="cpu"),
        "nnunet": TrainConfig(
            backend="nnunet",
            folds=args.folds,
            working_scale=scale,
            device="cpu",
            network_kwargs={**nnunet, "val_iterations": max(1, args.nnunet_iterations // 5)},
        ),
    }


def _epoch_seconds(plugin: TaskPlugin, data: Path, cfg: TrainConfig, probe: Path) -> tuple[float, float]:
    """Seconds per epoch of fold 0 (epochs 2 and 3 of 4) and seconds before the first epoch."""
    stamps: list[float] = []
    started = time.time()  # the wall clock: compared with the plan log's modification time
    probe_cfg = replace(cfg, epochs=4, fold="0", tune=False)
    if cfg.backend == "torch":
        probe_cfg = replace(probe_cfg, validate_every=1000)
    shutil.rmtree(probe, ignore_errors=True)
    if cfg.backend == "nnunet":  # nnU-Net trains in a child process: its checkpoint has the epoch times
        train(plugin, data, probe, probe_cfg)
        model = next((probe / "nnunet" / "results").glob("*/*"))
        logged = read_nnunet_checkpoint(model / "fold_0" / "checkpoint_final.pth")["logging"]
        ends, starts = logged["epoch_end_timestamps"], logged["epoch_start_timestamps"]
        epoch = (float(ends[2]) - float(starts[1])) / 2
        setup = (probe / "nnunet" / "plan.log").stat().st_mtime - started
        shutil.rmtree(probe, ignore_errors=True)
        return epoch, setup
    train(plugin, data, probe, probe_cfg, callbacks=[lambda *_: stamps.append(time.perf_counter())])
    shutil.rmtree(probe, ignore_errors=True)
    return (stamps[2] - stamps[0]) / 2, 0.0


def _compare(args: argparse.Namespace, name: str, data: Path) -> dict[str, Any]:
    task, scale = DATASETS[name]
    plugin = get_task(task)
    rows = {}
    for system, cfg in _configs(args, scale).items():
        epoch, setup = _epoch_seconds(plugin, data, cfg, args.out / name / f"probe-{system}")
        epochs = max(1, int(args.minutes * 60 / args.folds / epoch))
        run = args.out / name / system
        shutil.rmtree(run, ignore_errors=True)
        started = time.perf_counter()
        train(plugin, data, run, replace(cfg, epochs=epochs))
        seconds = time.perf_counter() - started
        leaderboard, per_image = held_out_scores(plugin, run, data)
        rows[system] = {
            "leaderboard": leaderboard,
            "epochs": epochs,
            "epoch_seconds": round(epoch, 2),
            "train_seconds": round(seconds, 1),
            "nnunet_setup_seconds": round(setup, 1) if setup else None,
            "seconds_per_image": round(per_image, 2),
        }
    return {"task": task, "working_scale": scale, "folds": args.folds, "systems": rows}


def _print(results: dict[str, Any]) -> None:
    for name, result in results.items():
        print(f"\n{name} ({result['task']}, {result['folds']}-fold CV, scale {result['working_scale']})")
        print(f"{'system':8} {'epochs':>6} {'s/epoch':>8} {'train s':>8} {'s/image':>8}  leaderboard")
        for system, row in result["systems"].items():
            board = format_leaderboard(row["leaderboard"])
            print(
                f"{system:8} {row['epochs']:6d} {row['epoch_seconds']:8.2f} {row['train_seconds']:8.1f} "
                f"{row['seconds_per_image']:8.2f}  {board}"
            )


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    torch.manual_seed(0)
    results = {}
    for name in args.datasets:
        if name == "drive":
            if not (args.drive / "training").is_dir():
                print(f"skipping DRIVE: no {args.drive / 'training'} (--drive ROOT)", file=sys.stderr)
                continue
            data = args.drive
        else:
            data = args.out / "goals-data"
            shutil.rmtree(data, ignore_errors=True)
            write_sample_data(get_task("goals-layers"), data, args.goals_cases, 3, seed=0)
        results[name] = _compare(args, name, data)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps({"minutes": args.minutes, "results": results}, indent=1) + "\n")
    _print(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
