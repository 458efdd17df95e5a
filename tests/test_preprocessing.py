"""Image preprocessing: CLAHE, field-of-view masking and how a training run records them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from eyegc.common.errors import EyegcError
from eyegc.common.preprocessing import apply_clahe, estimate_fov, prepare_image
from eyegc.common.registry import get_task
from eyegc.common.training import TrainConfig
from eyegc.common.training import resolve_config as _resolve


def _fundus(size: int = 96) -> np.ndarray:
    """A reddish disc on black with a faint darker band (a low-contrast 'vessel')."""
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.4 * size) ** 2
    image = np.zeros((3, size, size), np.uint8)
    image[0][disc], image[1][disc], image[2][disc] = 180, 90, 40
    image[1][disc & (np.abs(xx - size / 2) < 2)] = 80
    return image


def test_clahe_stretches_a_low_contrast_channel_and_keeps_range() -> None:
    rng = np.random.default_rng(0)
    grey = 0.45 + 0.05 * rng.random((1, 64, 64))  # values only in [0.45, 0.5]
    out = apply_clahe(grey, clip_limit=0.02)
    assert out.shape == (1, 64, 64) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.std() > 3 * grey.std()
    # the ranking of neighbouring pixels inside a tile is kept (equalisation is monotonic per tile)
    assert np.corrcoef(out.ravel(), grey.ravel())[0, 1] > 0.8


def test_clahe_in_lab_keeps_a_grey_image_grey() -> None:
    rng = np.random.default_rng(1)
    level = 0.3 + 0.2 * rng.random((1, 48, 48))
    out = apply_clahe(np.repeat(level, 3, axis=0), space="lab")
    assert out.shape == (3, 48, 48)
    assert np.abs(out[0] - out[1]).max() < 1e-3 and np.abs(out[1] - out[2]).max() < 1e-3
    assert out.std() > level.std()


def test_clahe_in_lab_refuses_a_single_channel() -> None:
    with pytest.raises(EyegcError, match="RGB"):
        apply_clahe(np.zeros((1, 8, 8)), space="lab")
    with pytest.raises(Exception, match="hsv"):  # the helpful error names the choices
        apply_clahe(np.zeros((1, 8, 8)), space="hsv")


def test_prepare_image_with_clahe_differs_and_is_standardised() -> None:
    image = _fundus()
    plain = prepare_image(image, {"normalize": "zscore"})
    clahe = prepare_image(image, {"normalize": "zscore", "clahe": {"clip_limit": 0.01, "space": "channels"}})
    assert clahe.shape == plain.shape == (3, 96, 96)
    assert not torch.allclose(plain, clahe)
    assert torch.allclose(clahe.mean(dim=(1, 2)), torch.zeros(3), atol=1e-5)


def test_fov_mask_zeroes_the_border_and_standardises_inside() -> None:
    image = _fundus()
    fov = estimate_fov(image)
    prepared = prepare_image(image, {"normalize": "zscore", "fov_mask": True})
    assert torch.equal(prepared[:, ~torch.from_numpy(fov)], torch.zeros_like(prepared[:, ~torch.from_numpy(fov)]))
    inside = prepared[:, torch.from_numpy(fov)]
    # the red and blue channels are constant inside the disc: mean 0, and the green one is standardised
    assert torch.allclose(inside.mean(dim=1), torch.zeros(3), atol=1e-5)
    assert inside[1].std().item() == pytest.approx(1.0, abs=1e-4)


def test_fov_mask_needs_rgb() -> None:
    with pytest.raises(EyegcError, match="RGB"):
        prepare_image(np.zeros((1, 16, 16), np.uint8), {"fov_mask": True})


def test_training_config_records_preprocessing_choices() -> None:
    idrid = get_task("idrid-lesions")
    config = _resolve(idrid, TrainConfig(clahe="lab", clahe_clip=0.02, fov_mask=True))
    assert config.preprocessing.clahe == {"space": "lab", "clip_limit": 0.02}
    assert config.preprocessing.fov_mask is True
    assert _resolve(idrid, TrainConfig()).preprocessing.clahe is None  # off unless chosen
    drive = get_task("drive-vessels")  # green channel only
    assert _resolve(drive, TrainConfig(clahe="none")).preprocessing.clahe is None
    with pytest.raises(EyegcError, match="RGB"):
        _resolve(drive, TrainConfig(clahe="lab"))
    with pytest.raises(EyegcError, match="RGB"):
        _resolve(drive, TrainConfig(fov_mask=True))
    with pytest.raises(EyegcError, match="clahe-clip"):
        _resolve(drive, TrainConfig(clahe_clip=5.0))


def test_a_run_trained_with_clahe_predicts_with_it(tmp_path: Path) -> None:
    from eyegc.common.bundle import load_bundle
    from eyegc.common.inference import Predictor
    from eyegc.common.training import train

    plugin = get_task("idrid-lesions")
    data = tmp_path / "data"
    plugin.make_sample_data(data, cases=4, test_cases=1, seed=0)
    run = tmp_path / "run"
    cfg = TrainConfig(
        folds=2,
        fold="0",
        epochs=1,
        patch_size=64,
        working_scale=0.125,
        patches_per_image=1,
        batch_size=2,
        network_kwargs={"channels": [4, 8], "strides": [2], "num_res_units": 0},
        clahe="lab",
        fov_mask=True,
        device="cpu",
        tune=False,
    )
    train(plugin, data, run, cfg)
    bundle = load_bundle(run)
    assert bundle.config.preprocessing.clahe["space"] == "lab"
    case = plugin.list_cases(data, "test")[0]
    image = plugin.read_image(case.image)
    probabilities = Predictor(plugin, [bundle], tta="none", device="cpu").probabilities(image)
    assert probabilities.shape == (4, *image.shape[1:])
    # the same weights without the recorded preprocessing give other outputs: the bundle carries it
    bundle.config.preprocessing.clahe = None
    plain = Predictor(plugin, [bundle], tta="none", device="cpu").probabilities(image)
    assert not np.allclose(plain, probabilities)
