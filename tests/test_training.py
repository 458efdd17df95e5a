"""Training: deterministic splits, exact resume after an interruption, self-checking bundles."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_train_config
from eyegc.common.bundle import CHECKSUMS_NAME, load_bundle, read_config
from eyegc.common.errors import BundleError, EyegcError
from eyegc.common.registry import get_task
from eyegc.common.training import make_splits, train

PLUGIN = get_task("drac22-task1")


class StopAfter:
    """An epoch callback that interrupts training like Ctrl-C after ``epoch`` epochs of ``fold``."""

    def __init__(self, fold: int, epoch: int) -> None:
        self.fold, self.epoch = fold, epoch

    def __call__(self, fold: int, epoch: int, history: dict) -> None:
        if (fold, epoch) == (self.fold, self.epoch):
            raise KeyboardInterrupt


def test_splits_are_deterministic_disjoint_and_cover_every_case() -> None:
    ids = ["086", "1299", "402", "5", "77", "900", "13"]
    splits = make_splits(ids, 3, seed=0)
    assert splits == make_splits(list(reversed(ids)), 3, seed=0)
    assert sorted(c for s in splits for c in s["val"]) == sorted(ids)
    for s in splits:
        assert not set(s["train"]) & set(s["val"])
    with pytest.raises(EyegcError, match="cannot be split into 9 folds"):
        make_splits(ids, 9, seed=0)


def test_interrupted_training_resumes_exactly(drac22_data: Path, tmp_path: Path) -> None:
    cfg = tiny_train_config(epochs=3, tune=False)
    reference = train(PLUGIN, drac22_data, tmp_path / "reference", cfg)

    run = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        train(PLUGIN, drac22_data, run, cfg, callbacks=[StopAfter(fold=1, epoch=2)])
    assert json.loads((run / "fold_1" / "history.json").read_text())["loss"].__len__() == 2
    with pytest.raises(EyegcError, match="--resume"):
        train(PLUGIN, drac22_data, run, cfg)
    train(PLUGIN, drac22_data, run, cfg, resume=True)

    for fold in (0, 1):
        done = read_config(run).folds[fold]
        assert done.epochs_done == 3 == read_config(reference).folds[fold].epochs_done
        a = torch.load(reference / f"fold_{fold}" / "checkpoint.pt", weights_only=True)
        b = torch.load(run / f"fold_{fold}" / "checkpoint.pt", weights_only=True)
        assert a["history"] == b["history"]
        for key, tensor in a["network"].items():
            torch.testing.assert_close(b["network"][key], tensor, rtol=0, atol=0)
    bundle = load_bundle(run, task=PLUGIN.name)
    assert [f.fold for f in bundle.folds] == [0, 1]


def test_bundle_records_what_rebuilds_the_model(drac22_run: Path) -> None:
    config = read_config(drac22_run)
    assert config.task == "drac22-task1"
    assert config.network.name == "UNet"
    assert config.preprocessing.model_dump() == {
        "working_scale": 0.125,
        "normalize": "zscore",
        "clahe": None,
        "fov_mask": False,
        "input_size": None,
    }
    assert set(config.postprocessing.thresholds) == {"irma", "npa", "nv"}
    assert config.data_fingerprint.files > 6 and len(config.data_fingerprint.sha256) == 64
    assert (
        config.cross_validation.tuned_postprocessing["leaderboard"]["mean_dsc"]
        >= (config.cross_validation.default_postprocessing["leaderboard"]["mean_dsc"])
    )
    listed = (drac22_run / CHECKSUMS_NAME).read_text()
    for name in ("bundle.json", "splits.json", "fold_0/model.pt", "fold_1/model.pt"):
        assert f"  {name}\n" in listed
    assert (drac22_run / "fold_0" / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "delete", "edit_config"])
def test_tampered_bundle_is_refused(drac22_run: Path, tmp_path: Path, damage: str) -> None:
    run = tmp_path / "copy"
    shutil.copytree(drac22_run, run)
    weights = run / "fold_1" / "model.pt"
    if damage == "flip_byte":
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "delete":
        weights.unlink()
    else:
        config = json.loads((run / "bundle.json").read_text())
        config["postprocessing"]["thresholds"]["nv"] = 0.01
        (run / "bundle.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match=r"(changed or truncated|missing)"):
        load_bundle(run)


def test_bundle_for_another_task_is_refused(drac22_run: Path) -> None:
    with pytest.raises(BundleError, match="trained for 'drac22-task1'"):
        load_bundle(drac22_run, task="goals-layers")


def test_bundle_weights_load_with_weights_only(drac22_run: Path) -> None:
    state = torch.load(drac22_run / "fold_0" / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    bundle = load_bundle(drac22_run)
    x = torch.zeros(1, 1, 64, 64)
    assert bundle.folds[0].network(x).shape == (1, 3, 64, 64)
    assert np.isfinite(bundle.folds[0].network(x).detach().numpy()).all()


@pytest.mark.parametrize("edit", ["drop_config_line", "drop_fold_line", "malformed_line"])
def test_checksum_list_must_cover_the_bundle(drac22_run: Path, tmp_path: Path, edit: str) -> None:
    run = tmp_path / "copy"
    shutil.copytree(drac22_run, run)
    listing = run / CHECKSUMS_NAME
    lines = listing.read_text().splitlines()
    if edit == "drop_config_line":
        lines = [line for line in lines if not line.endswith("  bundle.json")]
    elif edit == "drop_fold_line":
        lines = [line for line in lines if not line.endswith("fold_1/model.pt")]
    else:
        lines[0] = lines[0].replace("  ", " *", 1)
    listing.write_text("\n".join(lines) + "\n")
    with pytest.raises(BundleError, match=r"(does not cover|lists weights|is not '<sha256>)"):
        load_bundle(run)


def test_tune_refuses_to_re_sign_changed_weights(drac22_run: Path, tmp_path: Path) -> None:
    from eyegc.common.tuning import tune

    run = tmp_path / "copy"
    shutil.copytree(drac22_run, run)
    weights = run / "fold_0" / "model.pt"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(BundleError, match="changed or truncated"):
        tune(PLUGIN, run)
    with pytest.raises(BundleError):
        load_bundle(run)


def test_failed_new_run_leaves_nothing_and_bad_patch_size_is_explained(drac22_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(EyegcError, match="divisible"):
        train(PLUGIN, drac22_data, run, tiny_train_config(patch_size=50))
    assert not run.exists()


def test_resume_on_other_data_is_refused(drac22_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = tiny_train_config(epochs=1, tune=False)
    with pytest.raises(KeyboardInterrupt):
        train(PLUGIN, drac22_data, run, cfg, callbacks=[StopAfter(fold=0, epoch=1)])
    other = tmp_path / "other"
    shutil.copytree(drac22_data, other)
    image = next((other / "A. Segmentation" / "1. Original Images" / "a. Training Set").glob("*.png"))
    from eyegc.common.imageio import write_png

    write_png(image, np.zeros((1024, 1024), dtype=np.uint8))
    with pytest.raises(EyegcError, match="differs from the data this run was trained on"):
        train(PLUGIN, other, run, cfg, resume=True)


def test_class_index_maps_are_resampled_nearest_and_never_get_new_classes() -> None:
    from eyegc.common.preprocessing import prepare_target
    from eyegc.common.torch_backend import _augmentation

    index_map = np.zeros((1, 64, 64), dtype=np.uint8)
    index_map[0, :, 20:40] = 3
    index_map[0, :, 40:] = 1
    small = prepare_target(index_map, {"working_scale": 0.37}, categorical=True)
    assert set(torch.unique(small).tolist()) <= {0.0, 1.0, 3.0}
    soft = prepare_target((index_map > 0).astype(np.uint8), {"working_scale": 0.37})
    assert ((soft > 0) & (soft < 1)).any()  # area interpolation keeps covered fractions

    transforms = _augmentation(32, {"flip_lr"}, 4, crop_classes=4, categorical=True)
    transforms.set_random_state(seed=0)
    item = {
        "image": torch.rand(1, 64, 64),
        "label": torch.from_numpy(index_map).float(),
        "crop_label": torch.from_numpy(index_map),
    }
    for _ in range(20):
        for patch in transforms(dict(item)):
            assert set(torch.unique(patch["label"]).tolist()) <= {0.0, 1.0, 3.0}


def test_whole_image_training_with_patch_size_zero(drac22_data: Path, tmp_path: Path) -> None:
    run = train(PLUGIN, drac22_data, tmp_path / "run", tiny_train_config(patch_size=0, epochs=1, batch_size=2))
    bundle = load_bundle(run)
    assert bundle.config.patch_size == 0 and len(bundle.folds) == 2
    from eyegc.common.inference import Predictor

    image = PLUGIN.read_image(PLUGIN.list_cases(drac22_data, "test")[0].image)
    masks, probs = Predictor(PLUGIN, [bundle], tta="dihedral").predict(image)
    assert masks.shape == probs.shape == (3, 1024, 1024)
    assert float(probs.min()) >= 0.0 and float(probs.max()) <= 1.0


def test_bce_loss_is_cross_entropy_alone_and_only_for_sigmoid_tasks() -> None:
    from eyegc.common.losses import build_loss
    from eyegc.common.plugin import TaskKind

    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    loss = build_loss("bce", TaskKind.MULTILABEL_SEGMENTATION)(logits, target)
    # mean of -log(sigmoid(2)), -log(1 - sigmoid(-1)), -log(1 - sigmoid(0.5)), -log(sigmoid(-3))
    expected = np.mean([np.log1p(np.exp(-2.0)), np.log1p(np.exp(-1.0)), np.log1p(np.exp(0.5)), np.log1p(np.exp(3.0))])
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    with_dice = build_loss("dice_bce", TaskKind.MULTILABEL_SEGMENTATION)(logits, target)
    assert with_dice.item() > loss.item()
    with pytest.raises(EyegcError, match="multi-label"):
        build_loss("bce", TaskKind.MULTICLASS_SEGMENTATION)


def test_elastic_deformation_can_be_switched_off() -> None:
    from eyegc.common.torch_backend import _augmentation
    from monai.transforms import Rand2DElasticd

    def names(probability: float) -> list[str]:
        transforms = _augmentation(32, {"flip_lr"}, 2, 2, elastic_probability=probability).transforms
        return [type(t).__name__ for t in transforms]

    assert Rand2DElasticd.__name__ in names(0.15)
    assert Rand2DElasticd.__name__ not in names(0.0)
    drive = get_task("drive-vessels")
    assert drive.defaults.elastic_probability == 0.0


def test_validate_every_skips_epochs_but_always_validates_the_last(drac22_data: Path, tmp_path: Path) -> None:
    run = train(
        get_task("drac22-task1"),
        drac22_data,
        tmp_path / "run",
        tiny_train_config(epochs=3, fold="0", validate_every=2, tune=False),
    )
    history = json.loads((run / "fold_0" / "history.json").read_text())
    assert np.isnan(history["metric"][0])
    assert np.isfinite(history["metric"][1]) and np.isfinite(history["metric"][2])
    assert history["epoch"] in (1, 2, 3)  # epoch 1 is kept until a validated epoch scores
    config = read_config(run)
    assert config.training.validate_every == 2
    if history["epoch"] != 1:
        assert history["score"] == max(history["metric"][1:])


def test_folds_trained_in_parallel_equal_folds_trained_one_after_another(drac22_data: Path, tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers get one thread each; same arithmetic as the reference
    try:
        cfg = tiny_train_config(epochs=2, tune=False)
        reference = train(PLUGIN, drac22_data, tmp_path / "sequential", cfg)
        cfg.jobs = 2
        run = train(PLUGIN, drac22_data, tmp_path / "parallel", cfg)
    finally:
        torch.set_num_threads(threads)
    for fold in (0, 1):
        info = read_config(run).folds[fold]
        assert info.epochs_done == 2 and info.seconds > 0
        a = torch.load(reference / f"fold_{fold}" / "model.pt", weights_only=True)
        b = torch.load(run / f"fold_{fold}" / "model.pt", weights_only=True)
        for key, tensor in a.items():
            torch.testing.assert_close(b[key], tensor, rtol=0, atol=0)
    assert [f.fold for f in load_bundle(run, task=PLUGIN.name).folds] == [0, 1]


def test_parallel_folds_refuse_callbacks_and_bad_job_counts(drac22_data: Path, tmp_path: Path) -> None:
    with pytest.raises(EyegcError, match="jobs=1"):
        train(PLUGIN, drac22_data, tmp_path / "a", tiny_train_config(jobs=2), callbacks=[StopAfter(0, 1)])
    assert not (tmp_path / "a").exists()
    with pytest.raises(EyegcError, match="at least 1"):
        train(PLUGIN, drac22_data, tmp_path / "b", tiny_train_config(jobs=0))


class MetricThatFails:
    """Stands in for a task's metric and fails, as a bug would inside a worker process."""

    primary = "mean_dsc"

    def __call__(self, *args: object, **kwargs: object) -> None:
        raise EyegcError("metric failed in the worker")


