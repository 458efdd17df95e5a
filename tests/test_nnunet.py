"""nnU-Net v2 inside eyegc: the raw-format export (regions for overlapping classes), a tiny CPU
training through the nnunet backend, prediction through nnunetv2's own predictor, import of a
model folder, and the clear errors around them."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from eyegc.common.bundle import load_bundle, read_config, sha256_file, verify_checksums
from eyegc.common.cli import main as cli_main
from eyegc.common.deploy import submit
from eyegc.common.errors import BundleError, EyegcError
from eyegc.common.imageio import read_image_array
from eyegc.common.inference import Predictor, predict_folder
from eyegc.common.nnunet.backend import NNUNET_BACKEND, nnunet_network_spec
from eyegc.common.nnunet.dataset import (
    class_probabilities,
    decode_label_map,
    encode_label_map,
    export_dataset,
    label_scheme,
    nnunet_image,
    resize_label_map,
)
from eyegc.common.nnunet.importer import import_model
from eyegc.common.nnunet.model import MISSING_NNUNET, NNUNET_FOLD_NAME, read_nnunet_checkpoint, require_nnunet
from eyegc.common.registry import get_task
from eyegc.common.sample_data import write_sample_data
from eyegc.common.training import TrainConfig, train

LAYERS = "goals-layers"
#: nnU-Net's planner for a tiny CPU network: a small memory target, 8 to 32 features, 3 iterations an epoch.
TINY_NNUNET = {
    "gpu_memory_target": 0.05,
    "base_features": 8,
    "max_features": 32,
    "iterations_per_epoch": 3,
    "val_iterations": 1,
}


def tiny_nnunet_config(**overrides: object) -> TrainConfig:
    settings: dict[str, object] = {
        "backend": "nnunet",
        "folds": 2,
        "epochs": 1,
        "working_scale": 0.5,
        "device": "cpu",
        "network_kwargs": TINY_NNUNET,
    }
    settings.update(overrides)
    return TrainConfig(**settings)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def nnunetv2() -> object:
    """nnunetv2; CI installs it (scripts/setup-venv.sh), so there a missing one fails instead of skipping."""
    if os.environ.get("CI"):
        return require_nnunet()
    return pytest.importorskip("nnunetv2")


@pytest.fixture(scope="module")
def layers_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample_data(get_task(LAYERS), tmp_path_factory.mktemp("goals") / "data", 6, 2, seed=3)


@pytest.fixture(scope="module")
def nnunet_run(nnunetv2: object, layers_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fold 0 trained, then the run resumed for fold 1 (nnU-Net trains each in its own process)."""
    run = tmp_path_factory.mktemp("nnunet_run") / "run"
    plugin = get_task(LAYERS)
    train(plugin, layers_data, run, tiny_nnunet_config(fold="0"))
    assert sorted(read_config(run).folds) == [0]
    (run / "fold0.sha256").write_text(sha256_file(run / "fold_0" / NNUNET_FOLD_NAME))
    return train(plugin, layers_data, run, tiny_nnunet_config(), resume=True)


# ------------------------------------------------------------------ labels and export (no nnunetv2)


def test_overlapping_classes_are_regions_of_bit_coded_labels() -> None:
    scheme = label_scheme(get_task("drac22-task1"))
    assert scheme.labels == {"background": 0, "irma": [1, 3, 5, 7], "npa": [2, 3, 6, 7], "nv": [4, 5, 6, 7]}
    assert scheme.regions_class_order == [1, 2, 4]
    lesions = label_scheme(get_task("idrid-lesions"))
    assert lesions.regions_class_order == [1, 2, 4, 8]
    assert all(len(v) == 8 for k, v in lesions.labels.items() if k != "background")


def test_one_class_and_softmax_tasks_are_plain_labels() -> None:
    assert label_scheme(get_task("drive-vessels")).labels == {"background": 0, "vessel": 1}
    layers = label_scheme(get_task(LAYERS))
    assert layers.labels == {"background": 0, "rnfl": 1, "gcipl": 2, "choroid": 3}
    assert layers.regions_class_order is None
    with pytest.raises(EyegcError, match="classification task; nnU-Net segments"):
        label_scheme(get_task("goals-glaucoma"))


