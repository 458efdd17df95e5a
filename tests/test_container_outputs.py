"""Every kind of output socket, written by the container entrypoint and read back exactly.

A stand-in predictor returns known masks and probabilities, so these tests check the socket
contents (mask, probability, label_map, grade, likelihood) without training anything.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import FixedPredictor
from eyegc.common.container import layout_case, read_output_values, run_case
from eyegc.common.errors import DataError, EyegcError
from eyegc.common.imageio import write_png
from eyegc.common.registry import get_task
from eyegc.common.sockets import Interface, check_interface, default_interfaces


def _case(task: str, image: np.ndarray, tmp_path: Path) -> Path:
    path = tmp_path / "case.png"
    write_png(path, image)
    return layout_case(get_task(task), path, tmp_path / "input")


def _goals_layers_case(kind: str, tmp_path: Path) -> np.ndarray:
    """The goals-layers label map the container writes to a socket of ``kind``."""
    plugin = get_task("goals-layers")
    index = np.zeros((1, 800, 1100), dtype=np.uint8)
    index[0, 100:120], index[0, 120:150], index[0, 400:500] = 1, 2, 3
    probs = np.zeros((4, 800, 1100), dtype=np.float32)
    (default,) = default_interfaces(plugin)
    interface = Interface(default.inputs, (replace(default.outputs[0], kind=kind),))
    check_interface(plugin, interface)
    case = _case("goals-layers", np.full((800, 1100), 90, np.uint8), tmp_path)
    run_case(plugin, FixedPredictor(index, probs), case, tmp_path / "output", [interface])
    value = read_output_values(plugin, tmp_path / "output", interface.outputs)["oct-layer-segmentation"]
    assert value.dtype == np.uint8 and value.shape == (800, 1100)
    return value


def test_goals_layer_map_under_kind_segmentation_is_contiguous(tmp_path: Path) -> None:
    """The platform accepts a Segmentation's voxel values only as contiguous overlay segments."""
    value = _goals_layers_case("Segmentation", tmp_path)
    assert value[0, 0] == 0 and value[110, 0] == 1 and value[130, 0] == 2 and value[450, 0] == 3
    assert set(np.unique(value).tolist()) == {0, 1, 2, 3}
    assert get_task("goals-layers").output_sockets[0].kind == "Segmentation"  # the task's default


def test_goals_layer_map_under_kind_image_is_the_official_encoding(tmp_path: Path) -> None:
    value = _goals_layers_case("Image", tmp_path)
    assert value[110, 0] == 0 and value[130, 0] == 80 and value[450, 0] == 160 and value[0, 0] == 255


def test_glaucoma_likelihood_is_a_json_number(tmp_path: Path) -> None:
    case = _case("goals-glaucoma", np.full((800, 1100), 90, np.uint8), tmp_path)
    predictor = FixedPredictor(np.array([1]), np.array([[0.25, 0.75]], dtype=np.float32))
    summary = run_case(get_task("goals-glaucoma"), predictor, case, tmp_path / "output")
    written = tmp_path / "output" / "glaucoma-likelihood.json"
    assert json.loads(written.read_text()) == 0.75
    assert summary["values"] == {"glaucoma-likelihood": 0.75}
    assert sorted(p.name for p in (tmp_path / "output").iterdir()) == ["glaucoma-likelihood.json"]


def test_idrid_grades_are_two_json_integers(tmp_path: Path) -> None:
    case = _case("idrid-grading", np.full((64, 96), 90, np.uint8), tmp_path)
    probs = np.zeros((2, 5), dtype=np.float32)
    run_case(get_task("idrid-grading"), FixedPredictor(np.array([3, 1]), probs), case, tmp_path / "output")
    values = read_output_values(get_task("idrid-grading"), tmp_path / "output")
    assert values == {"dr-grade": 3, "dme-risk": 1}


def test_idrid_probability_maps_keep_float_values(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    probs = rng.random((4, 48, 64)).astype(np.float32)
    masks = (probs > 0.5).astype(np.uint8)
    case = _case("idrid-lesions", np.full((48, 64), 90, np.uint8), tmp_path)
    run_case(get_task("idrid-lesions"), FixedPredictor(masks, probs), case, tmp_path / "output")
    values = read_output_values(get_task("idrid-lesions"), tmp_path / "output")
    for c, key in enumerate(("ma", "he", "ex", "se")):
        assert values[f"{key}-probability"].dtype == np.float32
        np.testing.assert_array_equal(values[f"{key}-probability"], probs[c])


def test_an_existing_value_file_is_refused(tmp_path: Path) -> None:
    case = _case("goals-glaucoma", np.full((800, 1100), 90, np.uint8), tmp_path)
    (tmp_path / "output").mkdir()
    (tmp_path / "output" / "glaucoma-likelihood.json").write_text("0.1")
    with pytest.raises(EyegcError, match="already exists"):
        run_case(
            get_task("goals-glaucoma"), FixedPredictor(np.array([1]), np.array([[0.5, 0.5]])), case, tmp_path / "output"
        )


@pytest.mark.parametrize("size", [(512, 512), (1000, 1200)])
def test_an_input_of_another_size_is_resampled_with_a_warning(
    size: tuple[int, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The platform may hand over another size: processed at the task's size, written at the input's."""
    plugin = get_task("drac22-task1")
    masks = np.zeros((3, 1024, 1024), np.uint8)
    masks[0, :512, :512] = 1  # the top-left quarter
    probabilities = masks.astype(np.float32) * 0.8
    image = np.full(size, 90, np.uint8)
    case = _case("drac22-task1", image, tmp_path)
    run_case(plugin, FixedPredictor(masks, probabilities), case, tmp_path / "output")
    values = read_output_values(plugin, tmp_path / "output")
    irma = values["irma-segmentation"]
    assert irma.shape == size and set(np.unique(irma).tolist()) == {0, 1}
    assert irma[: size[0] // 2 - 2, : size[1] // 2 - 2].all() and not irma[size[0] // 2 + 2 :].any()
    err = capsys.readouterr().err
    assert f"is {size[1]}x{size[0]}; drac22-task1 images are 1024x1024: resampled for the network" in err


def test_a_wrong_size_input_wrong_in_another_way_names_the_user_s_file(tmp_path: Path) -> None:
    """A grey 500x500 image for the RGB DRIVE task: the message names the input, not a resampled copy."""
    case = _case("drive-vessels", np.full((500, 500), 90, np.uint8), tmp_path)
    masks = np.zeros((1, 584, 565), np.uint8)
    with pytest.raises(DataError) as raised:
        run_case(get_task("drive-vessels"), FixedPredictor(masks, masks.astype(np.float32)), case, tmp_path / "out")
    assert str(raised.value).startswith(str(case / "images" / "color-fundus")) and "resampled" not in str(raised.value)
