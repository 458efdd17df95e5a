"""The GOALS thickness-profile glaucoma model: features by hand, fit, JSON round trip, prediction layout."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from eyegc.challenges.goals import thickness_model as tm
from eyegc.challenges.goals.thickness_model import (
    FEATURES_CSV,
    MODEL_FORMAT,
    MODEL_NAME,
    apply_thickness_model,
    build_pipeline,
    describe_thickness_model,
    feature_names,
    fit_thickness_model,
    load_thickness_model,
    predict_thickness_model,
    thickness_features,
)
from eyegc.common.bundle import write_checksums
from eyegc.common.classification import read_classification_cases
from eyegc.common.errors import BundleError, EyegcError
from eyegc.common.evaluation import evaluate_predictions
from eyegc.common.registry import get_task
from eyegc.common.sample_data import write_sample_data

FOLDS = 3  # the 12 synthetic training cases hold 3 glaucoma cases


@pytest.fixture(scope="module")
def goals_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve training and six held-out synthetic GOALS cases."""
    return write_sample_data(get_task("goals-glaucoma"), tmp_path_factory.mktemp("goals") / "data", 12, 6, seed=0)


@pytest.fixture(scope="module")
def truth_model(tmp_path_factory: pytest.TempPathFactory, goals_data: Path) -> tuple[Path, dict[str, Any]]:
    """A thickness model fit on the ground-truth layer masks, and its summary."""
    out = tmp_path_factory.mktemp("thickness") / "model"
    return out, fit_thickness_model([], goals_data, out, source="truth", folds=FOLDS)


def _truth_features(root: Path, split: str = "train") -> tuple[list[str], np.ndarray, np.ndarray]:
    """Case ids, features of the ground-truth layer maps and glaucoma labels of a split."""
    layers, glaucoma = get_task("goals-layers"), get_task("goals-glaucoma")
    masks = {c.case_id: c for c in layers.list_cases(root, split)}
    cases = glaucoma.list_cases(root, split)
    features = np.stack([thickness_features(layers.read_target(masks[c.case_id])) for c in cases])
    labels = np.array([c.labels["glaucoma"] for c in cases])  # type: ignore[index]
    return [c.case_id for c in cases], features, labels


# -- features -------------------------------------------------------------------------------------


def test_feature_names() -> None:
    assert feature_names(2) == ["rnfl_s01", "rnfl_s02", "rnfl_mean", "gcipl_s01", "gcipl_s02", "gcipl_mean"]
    names = feature_names()
    assert len(names) == 26 and names[11] == "rnfl_s12" and names[12] == "rnfl_mean" and names[-1] == "gcipl_mean"
    assert feature_names(100)[0] == "rnfl_s001"


def test_thickness_features_by_hand() -> None:
    # Columns are A-scans. RNFL (1) thickness per column 3, 3, 1, 1; GCIPL (2) 2, 4, 6, 8; choroid (3) ignored.
    index = np.zeros((12, 4), np.uint8)
    index[0:3, 0:2] = 1
    index[0:1, 2:4] = 1
    for column, thickness in enumerate((2, 4, 6, 8)):
        index[3 : 3 + thickness, column] = 2
    index[11, :] = 3
    expected = [3.0, 1.0, 2.0, 3.0, 7.0, 5.0]  # rnfl s01, s02, mean; gcipl s01, s02, mean
    assert thickness_features(index, sectors=2).tolist() == expected
    assert thickness_features(index[None], sectors=2).tolist() == expected
    assert thickness_features(index, sectors=1).tolist() == [2.0, 2.0, 5.0, 5.0]
    assert thickness_features(index, sectors=4).tolist() == [3.0, 3.0, 1.0, 1.0, 2.0, 2.0, 4.0, 6.0, 8.0, 5.0]
    # Odd width: sector k covers columns k*W//S ... (k+1)*W//S - 1, here 0-1 and 2-4.
    odd = np.zeros((5, 5), np.uint8)
    odd[0, :] = 1
    odd[1:3, 0] = 1  # RNFL 3, 1, 1, 1, 1
    assert thickness_features(odd, sectors=2)[:3].tolist() == [2.0, 1.0, pytest.approx(7 / 5)]


def test_thickness_features_rejects_bad_input() -> None:
    with pytest.raises(EyegcError, match="more than the image's 4 columns"):
        thickness_features(np.zeros((3, 4), np.uint8), sectors=5)
    with pytest.raises(EyegcError, match="at least 1"):
        thickness_features(np.zeros((3, 4), np.uint8), sectors=0)
    with pytest.raises(ValueError, match="class-index map"):
        thickness_features(np.zeros((4, 3, 4), np.uint8))
    with pytest.raises(ValueError, match="class-index map"):
        thickness_features(np.zeros((3, 4), np.float32))


# -- fitting --------------------------------------------------------------------------------------


