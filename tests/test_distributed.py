"""Training on several processes (torchrun, DistributedDataParallel) with gloo on the CPU."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from distributed_worker import network, one_step, step_on_shard
from eyegc.common.bundle import load_bundle, read_config
from eyegc.common.cli import main
from eyegc.common.inference import Predictor
from eyegc.common.losses import build_loss
from eyegc.common.plugin import TaskKind
from eyegc.common.registry import get_task

PLUGIN = get_task("drac22-task1")
TINY = ["--folds", "2", "--patch-size", "64", "--working-scale", "0.125", "--patches-per-image", "2"]
TINY += ["--network-kwargs", '{"channels": [4, 8], "strides": [2], "num_res_units": 0}', "--device", "cpu"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _batch(tmp_path: Path) -> tuple[torch.Tensor, torch.Tensor, Path]:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(4, 1, 32, 32, generator=generator)
    # Lesions are common in the first half of the batch and rare in the second: the batch Dice of
    # each half is far from the whole batch's.
    density = torch.tensor([0.5, 0.5, 0.02, 0.02]).view(4, 1, 1, 1)
    labels = (torch.rand(4, 3, 32, 32, generator=generator) < density).float()
    path = tmp_path / "batch.pt"
    torch.save((images, labels), path)
    return images, labels, path


def _two_processes(tmp_path: Path, batch_file: Path, gather: bool) -> dict[str, torch.Tensor]:
    out = tmp_path / f"weights-{gather}.pt"
    init = tmp_path / f"init-{gather}"
    mp.spawn(step_on_shard, args=(2, str(init), str(batch_file), str(out), gather), nprocs=2, join=True)
    return torch.load(out, weights_only=True)


def test_two_processes_take_the_same_step_as_one_with_the_whole_batch(tmp_path: Path) -> None:
    """Same global batch and seed: the weights after one step (SGD, learning rate 1: the gradient)
    agree within 1e-6 (float32 sums in another order); without the global-batch loss the batch Dice
    of each half differs from the whole batch's, and so do the weights."""
    images, labels, batch_file = _batch(tmp_path)
    single = network()
    one_step(single, single, build_loss("dice_bce", TaskKind.MULTILABEL_SEGMENTATION), (images, labels, None))
    reference = single.state_dict()
    start = network().state_dict()
    moved = max(float((reference[k] - start[k]).abs().max()) for k in reference)
    assert moved > 1e-3  # the step changed the weights: the comparison below means something

    distributed = _two_processes(tmp_path, batch_file, gather=True)
    worst = max(float((distributed[k] - reference[k]).abs().max()) for k in reference)
    assert worst <= 1e-6, worst
    per_shard = _two_processes(tmp_path, batch_file, gather=False)
    assert max(float((per_shard[k] - reference[k]).abs().max()) for k in reference) > 1e-4


def _train_args(data: Path, run: Path, epochs: int, port: int) -> list[str]:
    args = ["train", PLUGIN.name, "--data", str(data), "--out", str(run), "--epochs", str(epochs), *TINY]
    return [*args, "--batch-size", "4", "--nproc-per-node", "2", "--master-port", str(port)]


