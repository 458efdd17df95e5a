"""The command line: verbs wired to their functions, and one clear line for user errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from eyegc.challenges.drac22.layout import CLASS_FOLDERS
from eyegc.common.cli import main


def test_console_script_lists_the_tasks() -> None:
    exe = shutil.which("eyegc") or str(Path(sys.executable).parent / "eyegc")
    out = subprocess.run([exe, "list"], capture_output=True, text=True, check=True).stdout
    assert "drac22-task1" in out and "irma, npa, nv" in out


def test_unknown_task_suggests_the_closest(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample-data", "drac22-tsk1", "/tmp/never"]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'drac22-tsk1'" in err and "Did you mean 'drac22-task1'?" in err


def test_sample_data_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["sample-data", "drac22-task1", str(out), "--cases", "1"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_evaluate_names_a_missing_prediction(
    drac22_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pred = tmp_path / "pred"
    for folder in CLASS_FOLDERS.values():
        (pred / folder).mkdir(parents=True)
    assert main(["evaluate", "drac22-task1", "--pred", str(pred), "--gt", str(drac22_data)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("eyegc: error: no prediction for case ") and len(err.splitlines()) == 1


def test_predict_rejects_a_wrong_size_image_and_leaves_no_output(
    drac22_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np
    from eyegc.common.imageio import write_png

    images = tmp_path / "images"
    images.mkdir()
    write_png(images / "100.png", np.zeros((512, 512), dtype=np.uint8))
    out = tmp_path / "pred"
    assert (
        main(["predict", "drac22-task1", "--model", str(drac22_run), "--images", str(images), "--out", str(out)]) == 2
    )
    assert "100.png is 512x512" in capsys.readouterr().err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["images"]


def test_predict_on_an_empty_folder_is_a_clear_error(
    drac22_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    args = ["predict", "drac22-task1", "--model", str(drac22_run), "--images", str(tmp_path / "empty")]
    assert main([*args, "--out", str(tmp_path / "p")]) == 2
    assert "holds no images" in capsys.readouterr().err


def test_train_with_a_missing_data_root_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "drac22-task1", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")]
    assert main(args) == 2
    assert "no DRAC22 images folder" in capsys.readouterr().err


def test_tune_then_predict_with_two_bundles_and_dihedral_tta(
    drac22_data: Path, drac22_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tune", "drac22-task1", "--model", str(drac22_run)]) == 0
    assert "thresholds" in capsys.readouterr().out
    images = drac22_data / "A. Segmentation" / "1. Original Images" / "b. Testing Set"
    out = tmp_path / "pred"
    args = ["predict", "drac22-task1", "--model", str(drac22_run), str(drac22_run), "--images", str(images)]
    assert main([*args, "--out", str(out), "--tta", "dihedral", "--save-probabilities"]) == 0
    assert "4 ensemble member(s)" in capsys.readouterr().out
    import numpy as np

    saved = np.load(out / "probabilities" / "086.npz")
    assert saved["probabilities"].shape == (3, 1024, 1024) and list(saved["classes"]) == ["irma", "npa", "nv"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*CLASS_FOLDERS.values(), "probabilities"])


def test_bad_network_kwargs_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "drac22-task1", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--network-kwargs", "{bad"]
    assert main(args) == 2
    assert "--network-kwargs is not valid JSON" in capsys.readouterr().err


def test_predict_overwrite_never_deletes_its_own_inputs(
    drac22_data: Path, drac22_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = drac22_data / "A. Segmentation" / "1. Original Images" / "b. Testing Set"
    args = ["predict", "drac22-task1", "--model", str(drac22_run), "--images", str(images)]
    assert main([*args, "--out", str(drac22_data), "--overwrite"]) == 2
    assert "eyegc never writes over its inputs" in capsys.readouterr().err
    assert images.is_dir()


def test_train_records_preprocessing_and_validation_options(
    drac22_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    args = ["train", "drac22-task1", "--data", str(drac22_data), "--out", str(run), "--folds", "2", "--fold", "0"]
    args += ["--epochs", "2", "--patch-size", "64", "--working-scale", "0.125", "--patches-per-image", "1"]
    args += ["--network-kwargs", '{"channels": [4, 8], "strides": [2], "num_res_units": 0}', "--no-tune"]
    args += ["--clahe", "channels", "--clahe-clip", "0.02", "--validate-every", "2", "--loss", "bce", "--device", "cpu"]
    assert main(args) == 0
    config = json.loads((run / "bundle.json").read_text())
    assert config["preprocessing"]["clahe"] == {"space": "channels", "clip_limit": 0.02}
    assert config["preprocessing"]["fov_mask"] is False
    assert config["training"]["validate_every"] == 2 and config["training"]["loss"] == "bce"
    # DRAC22 images are grey: asking for the RGB-only options is one clear line, and no run is left
    bad = [*args[:5], str(tmp_path / "bad"), *args[6:], "--fov-mask"]
    assert main(bad) == 2
    assert "--fov-mask needs RGB" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("jobs", ["0", "two"])
def test_train_jobs_must_be_a_positive_whole_number(
    jobs: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "drac22-task1", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--jobs", jobs]
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    assert "--jobs: must be a whole number of at least 1" in capsys.readouterr().err
