"""Batched augmentation on the training device: labels move with the image, masks stay masks."""

from __future__ import annotations

import pytest
import torch
from eyegc.common.augmentation import (
    AugmentationSpec,
    BatchAugmentation,
    check_augmentation,
    elastic_deformation,
    intensity_changes,
)
from eyegc.common.errors import EyegcError
from eyegc.common.plugin import DIHEDRAL_OPS

EVERYTHING = AugmentationSpec(ops=frozenset(DIHEDRAL_OPS), square=True, elastic_probability=0.5)


def _blocks(n: int, size: int = 64) -> torch.Tensor:
    """``(n, 1, size, size)`` class indices 0..3 in 16-pixel blocks, another layout per sample."""
    generator = torch.Generator().manual_seed(3)
    coarse = torch.randint(0, 4, (n, 1, size // 16, size // 16), generator=generator)
    return coarse.repeat_interleave(16, dim=2).repeat_interleave(16, dim=3)


def test_class_indices_and_the_field_of_view_are_moved_with_the_image_and_stay_whole() -> None:
    torch.manual_seed(0)
    labels = _blocks(16)
    images = labels.float()  # the image shows the labels: after the same warp they must still agree
    roi = (labels > 0).to(torch.uint8)
    augment = BatchAugmentation(EVERYTHING, categorical=True)
    out_images, out_labels = augment.geometric(
        images, torch.cat([labels.float(), roi.float()], dim=1), data_keys=["input", "mask"]
    )
    assert set(out_labels[:, 0].unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}  # nearest: no class between two
    assert torch.equal(out_labels[:, 1] > 0, out_labels[:, 0] > 0)  # the field of view moved with the labels
    agree = (out_images[:, 0].round() == out_labels[:, 0]).float().mean()
    assert agree > 0.97  # bilinear image and nearest labels differ only along block edges
    moved = (out_labels[:, :1] != labels.float()).float().mean()
    assert moved > 0.2  # something happened


def test_the_whole_call_keeps_dtypes_shapes_and_values() -> None:
    torch.manual_seed(1)
    labels = _blocks(8)
    images = torch.randn(8, 2, 64, 64)
    roi = torch.ones(8, 1, 64, 64, dtype=torch.uint8)
    out = BatchAugmentation(EVERYTHING, categorical=True)(images, labels, roi)
    assert out[0].shape == images.shape and out[0].dtype == torch.float32
    assert out[1].shape == labels.shape and out[1].dtype == labels.dtype
    assert set(out[1].unique().tolist()) <= {0, 1, 2, 3}
    assert out[2].dtype == torch.uint8 and set(out[2].unique().tolist()) <= {0, 1}


def test_soft_multilabel_targets_are_resampled_like_the_image() -> None:
    torch.manual_seed(2)
    soft = torch.rand(6, 3, 64, 64)
    images = soft[:, :1].clone()
    spec = AugmentationSpec(ops=frozenset({"flip_lr", "flip_ud", "rot90"}), square=True, elastic_probability=0.0)
    augment = BatchAugmentation(spec)
    smooth = augment.geometric(torch.cat([images, soft], dim=1), data_keys=["input"])
    assert torch.allclose(smooth[:, 0], smooth[:, 1])  # one warp for image and target channels
    _, out, _ = augment(images, soft, None)
    assert out.shape == soft.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_the_same_seed_gives_the_same_batch_and_each_sample_its_own_draw() -> None:
    labels = _blocks(32)
    augment = BatchAugmentation(EVERYTHING, categorical=True)
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(augment(labels.float(), labels, None))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])  # exact resume
    untouched = [(runs[0][1][i] == labels[i]).all().item() for i in range(len(labels))]
    assert 0 < sum(untouched) < len(labels)  # some samples drew no change, others did


def test_classification_moves_only_the_image() -> None:
    torch.manual_seed(4)
    grades = torch.tensor([[0, 2], [1, 1]])
    spec = AugmentationSpec(ops=frozenset({"flip_lr"}), square=False, elastic_probability=0.0, classification=True)
    images, out, roi = BatchAugmentation(spec)(torch.randn(2, 3, 32, 48), grades, None)
    assert images.shape == (2, 3, 32, 48) and torch.equal(out, grades) and roi is None


def test_intensity_changes_keep_z_scored_values_finite_and_scale_only_some_samples() -> None:
    torch.manual_seed(5)
    images = torch.randn(64, 1, 16, 16)  # z-scored: negative values are normal
    out = intensity_changes(images)
    assert torch.isfinite(out).all()
    changed = [(not torch.equal(out[i], images[i])) for i in range(64)]
    assert 10 < sum(changed) < 64  # each change has its own probability per sample


def test_an_unknown_augmentation_names_the_choices() -> None:
    assert check_augmentation("batched") == "batched"
    with pytest.raises(EyegcError, match="per-sample"):
        check_augmentation("gpu")


def test_elastic_deformation_moves_pixels_one_to_two_pixels_and_keeps_masks_binary() -> None:
    torch.manual_seed(6)
    ys, xs = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    coordinates = torch.stack([xs, ys])[None].repeat(4, 1, 1, 1)
    mask = (torch.rand(4, 1, 128, 128) > 0.5).float()
    moved, moved_mask = elastic_deformation([coordinates, mask], ["bilinear", "nearest"])
    shift = (moved - coordinates)[:, :, 8:-8, 8:-8].abs().mean()  # away from the zero-padded border
    assert 0.5 < float(shift) < 3.0
    assert set(moved_mask.unique().tolist()) <= {0.0, 1.0}
