"""The seeds' methods: CBCE and RMI losses, super-resolution-aided networks, dense CRF, smp networks.

The losses are checked against direct NumPy computations of their formulas on hand-made tensors;
the CRF and smp against hand-made cases; every option through train, predict and evaluate.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from eyegc.common.bundle import read_config, save_signed_config
from eyegc.common.bundle_config import CrfSettings, config_from_json
from eyegc.common.cli import main
from eyegc.common.errors import EyegcError
from eyegc.common.losses import (
    ClassBalancedCrossEntropy,
    RegionMutualInformation,
    WithRegionMutualInformation,
    balanced_weights,
    build_loss,
    class_frequencies,
)
from eyegc.common.networks import build_network, load_pretrained, network_arguments
from eyegc.common.plugin import TaskKind
from eyegc.common.registry import get_task
from eyegc.common.sample_data import write_sample_data
from eyegc.common.super_resolution import AuxiliaryOutput, feature_affinity, feature_affinity_loss

MULTILABEL, MULTICLASS = TaskKind.MULTILABEL_SEGMENTATION, TaskKind.MULTICLASS_SEGMENTATION


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# ------------------------------------------------------------------ CBCE


def test_cbce_multilabel_equals_the_formula() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 2, 3, 4))
    # binary pixels and the coverage fractions a downscaled label holds (the formula, not weighted BCE)
    target = np.where(rng.random((2, 2, 3, 4)) < 0.5, (rng.random((2, 2, 3, 4)) < 0.3), rng.random((2, 2, 3, 4)))
    f = np.array([0.1, 0.3])
    w_pos, w_neg = (0.5 / f)[None, :, None, None], (0.5 / (1 - f))[None, :, None, None]
    p = _sigmoid(logits)
    expected = np.mean(-(w_pos * target * np.log(p) + w_neg * (1 - target) * np.log(1 - p)))
    loss = ClassBalancedCrossEntropy(f.tolist(), MULTILABEL)(torch.tensor(logits), torch.tensor(target))
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_cbce_softmax_equals_the_formula() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 3, 3, 4))
    target = rng.integers(0, 3, size=(2, 1, 3, 4))
    f = np.array([0.7, 0.2, 0.1])
    weights = 1 / (3 * f)
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    picked = np.take_along_axis(log_softmax, target, axis=1)[:, 0]
    expected = np.mean(-weights[target[:, 0]] * picked)
    loss = ClassBalancedCrossEntropy(f.tolist(), MULTICLASS)(torch.tensor(logits), torch.tensor(target).float())
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_balanced_weights_keep_an_expected_weight_of_one_and_stay_finite() -> None:
    positive, negative = balanced_weights([0.02, 0.5, 0.0], MULTILABEL)
    f = torch.tensor([0.02, 0.5, 1e-6])
    assert torch.allclose(f * positive + (1 - f) * negative, torch.ones(3))
    assert positive[1] == negative[1] == 1.0 and torch.isfinite(positive).all()
    per_class, none = balanced_weights([0.5, 0.25, 0.25], MULTICLASS)
    assert none is None and per_class.tolist() == pytest.approx([2 / 3, 4 / 3, 4 / 3])


def test_class_frequencies_count_inside_the_field_of_view() -> None:
    labels = [torch.tensor([[[1.0, 0.0], [0.5, 1.0]], [[0.0, 0.0], [0.0, 1.0]]])]
    roi = [torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])]  # the last pixel is outside
    assert class_frequencies(labels, MULTILABEL, 2, roi) == pytest.approx([1.5 / 3, 0.0])
    assert class_frequencies(labels, MULTILABEL, 2) == pytest.approx([2.5 / 4, 1 / 4])
    indices = [torch.tensor([[[0.0, 2.0], [2.0, 2.0]]]), torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])]
    assert class_frequencies(indices, MULTICLASS, 3) == pytest.approx([4 / 8, 1 / 8, 3 / 8])


def test_cbce_refuses_class_weights() -> None:
    with pytest.raises(EyegcError, match="drop --class-weights"):
        build_loss("cbce", MULTILABEL, [1.0], frequencies=[0.1])


# ------------------------------------------------------------------ RMI


def _avg_pool(maps: np.ndarray, k: int) -> np.ndarray:
    b, c, h, w = maps.shape
    h, w = h // k * k, w // k * k
    return maps[:, :, :h, :w].reshape(b, c, h // k, k, w // k, k).mean(axis=(3, 5))


def _rmi_numpy(probabilities: np.ndarray, labels: np.ndarray, pool: int = 3) -> float:
    """The RMI paper's lower bound, written out: 9-vectors, centred covariances, posterior variance, log det."""
    probabilities = probabilities + 1e-6
    if pool > 1 and min(labels.shape[-2:]) >= pool * 3:
        probabilities, labels = _avg_pool(probabilities, pool), _avg_pool(labels, pool)
    values = []
    h, w = labels.shape[-2] - 2, labels.shape[-1] - 2
    for b in range(labels.shape[0]):
        for c in range(labels.shape[1]):
            y = np.stack([labels[b, c, dy : dy + h, dx : dx + w].ravel() for dy in range(3) for dx in range(3)])
            p = np.stack([probabilities[b, c, dy : dy + h, dx : dx + w].ravel() for dy in range(3) for dx in range(3)])
            y, p = y - y.mean(axis=1, keepdims=True), p - p.mean(axis=1, keepdims=True)
            cov_y, cov_p, cov_yp = y @ y.T, p @ p.T, y @ p.T
            posterior = cov_y - cov_yp @ np.linalg.inv(cov_p + 5e-4 * np.eye(9)) @ cov_yp.T
            values.append(0.5 * np.linalg.slogdet(posterior + 5e-4 * np.eye(9))[1] / 9)
    # averaged over images, summed over classes (the authors' _IS_SUM = 1)
    return float(np.asarray(values).reshape(labels.shape[:2]).mean(axis=0).sum())


