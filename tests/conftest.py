"""Shared fixtures: small synthetic data sets and tiny trained bundles, made once per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from eyegc.common.registry import get_task
from eyegc.common.sample_data import write_sample_data
from eyegc.common.training import TrainConfig, train

#: A network small enough to train in seconds on two CPU cores.
TINY_UNET = {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1}


def tiny_train_config(**overrides: object) -> TrainConfig:
    """Training settings for tests: 2 folds, 2 epochs, quarter resolution, tiny network."""
    settings: dict[str, object] = {
        "network_kwargs": TINY_UNET,
        "folds": 2,
        "epochs": 2,
        "batch_size": 4,
        "patch_size": 64,
        "working_scale": 0.125,
        "patches_per_image": 2,
        "device": "cpu",
    }
    settings.update(overrides)
    return TrainConfig(**settings)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def drac22_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six training and three testing DRAC22 cases in the official layout."""
    root = tmp_path_factory.mktemp("drac22") / "data"
    return write_sample_data(get_task("drac22-task1"), root, cases=6, test_cases=3, seed=1)


@pytest.fixture(scope="session")
def drac22_run(tmp_path_factory: pytest.TempPathFactory, drac22_data: Path) -> Path:
    """A tiny finished, tuned DRAC22 bundle."""
    run = tmp_path_factory.mktemp("drac22_run") / "run"
    return train(get_task("drac22-task1"), drac22_data, run, tiny_train_config())


class FixedPredictor:
    """A stand-in for :class:`~eyegc.common.inference.Predictor` that returns the same prediction for any image."""

    def __init__(self, masks: np.ndarray, probabilities: np.ndarray) -> None:
        self.masks, self.probs = masks, probabilities
        self.device = torch.device("cpu")

    def predict(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.masks, self.probs