def test_fit_on_truth_separates_and_explains(truth_model: tuple[Path, dict[str, Any]]) -> None:
    out, summary = truth_model
    assert summary["cases"] == 12 and summary["positives"] == 3 and summary["source"] == "truth"
    assert summary["cross_validation"]["auc"] > 0.8
    assert summary["coefficients"]["rnfl_mean"] < 0  # thinner RNFL -> more likely glaucoma
    assert list(summary["coefficients"]) == sorted(
        summary["coefficients"], key=lambda k: -abs(summary["coefficients"][k])
    )
    assert sorted(p.name for p in out.iterdir()) == sorted([MODEL_NAME, FEATURES_CSV])  # no pickle

    def no_constant(name: str) -> None:
        raise AssertionError(f"{name} in the model JSON")

    doc = json.loads((out / MODEL_NAME).read_text(), parse_constant=no_constant)  # strict JSON: no NaN
    assert doc["format"] == MODEL_FORMAT and doc["features"]["names"] == feature_names(12)
    assert doc["layers_models"] == [] and doc["source"] == "truth"
    assert 0.0 <= doc["threshold"] <= 1.0 and doc["cross_validation"] == summary["cross_validation"]
    assert len(doc["scaler"]["mean"]) == len(doc["logistic_regression"]["coef"]) == 26
    text = describe_thickness_model(summary)
    assert "cross-validated auc" in text and "rnfl" in text
    assert describe_thickness_model(load_thickness_model(out)).startswith("thickness model (truth layers, 12 sectors)")


def test_json_round_trip_equals_sklearn_pipeline(goals_data: Path, truth_model: tuple[Path, dict[str, Any]]) -> None:
    out, _ = truth_model
    doc = load_thickness_model(out)
    _, features, labels = _truth_features(goals_data)
    pipeline = build_pipeline(C=1.0, seed=0).fit(features, labels)
    np.testing.assert_allclose(apply_thickness_model(doc, features), pipeline.predict_proba(features)[:, 1], atol=1e-9)
    _, held_out, _ = _truth_features(goals_data, "test")
    np.testing.assert_allclose(apply_thickness_model(doc, held_out), pipeline.predict_proba(held_out)[:, 1], atol=1e-9)
    # Extreme inputs neither overflow nor leave [0, 1].
    extreme = apply_thickness_model(doc, np.stack([np.full(26, 1e6), np.full(26, -1e6)]))
    assert np.all(np.isfinite(extreme)) and extreme[0] == pytest.approx(0.0) and extreme[1] == pytest.approx(1.0)


def test_fit_errors_are_clear(goals_data: Path, tmp_path: Path, truth_model: tuple[Path, dict[str, Any]]) -> None:
    with pytest.raises(EyegcError, match="--layers-model"):
        fit_thickness_model([], goals_data, tmp_path / "a")
    with pytest.raises(EyegcError, match="layer source"):
        fit_thickness_model([], goals_data, tmp_path / "a", source="oracle")
    with pytest.raises(EyegcError, match="use --folds 3 or fewer"):
        fit_thickness_model([], goals_data, tmp_path / "a", source="truth", folds=5)
    with pytest.raises(EyegcError, match="--C"):
        fit_thickness_model([], goals_data, tmp_path / "a", source="truth", C=0.0)
    with pytest.raises(EyegcError, match="TTA mode"):
        fit_thickness_model([], goals_data, tmp_path / "a", source="truth", tta="dihedral")
    with pytest.raises(EyegcError, match="already exists"):
        fit_thickness_model([], goals_data, truth_model[0], source="truth", folds=FOLDS)
    with pytest.raises(EyegcError, match="would delete"):
        fit_thickness_model([], goals_data, goals_data, source="truth", folds=FOLDS, overwrite=True)
    assert not (tmp_path / "a").exists()


