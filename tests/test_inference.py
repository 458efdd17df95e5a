"""Test-time augmentation and ensembling: equivariance, one batched pass, mean of members."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from eyegc.common.bundle import Bundle, FoldModel
from eyegc.common.bundle_config import BundleConfig, Postprocessing, Preprocessing
from eyegc.common.errors import EyegcError
from eyegc.common.inference import TTA_OPS, Predictor, predict_with_tta, tta_ops_for
from eyegc.common.plugin import DIHEDRAL_OPS, TaskKind
from eyegc.common.registry import get_task
from torch import nn

PLUGIN = get_task("drac22-task1")


class PointwiseNet(nn.Module):
    """A 1x1 convolution: equivariant to every flip and rotation. Records its input batch sizes."""

    def __init__(self, weight: float = 1.0, bias: float = 0.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, kernel_size=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([weight, -weight, 2 * weight]).view(3, 1, 1, 1))
            self.conv.bias.fill_(bias)
        self.batch_sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(x.shape[0])
        return self.conv(x)


class LeftBiasedNet(PointwiseNet):
    """Not flip-equivariant: adds a ramp along the width."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(-2, 2, x.shape[-1]).view(1, 1, 1, -1)
        return super().forward(x) + ramp


def _bundle(*networks: nn.Module, scale: float = 1.0, patch: int = 0) -> Bundle:
    # Only what the Predictor reads (model_construct skips the other required keys).
    config = BundleConfig.model_construct(
        task=PLUGIN.name,
        classes=[c.key for c in PLUGIN.classes],
        in_channels=PLUGIN.in_channels,
        preprocessing=Preprocessing(working_scale=scale, normalize="unit"),
        patch_size=patch,
        postprocessing=Postprocessing(),
    )
    return Bundle(path=Path("memory"), config=config, folds=[FoldModel(i, n) for i, n in enumerate(networks)])


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(1, 64, 64), dtype=np.uint8)


@pytest.mark.parametrize("op", DIHEDRAL_OPS)
def test_every_op_is_undone_by_its_inverse(op: str) -> None:
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    forward, inverse, swaps = TTA_OPS[op]
    y = forward(x)
    assert y.shape[-2:] == ((5, 4) if swaps else (4, 5))
    assert torch.equal(inverse(y), x)


def test_dihedral_ops_are_eight_distinct_symmetries() -> None:
    x = torch.arange(16.0).view(4, 4)
    images = {op: TTA_OPS[op][0](x) for op in DIHEDRAL_OPS}
    assert len({tuple(v.flatten().tolist()) for v in images.values()}) == 8


@pytest.mark.parametrize("mode", ["flip", "dihedral"])
def test_tta_leaves_an_equivariant_network_unchanged(image: np.ndarray, mode: str) -> None:
    plain = Predictor(PLUGIN, [_bundle(PointwiseNet())], tta="none").probabilities(image)
    augmented = Predictor(PLUGIN, [_bundle(PointwiseNet())], tta=mode).probabilities(image)
    np.testing.assert_allclose(augmented, plain, atol=1e-6)


def test_tta_changes_a_non_equivariant_network(image: np.ndarray) -> None:
    plain = Predictor(PLUGIN, [_bundle(LeftBiasedNet())], tta="none").probabilities(image)
    augmented = Predictor(PLUGIN, [_bundle(LeftBiasedNet())], tta="flip").probabilities(image)
    assert np.abs(augmented - plain).max() > 0.05


@pytest.mark.parametrize(("mode", "copies"), [("none", 1), ("flip", 3), ("dihedral", 8)])
def test_tta_copies_run_as_one_batched_forward_pass(image: np.ndarray, mode: str, copies: int) -> None:
    net = PointwiseNet()
    Predictor(PLUGIN, [_bundle(net)], tta=mode).probabilities(image)
    assert net.batch_sizes == [copies]


def test_sliding_window_keeps_tta_copies_in_each_window_batch() -> None:
    net = PointwiseNet()
    tensor = torch.rand(1, 64, 64)
    out = predict_with_tta(net, tensor, tta_ops_for(PLUGIN, "flip"), 32, TaskKind.MULTILABEL_SEGMENTATION, 4)
    assert out.shape == (3, 64, 64)
    assert all(size % 3 == 0 for size in net.batch_sizes)


def test_non_square_rotations_are_restored(image: np.ndarray) -> None:
    wide = np.random.default_rng(1).integers(0, 256, size=(1, 48, 80), dtype=np.uint8)
    net = PointwiseNet()
    plain = Predictor(PLUGIN, [_bundle(PointwiseNet())], tta="none").probabilities(wide)
    augmented = Predictor(PLUGIN, [_bundle(net)], tta="dihedral").probabilities(wide)
    np.testing.assert_allclose(augmented, plain, atol=1e-6)
    assert net.batch_sizes == [4, 4]  # shape-keeping and shape-swapping copies


def test_ensemble_is_the_mean_of_its_members(image: np.ndarray) -> None:
    members = [PointwiseNet(0.5, 0.1), PointwiseNet(2.0, -0.3), PointwiseNet(-1.0, 0.2)]
    singles = [Predictor(PLUGIN, [_bundle(m)], tta="flip").probabilities(image) for m in members]
    # two bundles: folds of one, and a second bundle at another working resolution
    two_folds = _bundle(members[0], members[1])
    other = _bundle(members[2])
    ensemble = Predictor(PLUGIN, [two_folds, other], tta="flip")
    assert ensemble.members == 3
    np.testing.assert_allclose(ensemble.probabilities(image), np.mean(singles, axis=0), atol=1e-6)


def test_unknown_or_disallowed_tta_mode_is_a_clear_error() -> None:
    with pytest.raises(EyegcError, match="choose one of: none, flip, dihedral"):
        Predictor(PLUGIN, [_bundle(PointwiseNet())], tta="rotate")
    with pytest.raises(EyegcError, match="TTA mode"):
        tta_ops_for({"none": ("identity",), "flip": ("identity", "flip_lr")}, "dihedral")


def test_predictor_refuses_a_bundle_trained_on_other_input_channels() -> None:
    bundle = _bundle(PointwiseNet())
    bundle.config.in_channels = 3  # as a colour-input plugin built in Python would record
    with pytest.raises(EyegcError, match="trained on 3-channel input; drac22-task1 as configured reads 1"):
        Predictor(PLUGIN, [bundle])
    bundle.config.in_channels = 1
    assert Predictor(PLUGIN, [bundle]).bundles == [bundle]
