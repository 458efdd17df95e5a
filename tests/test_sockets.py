"""Sockets as data: each task's defaults, a user's mapping file checked by the platform's kind rules,
and the entrypoint writing exactly to the mapped relative paths (issue 17, item 1)."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import FixedPredictor
from eyegc.common.container import INPUTS_JSON, layout_case, main, read_output_values, run_case
from eyegc.common.plugin import Socket
from eyegc.common.registry import available_tasks, get_task
from eyegc.common.sockets import (
    Interface,
    SocketError,
    check_interface,
    default_interfaces,
    interfaces_json,
    read_interfaces,
)
from PIL import Image

TASKS = available_tasks()


@pytest.mark.parametrize("task", TASKS)
def test_every_task_default_passes_the_kind_rules_and_round_trips(task: str, tmp_path: Path) -> None:
    plugin = get_task(task)
    interfaces = default_interfaces(plugin)
    check_interface(plugin, interfaces[0])
    path = tmp_path / "sockets.json"
    path.write_text(json.dumps(interfaces_json(plugin, interfaces)))
    assert read_interfaces(path, plugin) == interfaces


def test_drive_uses_the_platform_s_own_sockets() -> None:
    (interface,) = default_interfaces(get_task("drive-vessels"))
    assert [(s.slug, s.relative_path) for s in interface.inputs] == [("color-fundus-image", "images/color-fundus")]
    assert (interface.outputs[0].slug, interface.outputs[0].relative_path) == (
        "binary-vessel-segmentation",
        "images/binary-vessel-segmentation",
    )


def _drac22_document() -> dict[str, Any]:
    plugin = get_task("drac22-task1")
    return interfaces_json(plugin, default_interfaces(plugin))


def _edit(document: dict[str, Any], side: str, index: int, **fields: Any) -> dict[str, Any]:
    edited = copy.deepcopy(document)
    edited["interfaces"][0][side][index].update(fields)
    return edited


BAD_MAPPINGS = {
    "unknown kind": (_edit(_drac22_document(), "outputs", 0, kind="Segmentaton"), "kind 'Segmentaton' is not one"),
    "super kind": (_edit(_drac22_document(), "outputs", 0, super_kind="Value"), "has super kind Image, not Value"),
    "mask as heat map": (
        _edit(_drac22_document(), "outputs", 0, kind="Heat Map"),
        "a mask (Image: the class's 0/1 mask, uint8) cannot go to a socket of kind Heat Map; use kind Segmentation",
    ),
    "mask as float": (
        _edit(_drac22_document(), "outputs", 0, kind="Float", super_kind="Value", relative_path="irma.json"),
        "cannot go to a socket of kind Float",
    ),
    "image path": (_edit(_drac22_document(), "outputs", 0, relative_path="irma"), "starts with images/"),
    "escaping path": (_edit(_drac22_document(), "outputs", 0, relative_path="images/../x"), "below /input or /output"),
    "slug": (_edit(_drac22_document(), "outputs", 0, slug="IRMA seg"), "is not a platform slug"),
    "class key": (_edit(_drac22_document(), "outputs", 0, class_key="ma"), "class_key 'ma' is not a class"),
    "duplicate slug": (_edit(_drac22_document(), "outputs", 1, slug="irma-segmentation"), "share the slug"),
    "duplicate path": (
        _edit(_drac22_document(), "outputs", 1, relative_path="images/irma-segmentation"),
        "share the relative_path images/irma-segmentation",
    ),
    "input kind": (_edit(_drac22_document(), "inputs", 0, kind="Segmentation"), "an input must be of kind Image"),
    "unknown field": (_edit(_drac22_document(), "outputs", 0, colour="red"), "unknown field(s) colour"),
    "other task": (
        {**_drac22_document(), "task": "drive-vessels"},
        "maps the sockets of 'drive-vessels', not 'drac22-task1'",
    ),
    "no interfaces": ({"task": "drac22-task1", "interfaces": []}, "expected {"),
    "same inputs twice": (
        {"task": "drac22-task1", "interfaces": _drac22_document()["interfaces"] * 2},
        "two socket sets take the same inputs",
    ),
}


def _document(task: str) -> dict[str, Any]:
    plugin = get_task(task)
    return interfaces_json(plugin, default_interfaces(plugin))


#: Contents a task does not predict: refused before the build, not written wrong or crashed on.
CONTENT_MISMATCHES = {
    "label map of a multi-label task": (
        "drac22-task1",
        {"content": "label_map", "class_key": None},
        "drac22-task1 (multilabel_segmentation) predicts no label_map",
    ),
    "grade of a segmentation task": (
        "drive-vessels",
        {"content": "grade", "kind": "Integer", "super_kind": "Value", "relative_path": "vessel.json"},
        "predicts no grade",
    ),
    "mask of a classification task": (
        "goals-glaucoma",
        {"content": "mask", "kind": "Segmentation", "super_kind": "Image", "relative_path": "images/gc"},
        "goals-glaucoma (classification) predicts no mask",
    ),
    "label map with a class key": ("goals-layers", {"class_key": "bogus"}, "a label_map carries every class"),
    "likelihood of a five-grade head": (
        "idrid-grading",
        {"content": "likelihood", "kind": "Float"},
        "dr has 5 grades: write its grade (content grade) instead",
    ),
    "null slug": ("drive-vessels", {"slug": None}, "slug must be text (only class_key and content may be null)"),
    "number as kind": ("drive-vessels", {"kind": 3}, "kind must be text"),
}


@pytest.mark.parametrize("name", sorted(CONTENT_MISMATCHES))
def test_a_content_the_task_does_not_predict_is_refused(name: str, tmp_path: Path) -> None:
    task, fields_, message = CONTENT_MISMATCHES[name]
    document = _document(task)
    document["interfaces"][0]["outputs"][0].update(fields_)
    path = tmp_path / "sockets.json"
    path.write_text(json.dumps(document))
    with pytest.raises(SocketError) as raised:
        read_interfaces(path, get_task(task))
    assert str(raised.value).startswith(str(path)) and message in str(raised.value), str(raised.value)


@pytest.mark.parametrize("name", sorted(BAD_MAPPINGS))
def test_a_bad_mapping_is_one_error_naming_the_file(name: str, tmp_path: Path) -> None:
    document, message = BAD_MAPPINGS[name]
    path = tmp_path / "sockets.json"
    path.write_text(json.dumps(document))
    with pytest.raises(SocketError) as raised:
        read_interfaces(path, get_task("drac22-task1"))
    assert str(raised.value).startswith(str(path)) and message in str(raised.value), str(raised.value)


def test_an_unreadable_mapping_file(tmp_path: Path) -> None:
    with pytest.raises(SocketError, match=r"socket file not found: .* \(write a starting one with --print-sockets\)"):
        read_interfaces(tmp_path / "none.json", get_task("drac22-task1"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SocketError, match="is not valid JSON"):
        read_interfaces(tmp_path / "bad.json", get_task("drac22-task1"))


def _drive_case(tmp_path: Path, interface: Interface | None = None) -> Path:
    image = tmp_path / "case.png"
    image.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((584, 565, 3), 90, np.uint8)).save(image)  # DRIVE images are RGB
    return layout_case(get_task("drive-vessels"), image, tmp_path / "input", interface)


def _drive_predictor() -> FixedPredictor:
    masks = np.zeros((1, 584, 565), np.uint8)
    masks[0, 10:20, 10:20] = 1
    return FixedPredictor(masks, masks.astype(np.float32) * 0.75)


def _custom_drive_interface() -> Interface:
    (default,) = default_interfaces(get_task("drive-vessels"))
    inputs = (replace(default.inputs[0], slug="fundus-photograph", relative_path="images/fundus-photograph"),)
    outputs = (
        Socket("retinal-vessels", "images/retinal-vessels", kind="Image", class_key="vessel", content="mask"),
        Socket("vessel-heat", "images/vessel-heat", kind="Heat Map", class_key="vessel", content="probability"),
    )
    return Interface(inputs, outputs)


def test_a_custom_mapping_writes_exactly_to_its_relative_paths(tmp_path: Path) -> None:
    plugin, custom = get_task("drive-vessels"), _custom_drive_interface()
    check_interface(plugin, custom)
    case = _drive_case(tmp_path, custom)
    entries = json.loads((case / INPUTS_JSON).read_text())
    assert entries[0]["socket"]["slug"] == "fundus-photograph"
    run_case(plugin, _drive_predictor(), case, tmp_path / "output", [custom])
    written = sorted(str(p.relative_to(tmp_path / "output")) for p in (tmp_path / "output").rglob("*") if p.is_file())
    assert written == ["images/retinal-vessels/output.mha", "images/vessel-heat/output.mha"]
    values = read_output_values(plugin, tmp_path / "output", custom.outputs)
    assert values["retinal-vessels"][15, 15] == 1 and values["vessel-heat"][15, 15] == pytest.approx(0.75)


def test_the_entrypoint_serves_whichever_set_inputs_json_presents(tmp_path: Path) -> None:
    plugin, custom = get_task("drive-vessels"), _custom_drive_interface()
    interfaces = [*default_interfaces(plugin), custom]
    for name, interface in (("default", interfaces[0]), ("custom", custom)):
        case = _drive_case(tmp_path / name, interface)
        summary = run_case(plugin, _drive_predictor(), case, tmp_path / name / "output", interfaces)
        assert sorted(summary["outputs"]) == sorted(s.slug for s in interface.outputs)


def test_the_container_reads_a_sockets_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plugin, custom = get_task("drive-vessels"), _custom_drive_interface()
    sockets = tmp_path / "sockets.json"
    sockets.write_text(json.dumps(interfaces_json(plugin, [custom])))
    case = _drive_case(tmp_path)  # laid out for the task's default sockets, which this mapping does not have
    args = ["--task", "drive-vessels", "--input", str(case), "--output", str(tmp_path / "out"), "--model", "unused"]
    assert main([*args, "--sockets", str(sockets)]) == 2
    err = capsys.readouterr().err
    assert "no handler for input sockets ['color-fundus-image']; drive-vessels takes ['fundus-photograph']" in err
    sockets.write_text("{}")
    assert main([*args, "--sockets", str(sockets)]) == 2
    assert f"{sockets}: expected" in capsys.readouterr().err
    assert main([*args, "--sockets", str(tmp_path / "typo.json")]) == 2  # never a silent fallback
    assert "socket file not found" in capsys.readouterr().err
