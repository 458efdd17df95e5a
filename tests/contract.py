"""The shared plugin contract test: subclass it once per task and the whole contract is tested.

Example::

    class TestDrac22Task1Contract(TaskPluginContract):
        task = "drac22-task1"
        submission_options = {"team": "Contract_Team"}
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from conftest import tiny_train_config
from eyegc.common.bundle import load_bundle
from eyegc.common.classification import max_num_classes
from eyegc.common.errors import DataError, EyegcError
from eyegc.common.evaluation import evaluate_predictions
from eyegc.common.inference import predict_folder, tta_ops_for
from eyegc.common.losses import CLASSIFICATION_LOSSES, LOSSES
from eyegc.common.networks import CLASSIFIERS, NETWORKS
from eyegc.common.plugin import DIHEDRAL_OPS, TaskKind, TaskPlugin
from eyegc.common.registry import available_tasks, get_task
from eyegc.common.report import REPORT_FILES, write_report
from eyegc.common.report.plots import PLOTS
from eyegc.common.sample_data import write_sample_data
from eyegc.common.training import train
from pypdf import PdfReader

__all__ = ["TaskPluginContract", "perfect_probabilities"]


def perfect_probabilities(plugin: TaskPlugin, target: np.ndarray) -> np.ndarray:
    """The probabilities of a perfect prediction of ``target``, in the task's layout."""
    if plugin.kind == TaskKind.MULTILABEL_SEGMENTATION:
        return target.astype(np.float32)
    if plugin.kind == TaskKind.MULTICLASS_SEGMENTATION:
        return (np.arange(len(plugin.classes))[:, None, None] == target[0][None]).astype(np.float32)
    probs = np.zeros((len(plugin.classes), max_num_classes(plugin.classes)), dtype=np.float32)
    probs[np.arange(len(plugin.classes)), np.asarray(target).reshape(-1)] = 1.0
    return probs


