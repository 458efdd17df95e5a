"""bundle.json's schema: a bundle written by an earlier eyegc (format ``eyegc-bundle/1``, checked into
the repository) keeps loading and predicting exactly, upgraded in memory and written in the current
format when it is saved again; malformed files are one line naming the key."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from eyegc.common.bundle import BUNDLE_FORMAT, CONFIG_NAME, load_bundle, read_config, save_signed_config
from eyegc.common.bundle_config import BundleConfig, config_from_json
from eyegc.common.errors import BundleError
from eyegc.common.inference import Predictor
from eyegc.common.registry import get_task

FIXTURE = Path(__file__).parent / "fixtures" / "bundle-format-1-drac22"
SCHEMA = Path(__file__).parents[1] / "docs" / "bundle.schema.json"
#: Recorded when the fixture was written (torch 2.13.0 CPU, flip TTA, the bundle's tuned thresholds).
FIXTURE_COUNTS = [0, 105240, 0]
FIXTURE_SHA256 = "55f4c467de3d84c62f6ef871b5d88c929609454afeae34960ca51d99cf68d4ef"


def _predict_fixture_image(run: Path) -> np.ndarray:
    plugin = get_task("drac22-task1")
    bundle = load_bundle(run, task=plugin.name)  # checksums verified
    assert [fold.fold for fold in bundle.folds] == [0, 1]
    image = np.random.default_rng(0).integers(0, 256, (1, 1024, 1024), dtype=np.uint8)
    masks, probabilities = Predictor(plugin, [bundle], "flip", "cpu").predict(image)
    assert masks.shape == probabilities.shape == (3, 1024, 1024)
    return masks


def _paths(data: dict[str, Any], prefix: str = "") -> set[str]:
    """Every key path of a JSON object, down to the values (``folds.0.weights``)."""
    paths = set()
    for key, value in data.items():
        paths.add(prefix + key)
        if isinstance(value, dict) and value:
            paths |= _paths(value, f"{prefix}{key}.")
    return paths


def _at(data: dict[str, Any], path: str) -> Any:
    for key in path.split("."):
        data = data[key]
    return data


def _fixture_json() -> dict[str, Any]:
    return json.loads((FIXTURE / CONFIG_NAME).read_text())


def test_a_format_1_bundle_loads_and_predicts_as_when_it_was_written() -> None:
    assert _fixture_json()["format"] == "eyegc-bundle/1" and BUNDLE_FORMAT == "eyegc-bundle/3"
    config = read_config(FIXTURE)
    assert config.format == BUNDLE_FORMAT and config.backend == "torch"  # format 1 without a backend: torch
    postprocessing = config.postprocessing
    assert postprocessing.thresholds == {"irma": 0.55, "npa": 0.55, "nv": 0.55} and postprocessing.tuned is True
    assert config.folds[1].validation_cases == ["050", "1432", "1448"] and config.folds[1].seconds == 0.5
    masks = _predict_fixture_image(FIXTURE)
    assert [int(m.sum()) for m in masks] == FIXTURE_COUNTS
    assert hashlib.sha256(np.ascontiguousarray(masks).tobytes()).hexdigest() == FIXTURE_SHA256


def test_saving_an_upgraded_bundle_writes_the_current_format_and_predicts_the_same(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    save_signed_config(run, read_config(run))  # what re-tuning does
    written = json.loads((run / CONFIG_NAME).read_text())
    assert written["format"] == "eyegc-bundle/3" and written["backend"] == "torch"
    assert written["folds"]["0"]["weights"] == "fold_0/model.pt"
    # Nothing but the format's changes: every key of format 1 keeps its value; these are added.
    before = _fixture_json()
    assert _paths(written) - _paths(before) == {
        "backend",
        "head_classes",
        "preprocessing.input_size",
        "postprocessing.task_options",
        "postprocessing.grade_offsets",  # optional (empty by default): an older format-2 bundle reads alike
        "training.classes_without_ground_truth",
        "training.augmentation",
        # format 3: the seeds' methods, off by default
        "network.super_resolution",
        "training.rmi_weight",
        "training.crf",
        "postprocessing.crf",
    }
    assert _paths(before) <= _paths(written)
    leaves = {path for path in _paths(before) if not isinstance(_at(before, path), dict) or not _at(before, path)}
    for path in leaves - {"format"}:
        assert _at(written, path) == _at(before, path), path
    masks = _predict_fixture_image(run)
    assert hashlib.sha256(np.ascontiguousarray(masks).tobytes()).hexdigest() == FIXTURE_SHA256


def test_json_round_trip_is_exact() -> None:
    config = read_config(FIXTURE)
    again = config_from_json(json.loads(config.to_json()), "again")
    assert again == config and again.to_json() == config.to_json()


def test_format_1_task_postprocessing_keys_move_to_task_options() -> None:
    data = _fixture_json()
    data["postprocessing"]["anatomical"] = False  # a GOALS-layers setting, at the top of the section in format 1
    config = config_from_json(data, "bundle.json")
    assert config.postprocessing.task_options == {"anatomical": False}
    assert config.postprocessing.thresholds["nv"] == 0.55


def test_explicit_backend_of_format_1_is_kept() -> None:
    data = {**_fixture_json(), "backend": "paddle"}
    assert config_from_json(data, "bundle.json").backend == "paddle"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d.update(format="eyegc-bundle/4"),
            "has format 'eyegc-bundle/4'; this eyegc reads eyegc-bundle/1 to",
        ),
        (lambda d: d.pop("format"), "has format None; this eyegc reads"),
        (lambda d: d.update(format="other/1"), "has format 'other/1'"),
        (
            # In format 2 (format 1 kept a task's own keys there: they move to task_options)
            lambda d: d.update(format=BUNDLE_FORMAT, postprocessing={**d["postprocessing"], "tresholds": {}}),
            "postprocessing.tresholds: is not a bundle.json key",
        ),
        (lambda d: d.pop("training"), "training: Field required"),
        (lambda d: d["training"].update(epochs="many"), "training.epochs: Input should be a valid integer"),
        (lambda d: d.update(kind="regression"), "kind: Input should be 'multilabel_segmentation'"),
        (lambda d: d["folds"]["0"].pop("weights"), "folds.0.weights: Field required"),
        (lambda d: d.update(postprocessing=[1]), "postprocessing: Input should be a valid dictionary"),
        (lambda d: d.update(format="eyegc-bundle/\u00b2"), "this eyegc reads eyegc-bundle/1 to"),
        (lambda d: d["postprocessing"]["min_component_size"].update(nv=10**400), "nv must be a whole number"),
        (lambda d: d["training"].update(batch_size=0), "training.batch_size: Input should be greater than"),
        (
            lambda d: d.update(format=BUNDLE_FORMAT, training={**d["training"], "augmentation": "gpu"}),
            "training.augmentation: Input should be 'batched' or 'per-sample'",
        ),
    ],
)
def test_a_malformed_bundle_json_is_one_line_naming_the_key(edit: Any, message: str) -> None:
    data = _fixture_json()
    edit(data)
    with pytest.raises(BundleError) as raised:
        config_from_json(data, "RUN/bundle.json")
    text = str(raised.value)
    assert text.startswith("RUN/bundle.json") and message in text and "\n" not in text


def test_a_bundle_json_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    (tmp_path / CONFIG_NAME).write_text("[1, 2]")
    with pytest.raises(BundleError, match="is not a JSON object; the bundle is damaged"):
        read_config(tmp_path)


def test_the_documented_schema_is_the_models() -> None:
    documented = json.loads(SCHEMA.read_text())
    assert documented == BundleConfig.model_json_schema(), (
        "docs/bundle.schema.json is stale: python -m eyegc.common.bundle_config > docs/bundle.schema.json"
    )