def test_a_failing_parallel_fold_stops_the_run_and_a_new_run_leaves_nothing(drac22_data: Path, tmp_path: Path) -> None:
    plugin = dataclasses.replace(PLUGIN, metric=MetricThatFails())
    with pytest.raises(EyegcError, match="metric failed in the worker"):
        train(plugin, drac22_data, tmp_path / "run", tiny_train_config(jobs=2, tune=False))
    assert not (tmp_path / "run").exists()


def test_resume_with_other_input_channels_is_refused(drac22_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = tiny_train_config(epochs=1, tune=False)
    with pytest.raises(KeyboardInterrupt):
        train(PLUGIN, drac22_data, run, cfg, callbacks=[StopAfter(fold=0, epoch=1)])
    config = json.loads((run / "bundle.json").read_text())
    config["in_channels"] = 3  # as a colour-input plugin built in Python records it
    (run / "bundle.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="trained on 3-channel input; drac22-task1 as configured reads 1"):
        train(PLUGIN, drac22_data, run, cfg, resume=True)


def test_a_new_run_into_a_folder_that_is_not_empty_is_refused_and_the_folder_kept(
    drac22_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("mine")
    with pytest.raises(EyegcError, match="already exists and is not empty; pass --resume"):
        train(PLUGIN, drac22_data, out, tiny_train_config(epochs=1))
    assert (out / "chapter1.tex").read_text() == "mine"