@pytest.mark.parametrize("shape", [(2, 2, 12, 15), (1, 3, 7, 8)])  # pooled (12x15 -> 4x5), and too small to pool
def test_rmi_multilabel_equals_the_formula(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(size=shape)
    labels = (rng.random(shape) < 0.4).astype(np.float64)
    expected = _rmi_numpy(_sigmoid(logits), labels)
    value = RegionMutualInformation(MULTILABEL)(torch.tensor(logits), torch.tensor(labels))
    assert float(value) == pytest.approx(expected, rel=1e-5)


def test_rmi_softmax_uses_one_hot_labels() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 3, 9, 10))
    indices = rng.integers(0, 3, size=(2, 1, 9, 10))
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    one_hot = np.eye(3)[indices[:, 0]].transpose(0, 3, 1, 2)
    expected = _rmi_numpy(softmax, one_hot)
    value = RegionMutualInformation(MULTICLASS)(torch.tensor(logits), torch.tensor(indices).float())
    assert float(value) == pytest.approx(expected, rel=1e-5)


def test_rmi_is_lower_for_a_right_prediction_and_its_gradients_are_finite() -> None:
    yy, xx = np.mgrid[0:30, 0:30]
    labels = torch.tensor(((xx - 15) ** 2 + (yy - 15) ** 2 < 64).astype(np.float32))[None, None]
    rmi = RegionMutualInformation(MULTILABEL)
    right = rmi(10 * (2 * labels - 1), labels)
    random = rmi(torch.randn_like(labels), labels)
    assert float(right) < float(random)
    for target in (labels, torch.zeros_like(labels)):  # an empty label (a black border) too
        logits = torch.randn_like(labels, requires_grad=True)
        (0.5 * rmi(logits, target)).backward()
        assert torch.isfinite(logits.grad).all()


def test_rmi_weight_adds_to_the_base_loss() -> None:
    rng = np.random.default_rng(4)
    logits, labels = torch.tensor(rng.normal(size=(2, 1, 12, 12))), torch.tensor(rng.random((2, 1, 12, 12)) < 0.5)
    combined = build_loss("dice_bce", MULTILABEL, rmi_weight=0.5)
    assert isinstance(combined, WithRegionMutualInformation)
    base = build_loss("dice_bce", MULTILABEL)
    expected = base(logits, labels.double()) + 0.5 * RegionMutualInformation(MULTILABEL)(logits, labels.double())
    assert float(combined(logits, labels.double())) == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(EyegcError, match="segmentation"):
        build_loss("ce", TaskKind.CLASSIFICATION, head_sizes=[2], rmi_weight=0.5)


# ------------------------------------------------------------------ super-resolution-aided networks