def test_damaged_model_is_refused(truth_model: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a thickness model"):
        load_thickness_model(tmp_path)
    doc = json.loads((truth_model[0] / MODEL_NAME).read_text())
    for damage, match in (
        (lambda d: d.update(format="other/1"), "format"),
        (lambda d: d["scaler"]["scale"].pop(), "scaler.scale"),
        (lambda d: d["features"].update(sectors=6), "feature names"),
        (lambda d: d.pop("threshold"), "not a complete"),
    ):
        broken = json.loads(json.dumps(doc))
        damage(broken)
        (tmp_path / MODEL_NAME).write_text(json.dumps(broken))
        with pytest.raises(BundleError, match=match):
            load_thickness_model(tmp_path)


# -- prediction -----------------------------------------------------------------------------------


class _OraclePredictor:
    """Stands in for the goals-layers ensemble: returns the ground-truth layer map of the image."""

    maps: ClassVar[dict[str, np.ndarray]] = {}
    members = 1

    def __init__(self, plugin: Any, bundles: Any, tta: str = "none", device: Any = "cpu") -> None:
        self.ops = ("identity",)

    def predict(self, image: np.ndarray) -> tuple[np.ndarray, None]:
        return self.maps[hashlib.sha256(image.tobytes()).hexdigest()], None


def test_predict_writes_the_goals_glaucoma_layout(
    goals_data: Path, truth_model: tuple[Path, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layers, glaucoma = get_task("goals-layers"), get_task("goals-glaucoma")
    cases = layers.list_cases(goals_data, "test")
    _OraclePredictor.maps = {
        hashlib.sha256(layers.read_image(c.image).tobytes()).hexdigest(): layers.read_target(c) for c in cases
    }
    monkeypatch.setattr("eyegc.common.inference.Predictor", _OraclePredictor)
    monkeypatch.setattr(tm, "_resolve_layer_bundles", lambda model, layers_models: [])
    pred = tmp_path / "pred"
    summary = predict_thickness_model(truth_model[0], goals_data / "Validation" / "Image", pred)
    ids, features, labels = _truth_features(goals_data, "test")
    assert summary["cases"] == 6 and sorted(p.stem for p in pred.glob("*.json")) == ids
    grades, probs = read_classification_cases(pred, ids, glaucoma.classes)
    expected = apply_thickness_model(load_thickness_model(truth_model[0]), features)
    np.testing.assert_allclose(probs[:, 0, 1], expected, atol=1e-6)  # the files round to 6 decimals
    threshold = json.loads((truth_model[0] / MODEL_NAME).read_text())["threshold"]
    assert grades[:, 0].tolist() == (expected >= threshold).astype(int).tolist()
    assert summary["positives"] == int(grades.sum())
    assert (pred / "thickness_features.csv").read_text().splitlines()[0].startswith("case,glaucoma_probability")
    # What `eyegc evaluate goals-glaucoma` and `eyegc submission goals-glaucoma` read.
    result = evaluate_predictions(glaucoma, pred, goals_data, "test")
    assert result.leaderboard["auc"] > 0.8 and labels.sum() >= 1
    archive = glaucoma.write_submission(pred, tmp_path / "submission.zip")
    with zipfile.ZipFile(archive) as handle:
        assert "Classification_Results.csv" in handle.namelist()


def test_predict_needs_a_layer_bundle(
    goals_data: Path, truth_model: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    with pytest.raises(BundleError, match="--layers-model"):
        predict_thickness_model(truth_model[0], goals_data / "Validation" / "Image", tmp_path / "pred")
    assert not (tmp_path / "pred").exists()


@pytest.mark.slow
def test_predicted_layers_end_to_end(goals_data: Path, tmp_path: Path) -> None:
    from eyegc.common.training import TrainConfig, train

    run = train(
        get_task("goals-layers"),
        goals_data,
        tmp_path / "layers",
        TrainConfig(
            folds=2,
            epochs=1,
            batch_size=4,
            patch_size=64,
            working_scale=0.125,
            patches_per_image=2,
            network_kwargs={"channels": (4, 8, 16), "strides": (2, 2), "num_res_units": 0},
            device="cpu",
        ),
    )
    model = tmp_path / "model"
    summary = fit_thickness_model([run], goals_data, model, folds=FOLDS)
    doc = load_thickness_model(model)
    assert summary["source"] == "predicted" and doc["layers_models"][0]["path"] == str(run.resolve())
    images = tmp_path / "images"
    images.mkdir()
    for name in ("0101.png", "0102.png"):
        shutil.copy(goals_data / "Validation" / "Image" / name, images / name)
    result = predict_thickness_model(model, images, tmp_path / "pred")
    assert result["cases"] == 2 and result["members"] == 2
    grades, probs = read_classification_cases(tmp_path / "pred", ["0101", "0102"], get_task("goals-glaucoma").classes)
    assert np.allclose(probs.sum(axis=2), 1.0, atol=1e-5)
    assert grades[:, 0].tolist() == (probs[:, 0, 1] >= doc["threshold"]).astype(int).tolist()

    # The bundle moved: the stored path fails, naming it; --layers-model finds it again.
    moved = tmp_path / "moved"
    run.rename(moved)
    with pytest.raises(BundleError, match=f"{run}.*missing.*--layers-model"):
        predict_thickness_model(model, images, tmp_path / "p2")
    predict_thickness_model(model, images, tmp_path / "p2", layers_models=[moved])
    # Another (retuned) bundle is not the one the features were fit with.
    other = tmp_path / "other"
    shutil.copytree(moved, other)
    config = json.loads((other / "bundle.json").read_text())
    config["postprocessing"]["task_options"] = {"anatomical": False}  # re-tuned: another bundle.json
    (other / "bundle.json").write_text(json.dumps(config))
    write_checksums(other)
    with pytest.raises(BundleError, match=f"{other}.*not one this thickness model was fit with"):
        predict_thickness_model(model, images, tmp_path / "p3", layers_models=[other])
    # A stored bundle changed in place is an error naming it.
    moved.rename(run)
    shutil.copy(other / "bundle.json", run / "bundle.json")
    with pytest.raises(BundleError, match=f"{run}.*changed since the thickness model was fit"):
        predict_thickness_model(model, images, tmp_path / "p4")
    assert not any((tmp_path / p).exists() for p in ("p3", "p4"))