def test_region_encoding_round_trips_every_combination() -> None:
    plugin = get_task("drac22-task1")
    rng = np.random.default_rng(0)
    masks = (rng.random((3, 40, 50)) < 0.5).astype(np.uint8)
    label_map = encode_label_map(plugin, masks)
    assert label_map.dtype == np.uint8 and set(np.unique(label_map)) == set(range(8))
    assert label_map[0, 0] == masks[0, 0, 0] + 2 * masks[1, 0, 0] + 4 * masks[2, 0, 0]
    np.testing.assert_array_equal(decode_label_map(plugin, label_map), masks)


def test_one_class_probabilities_drop_the_background_channel() -> None:
    softmax = np.stack([np.full((2, 2), 0.3), np.full((2, 2), 0.7)]).astype(np.float32)
    np.testing.assert_array_equal(class_probabilities(get_task("drive-vessels"), softmax), softmax[1:])
    regions = np.zeros((3, 2, 2), np.float32)
    assert class_probabilities(get_task("drac22-task1"), regions) is regions


def test_drac22_export_is_nnunet_raw_format_and_round_trips(drac22_data: Path, tmp_path: Path) -> None:
    plugin = get_task("drac22-task1")
    folder = export_dataset(plugin, drac22_data, tmp_path / "raw", 501)
    assert folder == tmp_path / "raw" / "Dataset501_drac22_task1"
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta == {
        "name": "drac22-task1",
        "description": f"{plugin.title}, exported by eyegc",
        "channel_names": {"0": "grey"},
        "labels": {"background": 0, "irma": [1, 3, 5, 7], "npa": [2, 3, 6, 7], "nv": [4, 5, 6, 7]},
        "numTraining": 6,
        "file_ending": ".png",
        "overwrite_image_reader_writer": "NaturalImage2DIO",
        "eyegc": {"format": "eyegc-nnunet/1", "task": "drac22-task1", "working_scale": 1.0},
        "regions_class_order": [1, 2, 4],
    }
    cases = plugin.list_cases(drac22_data, "train")
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == sorted(f"{c.case_id}_0000.png" for c in cases)
    assert len(list((folder / "imagesTs").iterdir())) == 3
    for case in cases:
        image = read_image_array(folder / "imagesTr" / f"{case.case_id}_0000.png")
        np.testing.assert_array_equal(image, plugin.read_image(case.image))
        labels = read_image_array(folder / "labelsTr" / f"{case.case_id}.png")[0]
        np.testing.assert_array_equal(decode_label_map(plugin, labels), plugin.read_target(case))


def test_rgb_export_is_one_three_channel_file_and_the_scale_halves_both_sides(tmp_path: Path) -> None:
    plugin = get_task("drive-vessels-rgb")
    data = write_sample_data(plugin, tmp_path / "data", 3, 1, seed=0)
    folder = export_dataset(plugin, data, tmp_path / "raw", scale=0.5)
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "R", "1": "G", "2": "B"} and meta["eyegc"]["working_scale"] == 0.5
    case = plugin.list_cases(data, "train")[0]
    image = read_image_array(folder / "imagesTr" / f"{case.case_id}_0000.png")
    assert image.shape == (3, 292, 282)  # 584x565 halved, rounded as eyegc's working scale
    np.testing.assert_array_equal(image, nnunet_image(plugin.read_image(case.image), 0.5))
    assert read_image_array(folder / "labelsTr" / f"{case.case_id}.png").shape == (1, 292, 282)


def test_export_refuses_a_taken_id_an_existing_folder_and_bad_numbers(drac22_data: Path, tmp_path: Path) -> None:
    plugin = get_task("drac22-task1")
    (tmp_path / "raw" / "Dataset500_other").mkdir(parents=True)
    with pytest.raises(EyegcError, match=r"Dataset500_other already has id 500; .* pass another --id"):
        export_dataset(plugin, drac22_data, tmp_path / "raw")
    export_dataset(plugin, drac22_data, tmp_path / "raw", 502)
    with pytest.raises(EyegcError, match="already exists; choose another path or pass --overwrite"):
        export_dataset(plugin, drac22_data, tmp_path / "raw", 502)
    with pytest.raises(EyegcError, match="--id 1000 is not an nnU-Net dataset id"):
        export_dataset(plugin, drac22_data, tmp_path / "raw", 1000)
    with pytest.raises(EyegcError, match=r"--working-scale 1\.5 is not in"):
        export_dataset(plugin, drac22_data, tmp_path / "raw", 503, scale=1.5)
    with pytest.raises(EyegcError, match="--out"):
        export_dataset(plugin, drac22_data, drac22_data / "raw", 504)  # inside the data it reads