SR = {"factor": 2, "features": 8, "sr_weight": 0.1, "fa_weight": 1.0, "fa_stride": 4}
TINY = {"channels": [8, 16], "strides": [2], "num_res_units": 0}


def test_feature_affinity_loss_by_hand() -> None:
    # four pixels (channels at each): (1,0), (0,1), (1,1), (-1,0); against four equal pixels (affinity all 1)
    a = torch.tensor([[1.0, 0.0, 1.0, -1.0], [0.0, 1.0, 1.0, 0.0]]).view(1, 2, 2, 2)
    b = torch.tensor([[1.0] * 4, [0.0] * 4]).view(1, 2, 2, 2)
    r = 1 / np.sqrt(2)
    expected_affinity = [[1, 0, r, -1], [0, 1, r, 0], [r, r, 1, -r], [-1, 0, -r, 1]]
    assert np.allclose(feature_affinity(a, 1)[0].numpy(), expected_affinity, atol=1e-6)
    assert float(feature_affinity_loss(a, b, 1)) == pytest.approx((14 - np.sqrt(2)) / 16, abs=1e-6)
    grid = torch.arange(16.0).view(1, 1, 4, 4) + 1
    assert feature_affinity(grid, 2).shape == (1, 4, 4)  # pixels (0,0), (0,2), (2,0), (2,2)


def test_feature_affinity_is_built_on_at_most_1024_pixels() -> None:
    from eyegc.common.super_resolution import MAX_AFFINITY_PIXELS, affinity_stride

    assert affinity_stride(256, 256, 8) == 8  # 32 x 32 = 1024: DSRL's stride
    assert affinity_stride(768, 768, 8) == 24  # 32 x 32 again, not 96 x 96
    for h, w in ((2848, 4288), (97, 1000), (7, 7)):
        stride = affinity_stride(h, w, 8)
        assert -(-h // stride) * -(-w // stride) <= MAX_AFFINITY_PIXELS
    features = torch.randn(1, 4, 512, 512)
    assert float(feature_affinity_loss(features, features, 8)) == 0.0


def test_sr_network_drops_its_branch_at_inference() -> None:
    net = build_network("UNet", 3, 2, TINY, SR)
    calls = []
    net.reconstruction_branch.register_forward_hook(lambda *_: calls.append(1))
    x = torch.randn(2, 3, 32, 32)
    out = net.eval()(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 2, 32, 32) and not calls
    captured = {}
    net.reconstruction_head.register_forward_hook(lambda m, i, o: captured.update(reconstruction=o))
    net.segmentation_branch.register_forward_hook(lambda m, i, o: captured.update(segmentation=o))
    net.reconstruction_branch.register_forward_hook(lambda m, i, o: captured.update(sr_features=o))
    trained = net.train()(x)
    assert isinstance(trained, AuxiliaryOutput) and trained.logits.shape == (2, 2, 32, 32) and calls
    expected = 0.1 * F.mse_loss(captured["reconstruction"], x) + feature_affinity_loss(
        captured["segmentation"], captured["sr_features"], 4
    )
    assert float(trained.loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    # the core runs at half the input's resolution
    sizes = []
    net.core.register_forward_hook(lambda m, i, o: sizes.append(tuple(i[0].shape[-2:])))
    net.eval()(x)
    assert sizes == [(16, 16)]


def test_pretrained_core_weights_load_into_an_sr_network(tmp_path: Path) -> None:
    plain = build_network("UNet", 1, 8, TINY)
    torch.save(plain.net.state_dict(), tmp_path / "core.pt")
    sr = build_network("UNet", 1, 1, TINY, SR)
    missing, skipped = load_pretrained(sr, tmp_path / "core.pt")
    for name, tensor in plain.net.state_dict().items():
        assert torch.equal(sr.core.net.state_dict()[name], tensor)
    assert not skipped and any(m.startswith("segmentation_head") for m in missing)


def test_an_eyegc_model_file_is_a_pretrained_state_dict(tmp_path: Path) -> None:
    source = build_network("UNet", 1, 1, TINY)
    torch.save(source.state_dict(), tmp_path / "model.pt")  # what a bundle's fold_k/model.pt holds ("net.")
    target = build_network("UNet", 1, 1, TINY)
    missing, skipped = load_pretrained(target, tmp_path / "model.pt")
    assert missing == [] and skipped == []
    for name, tensor in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], tensor)
    with pytest.raises(EyegcError, match="not a state dict"):
        torch.save(torch.zeros(3), tmp_path / "tensor.pt")
        load_pretrained(target, tmp_path / "tensor.pt")


