"""Benchmark: how close does a training step come to pure forward + backward? (DRIVE and DRAC22 settings)

Usage::

    .venv/bin/python benchmarks/train_throughput.py                 # both tasks, the device torch picks
    .venv/bin/python benchmarks/train_throughput.py --steps 10 --device cuda

For each task (its default network, patch size, batch and patches per image; DRIVE's real
training images when ``../shared/data/DRIVE`` exists, else sample data; DRAC22 sample data) and
each augmentation pipeline (``per-sample``: every transform per patch on the CPU, eyegc's pipeline
before batched augmentation; ``batched``: the CPU cuts patches, the rest runs on whole batches on
the device), it times ``--steps`` training steps as training runs them (patches, augmentation,
transfer, forward, backward, optimiser) and the same batches again from memory (forward,
backward, optimiser only: the floor). It prints steps per second and the ratio step / floor
(1.00 = augmentation costs nothing). Goal: ratio <= 1.25 on a CPU, <= 1.10 on a GPU.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from eyegc.common.demo import write_sample_data
from eyegc.common.inference import resolve_device
from eyegc.common.options import AUGMENTATIONS
from eyegc.common.registry import get_task
from eyegc.common.torch_backend import FoldSteps, train_step
from eyegc.common.training import TrainConfig, load_training_data, resolve_config

DRIVE_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "DRIVE"
#: (task, training cases used): enough images for a few steps' patches.
TASKS = (("drive-vessels", 8), ("drac22-task1", 6))


def _data(task: str, cases: int, scratch: Path) -> Path:
    if task.startswith("drive") and (DRIVE_DATA / "training").is_dir():
        return DRIVE_DATA
    if (scratch / task).is_dir():  # written for the other pipeline
        return scratch / task
    return write_sample_data(get_task(task), scratch / task, cases=cases, test_cases=0, seed=0)


def _stream(steps: FoldSteps) -> Iterator[tuple]:
    """The pipeline's batches, epoch after epoch (a few images give few batches per epoch)."""
    for epoch in itertools.count():
        steps.seed_epoch(12345 + epoch)
        yield from steps.batches(12345 + epoch)


def _time_steps(steps: FoldSteps, batches: list | None, count: int) -> tuple[float, list]:
    """Seconds for ``count`` steps: from the pipeline (``batches`` None), or from ``batches`` in memory."""
    source = iter(batches) if batches is not None else _stream(steps)
    kept = []
    started = time.perf_counter()
    for _ in range(count):
        batch = next(source)
        train_step(steps.model, steps.optimizer, steps.scaler, steps.loss_fn, batch)
        kept.append(batch)
    if steps.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started, kept


def measure(task: str, cases: int, augmentation: str, count: int, device: torch.device, scratch: Path) -> dict:
    """Steps per second and the step/floor ratio of one task and augmentation pipeline."""
    plugin = get_task(task)
    listed = plugin.list_cases(_data(task, cases, scratch), "train")[:cases]
    config = resolve_config(plugin, TrainConfig(augmentation=augmentation, device=str(device)))
    data = load_training_data(plugin, listed, config.preprocessing)
    split = {"train": [c.case_id for c in listed], "val": []}
    torch.manual_seed(0)
    steps = FoldSteps(plugin, config, data, split, device)
    steps.model.train()
    _time_steps(steps, None, 2)  # warm-up: allocations, kernels
    pipeline, batches = _time_steps(steps, None, count)
    floor, _ = _time_steps(steps, batches, count)
    return {"steps_per_second": count / pipeline, "floor_per_second": count / floor, "ratio": pipeline / floor}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="timed steps per task and pipeline (default 12)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    print(f"device {device}, {torch.get_num_threads()} CPU threads, {args.steps} steps each")
    with tempfile.TemporaryDirectory(prefix="eyegc-throughput-") as scratch:
        for task, cases in TASKS:
            for augmentation in AUGMENTATIONS[::-1]:  # per-sample (before) first, then batched
                figures = measure(task, cases, augmentation, args.steps, device, Path(scratch))
                print(
                    f"{task:<14} {augmentation:<10} {figures['steps_per_second']:6.2f} steps/s  floor "
                    f"{figures['floor_per_second']:6.2f} steps/s  ratio {figures['ratio']:.2f}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