def test_nnunet_dataset_verb_prints_the_next_command(
    drac22_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "raw"
    assert cli_main(["nnunet", "dataset", "drac22-task1", "--data", str(drac22_data), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"nnU-Net raw dataset: {out / 'Dataset500_drac22_task1'}" in printed
    assert "nnUNetv2_plan_and_preprocess -d 500 -c 2d" in printed
    assert cli_main(["nnunet", "dataset", "goals-glaucoma", "--data", str(drac22_data), "--out", str(out)]) == 2
    assert "classification task; nnU-Net segments" in capsys.readouterr().err


# ------------------------------------------------------------------ with nnunetv2


def test_nnunets_own_dataset_check_accepts_the_region_export(
    nnunetv2: object, drac22_data: Path, tmp_path: Path
) -> None:
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    folder = export_dataset(get_task("drac22-task1"), drac22_data, tmp_path / "raw", 505, scale=0.25)
    verify_dataset_integrity(str(folder), num_processes=1)  # raises on any problem


def test_settings_that_nnunet_chooses_are_refused_in_one_line(nnunetv2: object) -> None:
    plugin = get_task(LAYERS)
    for field, option in (("loss", "--loss"), ("patch_size", "--patch-size"), ("learning_rate", "--learning-rate")):
        cfg = tiny_nnunet_config(**{field: "dice" if field == "loss" else 64})
        with pytest.raises(EyegcError, match=f"^{option} is nnU-Net's own choice under --backend nnunet; drop it$"):
            NNUNET_BACKEND.check_settings(plugin, cfg)
    with pytest.raises(EyegcError, match="--network-kwargs depth is not a setting of the nnunet backend"):
        nnunet_network_spec({"depth": 3})
    with pytest.raises(EyegcError, match="iterations_per_epoch must be a positive number"):
        nnunet_network_spec({"iterations_per_epoch": 0})
    with pytest.raises(EyegcError, match="configuration is 2d"):
        nnunet_network_spec({"configuration": "3d_fullres"})
    with pytest.raises(EyegcError, match="classification task"):
        NNUNET_BACKEND.check_settings(get_task("goals-glaucoma"), tiny_nnunet_config())


def test_a_missing_nnunetv2_is_one_line_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nnunetv2", None)  # import nnunetv2 -> ImportError
    with pytest.raises(EyegcError) as error:
        require_nnunet()
    assert str(error.value) == MISSING_NNUNET and "eyegc[nnunet]" in MISSING_NNUNET


def test_a_failing_nnunet_step_is_one_line_and_a_new_run_leaves_nothing(
    nnunetv2: object, layers_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # nnU-Net's planner calls torch.set_num_threads(nnUNet_n_proc_DA): 0 makes its planning fail
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    with pytest.raises(EyegcError) as error:
        train(get_task(LAYERS), layers_data, tmp_path / "run", tiny_nnunet_config())
    message = str(error.value)
    assert message.startswith("nnU-Net's planning and preprocessing failed: RuntimeError: set_num_threads")
    assert "\n" not in message
    kept = Path(message.rsplit("nnU-Net's output: ", 1)[1].rstrip(")"))
    assert "Traceback" in kept.read_text()
    kept.unlink()
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_trained_run_is_a_checksummed_bundle_of_safe_fold_files(nnunet_run: Path) -> None:
    config = read_config(nnunet_run)
    assert config.backend == "nnunet" and sorted(config.folds) == [0, 1]
    assert config.network.name == "nnUNet" and config.network.kwargs["base_features"] == 8
    assert config.training.epochs == 1 and config.preprocessing.working_scale == 0.5
    assert verify_checksums(nnunet_run) == [f"fold_{k}/{NNUNET_FOLD_NAME}" for k in (0, 1)]
    # resuming for fold 1 left fold 0's weights as they were
    assert sha256_file(nnunet_run / "fold_0" / NNUNET_FOLD_NAME) == (nnunet_run / "fold0.sha256").read_text()
    contents = torch.load(nnunet_run / "fold_0" / NNUNET_FOLD_NAME, weights_only=True)
    assert contents["format"] == "eyegc-nnunet-fold/1" and contents["configuration"] == "2d"
    assert json.loads(contents["dataset_json"])["labels"] == {"background": 0, "rnfl": 1, "gcipl": 2, "choroid": 3}
    for k in (0, 1):
        history = json.loads((nnunet_run / f"fold_{k}" / "history.json").read_text())
        assert len(history["loss"]) == 1 and np.isfinite(config.folds[k].best_score)
        assert sorted(p.stem for p in (nnunet_run / "oof").glob("*.npz")) == sorted(
            c for s in json.loads((nnunet_run / "splits.json").read_text()) for c in s["val"]
        )
    assert (nnunet_run / "nnunet" / "preprocessed" / "Dataset500_goals_layers" / "splits_final.json").is_file()


@pytest.mark.slow
def test_prediction_equals_nnunets_own_predictor_on_the_model_folder(nnunet_run: Path, layers_data: Path) -> None:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    plugin = get_task(LAYERS)
    ours = Predictor(plugin, [load_bundle(nnunet_run)], tta="flip")
    model = next((nnunet_run / "nnunet" / "results" / "Dataset500_goals_layers").iterdir())
    # Every image, in turn: the second once came out with the last fold's weights twice.
    for case in plugin.list_cases(layers_data, "test", require_labels=False):
        image = plugin.read_image(case.image)
        theirs = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
        theirs.initialize_from_trained_model_folder(str(model), use_folds=(0, 1))
        array = nnunet_image(image, 0.5).astype(np.float32)[:, None]
        _, probabilities = theirs.predict_single_npy_array(array, {"spacing": [999.0, 1.0, 1.0]}, None, None, True)
        full = torch.nn.functional.interpolate(
            torch.from_numpy(np.ascontiguousarray(probabilities[:, 0]))[None], size=image.shape[-2:], mode="bilinear"
        )[0].numpy()
        probs = ours.probabilities(image)
        assert probs.shape == (4, *image.shape[-2:])
        np.testing.assert_allclose(probs, full, atol=1e-5)


@pytest.mark.slow
def test_import_of_the_model_folder_predicts_as_the_trained_bundle(
    nnunet_run: Path, layers_data: Path, tmp_path: Path
) -> None:
    plugin = get_task(LAYERS)
    model = next((nnunet_run / "nnunet" / "results" / "Dataset500_goals_layers").iterdir())
    imported = import_model(plugin, model, tmp_path / "imported", folds=[1])
    config = read_config(imported)
    assert config.backend == "nnunet" and list(config.folds) == [1] and config.preprocessing.working_scale == 0.5
    assert config.training.folds == 5 and config.training.learning_rate == pytest.approx(1e-2)
    images = layers_data / "Validation" / "Image"
    predict_folder(plugin, [imported], images, tmp_path / "a", tta="none")
    trained = load_bundle(nnunet_run, folds=[1])
    image = plugin.read_image(sorted(images.iterdir())[0])
    np.testing.assert_allclose(
        Predictor(plugin, [load_bundle(imported)], tta="none").probabilities(image),
        Predictor(plugin, [trained], tta="none").probabilities(image),
        atol=1e-6,
    )
    with pytest.raises(BundleError, match=r"describes an export of 'goals-layers', not 'drac22-task1'$"):
        import_model(get_task("drac22-task1"), model, tmp_path / "wrong")
    foreign = tmp_path / "foreign"  # a dataset nnU-Net users made themselves: no "eyegc" key
    shutil.copytree(model, foreign, ignore=shutil.ignore_patterns("fold_*"))
    meta = json.loads((foreign / "dataset.json").read_text())
    del meta["eyegc"]
    (foreign / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=r"declares labels .* drac22-task1 needs .* `eyegc nnunet dataset"):
        import_model(get_task("drac22-task1"), foreign, tmp_path / "wrong")
    with pytest.raises(BundleError, match=r"fold_7/checkpoint_final\.pth is missing"):
        import_model(plugin, model, tmp_path / "missing", folds=[7])
    with pytest.raises(EyegcError, match="already exists"):
        import_model(plugin, model, tmp_path / "imported", folds=[1])


@pytest.mark.slow
def test_import_refuses_a_checkpoint_that_would_run_code(nnunet_run: Path, tmp_path: Path) -> None:
    model = next((nnunet_run / "nnunet" / "results" / "Dataset500_goals_layers").iterdir())
    copy = tmp_path / "model"
    shutil.copytree(model, copy, ignore=shutil.ignore_patterns("fold_1"))
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple:
            return (Path.touch, (marker,))

    (copy / "fold_0" / "checkpoint_final.pth").write_bytes(pickle.dumps({"network_weights": Payload()}))
    with pytest.raises(BundleError, match="is not a readable nnU-Net checkpoint"):
        import_model(get_task(LAYERS), copy, tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_an_nnunet_bundle_evaluates_and_passes_the_in_process_container_run(
    nnunet_run: Path,
    layers_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pred = tmp_path / "pred"
    argv = ["predict", LAYERS, "--model", str(nnunet_run), "--images", str(layers_data / "Validation" / "Image")]
    assert cli_main([*argv, "--out", str(pred), "--device", "cpu"]) == 0
    assert cli_main(["evaluate", LAYERS, "--pred", str(pred), "--gt", str(layers_data), "--split", "test"]) == 0
    assert "mean_dice" in capsys.readouterr().out
    monkeypatch.setattr(submit, "docker_available", lambda: "no engine in this test")
    common = [LAYERS, "--model", str(nnunet_run), "--data", str(layers_data), "--work", str(tmp_path / "work")]
    assert submit.main([*common, "--max-cases", "2", "--no-docker", "--out", str(tmp_path / "dist")]) == 0
    manifest = json.loads((tmp_path / "dist" / f"eyegc-{LAYERS}-manifest.json").read_text())
    assert [c["equal_to_eyegc_predict"] for c in manifest["test_run"]["cases"]] == [True, True]


# ------------------------------------------------------------------ review round: what a hostile input gets


def test_a_scaled_label_map_takes_the_label_under_each_pixel_centre() -> None:
    labels = np.zeros((4, 4), np.uint8)
    labels[1, 1] = 3  # the centre of output pixel (0, 0) at scale 0.5 lies in source pixel (1, 1)
    np.testing.assert_array_equal(resize_label_map(labels, 0.5), [[3, 0], [0, 0]])


def test_a_test_split_that_cannot_be_read_is_named_not_skipped(drac22_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(drac22_data, data)
    test_image = next(p for p in sorted(data.rglob("*.png")) if "Testing" in str(p) and "Original" in str(p))
    shutil.copyfile(test_image, test_image.with_suffix(".tif"))  # two files for one case
    out = tmp_path / "new" / "raw"
    expected = r"\.tif: DRAC22 images in this folder are \.png files, not \.tif; .* \(or pass --no-test to export"
    with pytest.raises(EyegcError, match=expected):
        export_dataset(get_task("drac22-task1"), data, out)
    assert not (tmp_path / "new").exists()  # nothing of it is left, not even the folders --out named
    folder = export_dataset(get_task("drac22-task1"), data, out, with_test=False)
    assert not any((folder / "imagesTs").iterdir())


def test_configure_keeps_the_users_batch_size_for_resume(nnunetv2: object) -> None:
    config = NNUNET_BACKEND.configure(get_task(LAYERS), tiny_nnunet_config(batch_size=4))
    assert config.network.kwargs["batch_size"] == 4 and config.backend == "nnunet"
    assert NNUNET_BACKEND.configure(get_task(LAYERS), tiny_nnunet_config()).network.kwargs["batch_size"] is None


def test_unknown_trainers_planners_and_path_like_names_are_refused_before_anything_runs(nnunetv2: object) -> None:
    plugin = get_task(LAYERS)
    for key, value, message in (
        ("trainer", "NoSuchTrainer", "nnU-Net has no trainer named 'NoSuchTrainer' here"),
        ("planner", "NoSuchPlanner", "nnU-Net has no planner named 'NoSuchPlanner' here"),
        ("plans", "../../x", "plans must be a class or plans name"),
    ):
        with pytest.raises(EyegcError, match=re.escape(message)):
            NNUNET_BACKEND.check_settings(plugin, tiny_nnunet_config(network_kwargs={**TINY_NNUNET, key: value}))
    # a variant nnU-Net finds only past its Primus trainers (which cannot import here) is found
    NNUNET_BACKEND.check_settings(plugin, tiny_nnunet_config(network_kwargs={"trainer": "nnUNetTrainer_250epochs"}))


def _model_copy(nnunet_run: Path, dest: Path) -> Path:
    model = next((nnunet_run / "nnunet" / "results" / "Dataset500_goals_layers").iterdir())
    shutil.copytree(model, dest, ignore=shutil.ignore_patterns("fold_1", "checkpoint_best.pth", "*.png"))
    return dest


def _edit_json(path: Path, edit: object) -> None:
    data = json.loads(path.read_text())
    path.write_text(json.dumps(edit(data)))  # type: ignore[operator]


@pytest.mark.slow
def test_import_refuses_plans_that_name_code_to_import(nnunet_run: Path, tmp_path: Path) -> None:
    for n, (field, value) in enumerate((("network_class_name", "torch.hub.load"), ("nonlin", "os.system"))):
        model = _model_copy(nnunet_run, tmp_path / f"model{n}")

        def poison(plans: dict, field: str = field, value: str = value) -> dict:
            architecture = plans["configurations"]["2d"]["architecture"]
            if field == "network_class_name":
                architecture[field] = value
            else:
                architecture["arch_kwargs"][field] = value
            return plans

        _edit_json(model / "plans.json", poison)
        with pytest.raises(BundleError, match=r"is not one of nnU-Net.s|only torch\.nn layers are allowed"):
            import_model(get_task(LAYERS), model, tmp_path / f"out{n}")
        assert not (tmp_path / f"out{n}").exists()


@pytest.mark.slow
def test_import_refuses_malformed_folders_in_one_line(nnunet_run: Path, tmp_path: Path) -> None:
    plugin = get_task(LAYERS)
    cases = (
        ("dataset.json", lambda d: [], "is not an nnU-Net dataset.json"),
        ("dataset.json", lambda d: {**d, "labels": {**d["labels"], "rnfl": "a"}}, "label 'rnfl' has a value"),
        (
            "dataset.json",  # the same labels in another order: nnU-Net's channels would follow it
            lambda d: {**d, "labels": {"background": 0, "choroid": 3, "gcipl": 2, "rnfl": 1}},
            "in this order",
        ),
        ("plans.json", lambda p: {}, "no usable '2d' configuration"),
        (
            "plans.json",  # weights that do not fit the plans: refused at import, not at predict
            lambda p: {**p, "configurations": {**p["configurations"], "2d": _wider(p["configurations"]["2d"])}},
            "the weights do not fit the network the plans describe",
        ),
    )
    for n, (name, edit, message) in enumerate(cases):
        model = _model_copy(nnunet_run, tmp_path / f"model{n}")
        _edit_json(model / name, edit)
        with pytest.raises(BundleError, match=re.escape(message)):
            import_model(plugin, model, tmp_path / f"out{n}")
    model = _model_copy(nnunet_run, tmp_path / "all")
    (model / "fold_0").rename(model / "fold_all")
    with pytest.raises(BundleError, match="holds fold_all only"):
        import_model(plugin, model, tmp_path / "out_all")


def _wider(configuration: dict) -> dict:
    architecture = json.loads(json.dumps(configuration["architecture"]))
    architecture["arch_kwargs"]["features_per_stage"] = [
        2 * f for f in architecture["arch_kwargs"]["features_per_stage"]
    ]
    return {**configuration, "architecture": architecture}


@pytest.mark.slow
def test_a_checkpoint_saved_under_numpy_1_is_read(nnunet_run: Path, tmp_path: Path) -> None:
    model = next((nnunet_run / "nnunet" / "results" / "Dataset500_goals_layers").iterdir())
    source = model / "fold_0" / "checkpoint_final.pth"
    copy = tmp_path / "checkpoint_final.pth"
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(copy, "w") as new:
        for item in old.infolist():
            data = old.read(item)
            if item.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray\nscalar" in data
                data = data.replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar")
            new.writestr(item, data)
    assert read_nnunet_checkpoint(copy)["current_epoch"] == read_nnunet_checkpoint(source)["current_epoch"]


def test_the_backends_capabilities_are_protocols_found_by_attribute() -> None:
    from eyegc.common.backend import NeedsExtra, OwnInference, OwnPreprocessing, TrainingBackend
    from eyegc.common.deploy.build import backend_extras
    from eyegc.common.registry import get_backend

    assert isinstance(NNUNET_BACKEND, TrainingBackend)
    assert all(isinstance(NNUNET_BACKEND, p) for p in (OwnInference, OwnPreprocessing, NeedsExtra))
    torch_backend = get_backend("torch")
    assert not any(isinstance(torch_backend, p) for p in (OwnInference, OwnPreprocessing, NeedsExtra))
    assert backend_extras({"torch", "paddle", "nnunet"}) == {"nnunet": "nnunet", "paddle": "paddle"}


def test_a_backend_that_prepares_its_own_images_gets_targets_and_fields_of_view_only(tmp_path: Path) -> None:
    from eyegc.common.bundle_config import Preprocessing
    from eyegc.common.training import load_training_data

    plugin = get_task("drive-vessels")
    cases = plugin.list_cases(write_sample_data(plugin, tmp_path / "data", 2, 1, seed=0), "train")
    data = load_training_data(plugin, cases, Preprocessing(), prepared=False)
    assert not data.images and not data.labels and not data.roi_tensors
    assert sorted(data.targets) == sorted(data.rois) == sorted(c.case_id for c in cases)