# ------------------------------------------------------------------ smp networks

SMP_SMALL = {"encoder_name": "resnet18", "encoder_depth": 3, "decoder_channels": [16, 8, 4]}


@pytest.fixture(scope="module")
def smp() -> object:
    """segmentation_models_pytorch; CI installs it (scripts/setup-venv.sh), so there a missing one fails."""
    from eyegc.common.smp_networks import import_smp

    if not os.environ.get("CI") and importlib.util.find_spec("segmentation_models_pytorch") is None:
        pytest.skip("segmentation_models_pytorch is not installed")
    return import_smp()


def test_smp_network_builds_without_downloading(smp: object) -> None:
    net = build_network("smp:UnetPlusPlus", 3, 2, SMP_SMALL).eval()
    assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 2, 32, 32)
    accepted = network_arguments("smp:UnetPlusPlus")
    assert "encoder_name" in accepted and not {"in_channels", "classes", "activation", "aux_params"} & set(accepted)
    with pytest.raises(EyegcError, match="never downloads encoder weights"):
        build_network("smp:Unet", 3, 2, {**SMP_SMALL, "encoder_weights": "imagenet"})
    with pytest.raises(EyegcError, match=r"takes no argument 'encoder'.*encoder_name"):
        build_network("smp:Unet", 3, 2, {"encoder": "resnet18"})
    with pytest.raises(EyegcError, match="smp:Unet"):
        build_network("smp:Unett", 3, 2)
    import torchvision  # importable beside the CPU torch now: smp builds its ResNet encoders from it

    assert torchvision.models.resnet18(num_classes=3).eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_smp_encoder_weights_load_from_the_encoders_own_file(smp: object, tmp_path: Path) -> None:
    source = build_network("smp:Unet", 3, 1, SMP_SMALL)
    torch.save(source.net.encoder.state_dict(), tmp_path / "encoder.pt")
    target = build_network("smp:Unet", 3, 1, SMP_SMALL)
    missing, skipped = load_pretrained(target, tmp_path / "encoder.pt")
    assert not skipped and all(not m.startswith("encoder.") for m in missing)
    for name, tensor in source.net.encoder.state_dict().items():
        assert torch.equal(target.net.encoder.state_dict()[name], tensor)
    assert not torch.equal(source.net.segmentation_head[0].weight, target.net.segmentation_head[0].weight)


def test_missing_smp_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from eyegc.common import smp_networks

    monkeypatch.setitem(sys.modules, "segmentation_models_pytorch", None)
    monkeypatch.delitem(sys.modules, "segmentation_models_pytorch")
    monkeypatch.setattr(smp_networks.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EyegcError, match=r"pip install .*eyegc\[smp\]"):
        build_network("smp:Unet", 3, 1)


# ------------------------------------------------------------------ dense CRF


@pytest.fixture(scope="module")
def densecrf() -> object:
    from eyegc.common.crf import import_densecrf

    if not os.environ.get("CI") and importlib.util.find_spec("pydensecrf") is None:
        pytest.skip("pydensecrf2 is not installed")
    return import_densecrf()


def test_crf_without_pairwise_terms_returns_the_probability(densecrf: object) -> None:
    from eyegc.common.crf import crf_image, refine

    rng = np.random.default_rng(5)
    p = rng.random((12, 17)).astype(np.float32)
    image = crf_image(rng.integers(0, 255, (3, 12, 17)))
    off = CrfSettings(gaussian_compat=0, bilateral_compat=0)
    assert np.allclose(refine(p, image, off), np.clip(p, 1e-5, 1 - 1e-5), atol=1e-5)


def test_crf_fills_a_hole_and_removes_a_speck_on_a_flat_image(densecrf: object) -> None:
    from eyegc.common.crf import crf_image, refine

    image = crf_image(np.full((1, 20, 20), 100))
    hole = np.full((20, 20), 0.8, dtype=np.float32)
    hole[10, 10] = 0.3
    speck = np.full((20, 20), 0.1, dtype=np.float32)
    speck[5, 5] = 0.7
    assert refine(hole, image, CrfSettings())[10, 10] > 0.5
    assert refine(speck, image, CrfSettings())[5, 5] < 0.5
    half = refine(hole, image, CrfSettings(scale=0.5))
    assert half.shape == (20, 20) and half.dtype == np.float32