class TaskPluginContract:
    """Every registered task must pass these; subclasses set ``task`` (and options if needed)."""

    task: ClassVar[str]
    submission_options: ClassVar[dict[str, Any]] = {}
    sample_cases: ClassVar[int] = 6
    sample_test_cases: ClassVar[int] = 3

    @pytest.fixture(scope="class")
    @classmethod
    def plugin(cls) -> TaskPlugin:
        return get_task(cls.task)

    @pytest.fixture(scope="class")
    @classmethod
    def data(cls, tmp_path_factory: pytest.TempPathFactory, plugin: TaskPlugin) -> Path:
        root = tmp_path_factory.mktemp(f"contract-{cls.task}") / "data"
        return write_sample_data(plugin, root, cls.sample_cases, cls.sample_test_cases, seed=3)

    @pytest.fixture(scope="class")
    @classmethod
    def run(cls, tmp_path_factory: pytest.TempPathFactory, plugin: TaskPlugin, data: Path) -> Path:
        if plugin.kind == TaskKind.CLASSIFICATION:
            config = tiny_train_config(
                network_kwargs={"depth": 10, "block_inplanes": (8, 16, 32, 64)},
                patch_size=0,
                extra={"input_size": (64, 64)},
            )
        else:
            config = tiny_train_config()
        return train(plugin, data, tmp_path_factory.mktemp(f"contract-{cls.task}-run") / "run", config)

    # -- declarations -------------------------------------------------------------------------

    def test_registered_and_satisfies_protocol(self, plugin: TaskPlugin) -> None:
        assert self.task in available_tasks()
        assert isinstance(plugin, TaskPlugin)
        assert plugin.name == self.task
        assert plugin.name.startswith(plugin.challenge)

    def test_classes_are_unique_lowercase_keys(self, plugin: TaskPlugin) -> None:
        keys = [c.key for c in plugin.classes]
        assert keys and len(set(keys)) == len(keys)
        assert all(k == k.lower() and " " not in k for k in keys)

    def test_defaults_name_registered_components(self, plugin: TaskPlugin) -> None:
        assert plugin.defaults.network in NETWORKS
        assert plugin.defaults.folds >= 2
        if plugin.kind == TaskKind.CLASSIFICATION:
            assert plugin.defaults.network in CLASSIFIERS
            assert plugin.defaults.loss in CLASSIFICATION_LOSSES
            assert plugin.defaults.input_size is not None
            assert all(c.num_classes is not None and c.num_classes >= 2 for c in plugin.classes)
        else:
            assert plugin.defaults.network not in CLASSIFIERS
            assert plugin.defaults.loss in LOSSES

    def test_tta_modes_are_dihedral_ops_and_none_is_identity(self, plugin: TaskPlugin) -> None:
        assert tta_ops_for(plugin, "none") == ("identity",)
        for ops in plugin.allowed_tta.values():
            assert ops[0] == "identity" and set(ops) <= set(DIHEDRAL_OPS)
        with pytest.raises(EyegcError, match="TTA mode"):
            tta_ops_for(plugin, "no-such-mode")

    def test_sockets_follow_grand_challenge_paths(self, plugin: TaskPlugin) -> None:
        keys = {c.key for c in plugin.classes}
        slugs = [s.slug for s in (*plugin.input_sockets, *plugin.output_sockets)]
        assert len(set(slugs)) == len(slugs)
        for socket in (*plugin.input_sockets, *plugin.output_sockets):
            if socket.super_kind == "Image":
                assert socket.relative_path.startswith("images/")
            assert socket.class_key is None or socket.class_key in keys

    # -- data ----------------------------------------------------------------------------------

    def test_sample_data_is_read_by_the_official_reader(self, plugin: TaskPlugin, data: Path) -> None:
        train_cases = plugin.list_cases(data, "train")
        test_cases = plugin.list_cases(data, "test")
        assert len(train_cases) == self.sample_cases
        assert len(test_cases) == self.sample_test_cases
        case = train_cases[0]
        image = plugin.read_image(case.image)
        assert image.ndim == 3 and image.shape[0] == plugin.in_channels
        if plugin.image_size is not None:
            assert image.shape[1:] == plugin.image_size
        target = plugin.read_target(case)
        roi = plugin.read_roi(case)
        if plugin.kind == TaskKind.MULTILABEL_SEGMENTATION:
            assert target.shape == (len(plugin.classes), *image.shape[1:])
            assert target.dtype == np.uint8 and set(np.unique(target)) <= {0, 1}
        elif plugin.kind == TaskKind.MULTICLASS_SEGMENTATION:
            assert target.shape == (1, *image.shape[1:]) and target.dtype == np.uint8
            assert set(np.unique(target)) <= set(range(len(plugin.classes)))
        else:
            assert target.shape == (len(plugin.classes),)
            assert all(0 <= g < c.num_classes for g, c in zip(target, plugin.classes, strict=True))
        if roi is not None:
            assert roi.shape == image.shape[1:] and roi.dtype == bool and roi.any()

    def test_truncated_image_is_a_clear_error(self, plugin: TaskPlugin, data: Path, tmp_path: Path) -> None:
        source = plugin.list_cases(data, "train")[0].image
        broken = tmp_path / source.name
        broken.write_bytes(source.read_bytes()[:200])
        with pytest.raises(DataError, match=broken.name):
            plugin.read_image(broken)

    def test_empty_data_folder_is_a_clear_error(self, plugin: TaskPlugin, tmp_path: Path) -> None:
        with pytest.raises(DataError):
            plugin.list_cases(tmp_path, "train")

    # -- metric, prediction layout, submission ------------------------------------------------

    def _targets(self, plugin: TaskPlugin, data: Path) -> tuple[list[str], list[np.ndarray]]:
        cases = plugin.list_cases(data, "test")
        return [c.case_id for c in cases], [plugin.read_target(c) for c in cases]

    def _rois(self, plugin: TaskPlugin, data: Path) -> list[np.ndarray | None]:
        return [plugin.read_roi(c) for c in plugin.list_cases(data, "test")]

    def test_ground_truth_scores_perfectly(self, plugin: TaskPlugin, data: Path) -> None:
        ids, targets = self._targets(plugin, data)
        probs = [perfect_probabilities(plugin, t) for t in targets]
        result = plugin.metric(plugin.name, targets, targets, ids, probabilities=probs, rois=self._rois(plugin, data))
        assert result.leaderboard[plugin.metric.primary] == pytest.approx(1.0)
        assert result.cases == len(ids)

    def test_class_score_is_what_the_leaderboard_averages(self, plugin: TaskPlugin, data: Path) -> None:
        if plugin.kind != TaskKind.MULTILABEL_SEGMENTATION:
            pytest.skip("threshold tuning (which calls class_score) is for multi-label segmentation")
        ids, targets = self._targets(plugin, data)
        rng = np.random.default_rng(0)
        predictions = [(rng.random(t.shape) < 0.3).astype(np.uint8) | t for t in targets]
        probs = [p.astype(np.float32) for p in predictions]
        # class_score has no field of view: tuning zeroes both sides outside it first, as here.
        rois = self._rois(plugin, data)
        predictions = [p if r is None else p * r for p, r in zip(predictions, rois, strict=True)]
        result = plugin.metric(plugin.name, predictions, targets, ids, probabilities=probs, rois=rois)
        for c, spec in enumerate(plugin.classes):
            expected = result.per_class[spec.key][plugin.metric.class_primary]
            inside = [t[c] if r is None else t[c] * r for t, r in zip(targets, rois, strict=True)]
            got = plugin.metric.class_score(c, [p[c] for p in predictions], inside)
            assert got == pytest.approx(expected, nan_ok=True)

    def test_prediction_folder_and_submission_round_trip(self, plugin: TaskPlugin, data: Path, tmp_path: Path) -> None:
        ids, targets = self._targets(plugin, data)
        pred = tmp_path / "pred"
        for case_id, target in zip(ids, targets, strict=True):
            plugin.write_prediction(pred, case_id, target, perfect_probabilities(plugin, target))
        read = plugin.read_predictions(pred, ids)
        assert all(np.array_equal(a, b) for a, b in zip(read, targets, strict=True))
        submission = plugin.write_submission(
            pred, tmp_path / f"submission{plugin.submission_suffix}", **self.submission_options
        )
        back = plugin.read_predictions(submission, ids)
        assert all(np.array_equal(a, b) for a, b in zip(back, targets, strict=True))
        assert evaluate_predictions(plugin, submission, data, "test").leaderboard[plugin.metric.primary] == 1.0

    def test_per_case_rows_carry_the_case_figure(self, plugin: TaskPlugin, data: Path) -> None:
        ids, targets = self._targets(plugin, data)
        probs = [perfect_probabilities(plugin, t) for t in targets]
        result = plugin.metric(plugin.name, targets, targets, ids, probabilities=probs, rois=self._rois(plugin, data))
        figures = [row[plugin.metric.case_primary] for row in result.per_case]
        assert [row["case"] for row in result.per_case] == ids
        scored = [f for f in figures if not np.isnan(f)]
        assert scored and all(f == pytest.approx(1.0) for f in scored)  # a perfect case is at the top of the scale

    def test_report_shows_a_trained_bundle_s_prediction(
        self, plugin: TaskPlugin, data: Path, run: Path, tmp_path: Path
    ) -> None:
        images = plugin.list_cases(data, "test")[0].image.parent
        predict_folder(plugin, [run], images, tmp_path / "pred", tta="none", device="cpu")
        out = write_report(plugin, tmp_path / "pred", data, tmp_path / "report", models=[run], shown=1, pdf=True)
        page = (out / REPORT_FILES["html"]).read_text()
        assert not re.search(r"""(src|href)=["']?(https?:|//)""", page), "the page must open offline"
        assert all(name in PLOTS for name in plugin.report_plots)
        # one <img> per plot, per drawn case (the worst and the best) and per bundle's training curves
        assert page.count("<img ") == len(plugin.report_plots) + 2 + 1
        rows = list(csv.DictReader((out / REPORT_FILES["csv"]).open()))
        assert len(rows) == self.sample_test_cases
        key = plugin.metric.case_primary
        values = [float(r[key]) for r in rows if r[key] != ""]
        assert values == sorted(values)  # worst first
        pages = len(PdfReader(out / REPORT_FILES["pdf"]).pages)
        # summary, plots, the per-case table, the two drawn cases, the curves and the model's settings
        assert pages >= 1 + len(plugin.report_plots) + 1 + 2 + 2

    def test_missing_prediction_names_the_case(self, plugin: TaskPlugin, data: Path, tmp_path: Path) -> None:
        ids, targets = self._targets(plugin, data)
        pred = tmp_path / "pred"
        for case_id, target in zip(ids[1:], targets[1:], strict=True):
            plugin.write_prediction(pred, case_id, target, perfect_probabilities(plugin, target))
        with pytest.raises(EyegcError, match=ids[0]):
            evaluate_predictions(plugin, pred, data, "test")

    # -- training, bundle, inference ----------------------------------------------------------

    def test_trained_bundle_predicts_in_the_prediction_layout(
        self, plugin: TaskPlugin, data: Path, run: Path, tmp_path: Path
    ) -> None:
        bundle = load_bundle(run, task=plugin.name)
        assert len(bundle.folds) == 2
        tunable = plugin.kind != TaskKind.MULTICLASS_SEGMENTATION  # softmax label maps take the argmax
        assert bundle.config.postprocessing.tuned is tunable
        images = plugin.list_cases(data, "test")[0].image.parent
        out = tmp_path / "pred"
        summary = predict_folder(plugin, [run], images, out, tta="none", device="cpu")
        assert summary["members"] == 2
        ids = [c.case_id for c in plugin.list_cases(data, "test")]
        predictions = plugin.read_predictions(out, ids)
        assert len(predictions) == len(ids)
        result = evaluate_predictions(plugin, out, data, "test")
        assert 0.0 <= result.leaderboard[plugin.metric.primary] <= 1.0
