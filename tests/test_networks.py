"""Every registered network builds in 2D, returns one logits tensor, and loads user weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from eyegc.common.errors import EyegcError
from eyegc.common.losses import build_loss
from eyegc.common.networks import CLASSIFIERS, NETWORKS, build_network, load_pretrained
from eyegc.common.plugin import TaskKind
from eyegc.common.smp_networks import SMP_ARCHITECTURES, SMP_PREFIX

SMALL = {
    "UNet": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1},
    "BasicUNetPlusPlus": {"features": [4, 4, 8, 16, 32, 4]},
    "AttentionUnet": {"channels": [4, 8, 16], "strides": [2, 2]},
    "FlexibleUNet": {"backbone": "resnet10"},
    "ResNet": {"depth": 10, "block_inplanes": [4, 8, 16, 32]},
    "DenseNet121": {"init_features": 8, "growth_rate": 4},
    # segmentation_models_pytorch (the smp extra): each architecture with a ResNet-18 encoder
    **{f"{SMP_PREFIX}{name}": {"encoder_name": "resnet18"} for name in SMP_ARCHITECTURES},
}
#: PAN's pyramid pools its deepest features down to 1/64 of the input: 64 px leave nothing.
LARGER_INPUT = {"smp:PAN": (128, 192)}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_network_returns_logits_of_input_size(name: str) -> None:
    if name.startswith(SMP_PREFIX) and importlib.util.find_spec("segmentation_models_pytorch") is None:
        pytest.skip("segmentation_models_pytorch is not installed (the smp extra)")
    net = build_network(name, 1, 3, SMALL[name]).eval()
    size = LARGER_INPUT.get(name, (64, 96))
    with torch.no_grad():
        out = net(torch.rand(2, 1, *size))
    expected = (2, 3) if name in CLASSIFIERS else (2, 3, *size)
    assert isinstance(out, torch.Tensor) and out.shape == expected


def test_resnet_depth_is_checked() -> None:
    with pytest.raises(EyegcError, match="depth 11"):
        build_network("ResNet", 3, 2, {"depth": 11})


def test_multi_head_cross_entropy_scores_each_head_on_its_slice() -> None:
    fn = build_loss("ce", TaskKind.CLASSIFICATION, head_sizes=[5, 3])
    target = torch.tensor([[4, 0], [1, 2]])
    logits = torch.full((2, 8), -6.0)
    logits[0, 4] = logits[0, 5 + 0] = 6.0
    logits[1, 1] = logits[1, 5 + 2] = 6.0
    assert float(fn(logits, target)) < 1e-3
    # the DME head wrong on one image: half of one head's mean loss, averaged over two heads
    wrong = logits.clone()
    wrong[1, 5 + 2], wrong[1, 5 + 0] = -6.0, 6.0
    expected = torch.nn.functional.cross_entropy(wrong[:, 5:], target[:, 1]) / 2
    torch.testing.assert_close(fn(wrong, target), expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(EyegcError, match="ce"):
        build_loss("dice_bce", TaskKind.CLASSIFICATION, head_sizes=[2])


def test_unknown_network_lists_the_choices() -> None:
    with pytest.raises(EyegcError, match="BasicUNetPlusPlus"):
        build_network("Unet", 1, 3)


def test_flexible_unet_never_downloads() -> None:
    with pytest.raises(EyegcError, match="--pretrained PATH"):
        build_network("FlexibleUNet", 1, 3, {"pretrained": True})


def test_pretrained_state_dict_is_loaded_from_a_path(tmp_path: Path) -> None:
    source = build_network("UNet", 1, 3, SMALL["UNet"])
    torch.save(source.net.state_dict(), tmp_path / "weights.pt")
    target = build_network("UNet", 1, 3, SMALL["UNet"])
    missing, skipped = load_pretrained(target, tmp_path / "weights.pt")
    assert missing == [] and skipped == []
    x = torch.rand(1, 1, 32, 32)
    torch.testing.assert_close(target.eval()(x), source.eval()(x))
    # a head with another number of classes: the mismatched tensors are skipped, not fatal
    other = build_network("UNet", 1, 2, SMALL["UNet"])
    missing, skipped = load_pretrained(other, tmp_path / "weights.pt")
    assert skipped and set(skipped) == set(missing)
    with pytest.raises(EyegcError, match="not found"):
        load_pretrained(other, tmp_path / "absent.pt")


@pytest.mark.parametrize("loss", ["dice_bce", "dice_focal", "bce"])
def test_losses_accept_class_weights_and_decrease_for_better_logits(loss: str) -> None:
    fn = build_loss(loss, TaskKind.MULTILABEL_SEGMENTATION, [1.0, 2.0, 0.5])
    target = (torch.rand(2, 3, 16, 16) > 0.7).float()
    good = fn(target * 8 - 4, target)
    bad = fn(4 - target * 8, target)
    assert float(good) < float(bad)


def test_multilabel_dice_bce_treats_channels_independently() -> None:
    # Two overlapping classes both present: confident logits for both must give a low loss.
    # (A softmax cross-entropy across channels, as MONAI's DiceCELoss uses, cannot do that.)
    fn = build_loss("dice_bce", TaskKind.MULTILABEL_SEGMENTATION)
    target = torch.ones(1, 2, 8, 8)
    assert float(fn(torch.full((1, 2, 8, 8), 8.0), target)) < 0.01