def test_crf_image_stretches_each_channel_to_8_bits() -> None:
    from eyegc.common.crf import crf_image

    grey = np.array([[[1000, 3000], [5000, 1000]]], dtype=np.uint16)
    rgb = crf_image(grey)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    assert rgb[..., 0].tolist() == [[0, 128], [255, 0]] and (rgb[..., 0] == rgb[..., 2]).all()


def _square_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bright square on a dark image, its mask, and probabilities with holes and specks at 0.4/0.6."""
    image = np.full((3, 40, 40), 30, dtype=np.uint8)
    image[:, 10:30, 10:30] = 220
    target = np.zeros((1, 40, 40), dtype=np.uint8)
    target[0, 10:30, 10:30] = 1
    p = np.where(target[0] > 0, 0.85, 0.15).astype(np.float32)
    flips = rng.random((40, 40)) < 0.08
    p[flips] = np.where(target[0][flips] > 0, 0.4, 0.6)
    return image, target, p[None]


def test_tune_crf_keeps_a_crf_only_where_it_raises_the_score(densecrf: object) -> None:
    from eyegc.common.tuning import tune_crf, tune_postprocessing

    plugin = get_task("drive-vessels")
    rng = np.random.default_rng(6)
    images, targets, probabilities = zip(*[_square_case(rng) for _ in range(3)], strict=True)
    rois = [None] * 3
    chosen = tune_postprocessing(plugin, probabilities, targets)
    tuned = tune_crf(plugin, probabilities, targets, images, rois, chosen)
    assert "vessel" in tuned["crf"] and tuned["class_scores"]["vessel"] > chosen["class_scores"]["vessel"]
    assert tuned["class_scores"]["vessel"] == pytest.approx(1.0, abs=0.02)
    exact = [t.astype(np.float32) for t in targets]  # already perfect: nothing to gain
    perfect = tune_postprocessing(plugin, exact, targets)
    assert tune_crf(plugin, exact, targets, images, rois, perfect)["crf"] == {}
    with pytest.raises(EyegcError, match="multi-label"):
        tune_crf(get_task("goals-layers"), probabilities, targets, images, rois, chosen)


# ------------------------------------------------------------------ through train, predict, evaluate


@pytest.fixture(scope="module")
def drive_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample_data(get_task("drive-vessels"), tmp_path_factory.mktemp("drive") / "data", 4, 2, seed=3)


TRAIN = ["--folds", "2", "--epochs", "1", "--batch-size", "4", "--patches-per-image", "2", "--patch-size", "64"]


def test_every_option_through_train_predict_evaluate(
    smp: object, densecrf: object, drive_data: Path, tmp_path: Path
) -> None:
    run, pred = tmp_path / "run", tmp_path / "pred"
    options = [
        *("--model", "smp:Unet", "--network-kwargs", json.dumps(SMP_SMALL)),
        *("--super-resolution", "2", "--sr-weights", "0.2,0.5", "--loss", "cbce", "--rmi-weight", "0.5", "--crf"),
    ]
    assert main(["train", "drive-vessels", "--data", str(drive_data), "--out", str(run), *TRAIN, *options]) == 0
    config = read_config(run)
    assert config.format == "eyegc-bundle/3" and config.network.name == "smp:Unet"
    assert config.network.super_resolution.sr_weight == 0.2 and config.network.super_resolution.fa_weight == 0.5
    assert config.training.loss == "cbce" and config.training.rmi_weight == 0.5 and config.training.crf
    assert config.postprocessing.tuned
    images = drive_data / "test" / "images"
    assert main(["predict", "drive-vessels", "--model", str(run), "--images", str(images), "--out", str(pred)]) == 0
    assert len(list(pred.glob("*.png"))) == 2
    assert main(["evaluate", "drive-vessels", "--pred", str(pred), "--gt", str(drive_data)]) == 0


def test_predictor_applies_the_bundles_crf(densecrf: object, drive_data: Path, tmp_path: Path) -> None:
    from conftest import tiny_train_config
    from eyegc.common.bundle import load_bundle
    from eyegc.common.crf import refine_classes
    from eyegc.common.inference import Predictor
    from eyegc.common.training import train

    plugin = get_task("drive-vessels")
    run = train(plugin, drive_data, tmp_path / "run", tiny_train_config(epochs=1, tune=False))
    config = read_config(run)
    settings = CrfSettings(bilateral_sxy=20, bilateral_srgb=10, bilateral_compat=3)
    config.postprocessing.crf = {"vessel": settings}
    save_signed_config(run, config)
    predictor = Predictor(plugin, [load_bundle(run)], tta="none")
    image = plugin.read_image(sorted((drive_data / "test" / "images").iterdir())[0])
    masks, probabilities = predictor.predict(image)
    network = predictor.probabilities(image)
    refined = refine_classes(network, image, ["vessel"], {"vessel": settings})
    # the CRF decides the masks; the probabilities (written, ranked by AUC) stay the network's
    assert np.array_equal(probabilities, network) and not np.array_equal(refined, network)
    assert np.array_equal(masks[0], (refined[0] >= 0.5).astype(np.uint8))


@pytest.mark.parametrize(
    ("task", "options", "message"),
    [
        ("goals-layers", ["--crf"], "--crf refines per-class probabilities"),
        ("drive-vessels", ["--crf", "--no-tune"], "drop --no-tune"),
        ("drive-vessels", ["--sr-weights", "1,1"], "add --super-resolution 2"),
        ("drive-vessels", ["--super-resolution", "5"], "--super-resolution: must be a whole number from 2 to 4"),
        ("idrid-grading", ["--super-resolution", "2"], "segmentation tasks"),
        ("drive-vessels", ["--rmi-weight", "-1"], "--rmi-weight: must be a number >= 0"),
        ("drive-vessels", ["--loss", "cbce", "--class-weights", "1"], "drop --class-weights"),
        ("drive-vessels", ["--backend", "nnunet", "--rmi-weight", "1"], "--rmi-weight is nnU-Net's own choice"),
        (
            "drive-vessels",
            ["--super-resolution", "2", "--patch-size", "66"],
            "divisible by 2 (--super-resolution) times",
        ),
    ],
)
def test_bad_settings_are_one_line(
    task: str, options: list[str], message: str, drive_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    try:
        code = main(["train", task, "--data", str(drive_data), "--out", str(run), "--folds", "2", *options])
    except SystemExit as exit_:  # argparse refuses a value out of its range itself
        code = exit_.code
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").strip().splitlines()[-1]  # after the progress bars
    assert code == 2 and message in last and "Traceback" not in err
    assert not run.exists()


def test_format_2_bundles_read_as_format_3_without_the_new_settings() -> None:
    data = json.loads((Path(__file__).parent / "fixtures" / "bundle-format-1-drac22" / "bundle.json").read_text())
    from eyegc.common.bundle_config import BundleConfig

    upgraded = config_from_json(data, "fixture").model_dump(mode="json")
    upgraded["format"] = "eyegc-bundle/2"
    new_keys = [("network", "super_resolution"), ("training", "rmi_weight"), ("training", "crf")]
    new_keys.append(("postprocessing", "crf"))
    for section, key in new_keys:
        del upgraded[section][key]
    config = config_from_json(upgraded, "format 2")
    assert isinstance(config, BundleConfig) and config.format == "eyegc-bundle/3"
    assert (
        config.network.super_resolution is None and config.training.rmi_weight == 0 and config.postprocessing.crf == {}
    )


def test_the_image_gets_the_extras_its_bundles_need() -> None:
    from eyegc.common.deploy.build import bundle_extras

    data = json.loads((Path(__file__).parent / "fixtures" / "bundle-format-1-drac22" / "bundle.json").read_text())
    plain = config_from_json(data, "fixture")
    assert bundle_extras([plain]) == {}
    smp_crf = plain.model_copy(deep=True)
    smp_crf.network.name = "smp:UnetPlusPlus"
    smp_crf.postprocessing.crf = {plain.classes[0]: CrfSettings()}
    paddle = plain.model_copy(update={"backend": "paddle"})
    assert bundle_extras([plain, smp_crf, paddle]) == {
        "the network smp:UnetPlusPlus": "smp",
        "dense CRF post-processing": "crf",
        "the paddle backend": "paddle",
    }