def test_two_processes_train_a_bundle_that_predicts_like_one_process(
    drac22_data: Path, drac22_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    assert main(_train_args(drac22_data, run, 2, _free_port())) == 0
    # torchrun's own signal handlers are gone again: Ctrl-C is a KeyboardInterrupt for the caller.
    assert {number: signal.getsignal(number) for number in handlers} == handlers
    out = capsys.readouterr().out
    assert out.count(f"model bundle: {run}") == 1  # the launching command prints the summary, once
    # Checksums verified and each fold's weights loaded strictly into the network bundle.json describes,
    # as for a one-process bundle: a plain state dict, no DistributedDataParallel "module." prefix.
    bundle = load_bundle(run, task=PLUGIN.name)
    assert [f.fold for f in bundle.folds] == [0, 1]
    weights = torch.load(run / "fold_0" / "model.pt", weights_only=True)
    assert weights and not any(key.startswith("module.") for key in weights)
    config = read_config(run)
    assert config.training.batch_size == 4 and all(r.epochs_done == 2 for r in config.folds.values())
    image = np.random.default_rng(0).integers(0, 256, (1, 1024, 1024), dtype=np.uint8)
    masks, probabilities = Predictor(PLUGIN, [bundle], "none", "cpu").predict(image)
    assert masks.shape == probabilities.shape == (3, 1024, 1024)
    assert json.loads((run / "splits.json").read_text()) == json.loads((drac22_run / "splits.json").read_text())


def test_a_batch_that_does_not_split_over_the_processes_is_one_line(
    drac22_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _train_args(drac22_data, tmp_path / "run", 1, _free_port())
    args[args.index("--batch-size") + 1] = "5"
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "eyegc: error: a batch of 5 patches does not split evenly over 2 processes; "
        "use a --batch-size that is a multiple of 2"
    ]
    assert not (tmp_path / "run").exists()


def test_the_paddle_backend_refuses_several_processes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("paddle")
    args = ["train", "goals-glaucoma", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run")]
    args += ["--backend", "paddle"]
    assert main([*args, "--nproc-per-node", "2"]) == 2
    assert "the paddle backend trains in one process: drop --nproc-per-node" in capsys.readouterr().err


def _rank_processes(run: Path, rank: int) -> list[int]:
    """Processes training ``run`` as ``rank`` (torchrun sets RANK in their environment)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(run).encode() in command and f"RANK={rank}".encode() in environment and b"-m" in command:
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through /proc")
def test_a_killed_rank_stops_the_others_and_resume_continues(drac22_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    command = [sys.executable, "-m", "eyegc.common.cli", *_train_args(drac22_data, run, 4, _free_port())]
    environment = {**os.environ, "TQDM_DISABLE": "1"}
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    checkpoint = run / "fold_0" / "checkpoint.pt"
    deadline = time.monotonic() + 240
    while not checkpoint.is_file() and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    victims = _rank_processes(run, 1)
    assert checkpoint.is_file() and victims, "no checkpoint or no rank-1 process to kill"
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    _, err = launcher.communicate(timeout=240)
    assert launcher.returncode == 2
    last = err.strip().splitlines()[-1]
    assert last == (
        "eyegc: error: training stopped: rank 1 failed (signal SIGKILL) and torchrun stopped the others; "
        f"continue with: eyegc train {PLUGIN.name} --data {drac22_data} --out {run} --resume"
    )
    assert not _rank_processes(run, 0) and not _rank_processes(run, 1)  # the launcher stopped rank 0 too
    assert main([*_train_args(drac22_data, run, 4, _free_port()), "--resume"]) == 0
    config = read_config(run)
    assert [r.epochs_done for r in config.folds.values()] == [4, 4]
    load_bundle(run, task=PLUGIN.name)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--nnodes", "2", "--node-rank", "2", "--master-addr", "10.0.0.1"], "--node-rank 2 must be below --nnodes 2"),
        (["--nnodes", "2"], "with --nnodes above 1, give --master-addr"),
    ],
)
def test_launch_options_torchrun_would_hang_on_are_one_line(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", PLUGIN.name, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_a_launch_inside_torchrun_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    args = ["train", PLUGIN.name, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run")]
    assert main([*args, "--nproc-per-node", "2"]) == 2
    assert "already runs under torchrun: drop --nproc-per-node" in capsys.readouterr().err


def test_each_process_gets_the_command_without_the_launch_options_however_spelt() -> None:
    from eyegc.common.cli import _without_launch_options

    argv = ["train", "t", "--nproc", "2", "--nnodes=1", "--master-port", "29500", "--epochs", "3", "--node-r=0"]
    assert _without_launch_options([*argv, "--master-addr", "h"]) == ["train", "t", "--epochs", "3"]
