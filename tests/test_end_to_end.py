"""The whole pipeline on generated data learns: the model beats trivial predictors clearly."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from eyegc.common.cli import main
from eyegc.common.demo import demo_input_size, run_demo
from eyegc.common.registry import get_task


@pytest.mark.slow
def test_demo_pipeline_beats_trivial_predictors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plugin = get_task("drac22-task1")
    demo = run_demo(plugin, tmp_path / "demo", cases=14, test_cases=6, training={"epochs": 10}, device="cpu")
    score = demo.result.leaderboard["mean_dsc"]
    best_trivial = max(demo.baselines.values())
    assert demo.baselines["all_background"] == 0.0
    assert score > best_trivial + 0.08, (score, demo.baselines, demo.result.per_class)

    # The CLI's evaluate on the submission zip reproduces the same leaderboard, and writes JSON/CSV.
    capsys.readouterr()
    json_path, csv_path = tmp_path / "scores.json", tmp_path / "cases.csv"
    args = ["evaluate", "drac22-task1", "--pred", str(demo.submission), "--gt", str(demo.data)]
    assert main([*args, "--json", str(json_path), "--csv", str(csv_path)]) == 0
    assert "mean_dsc" in capsys.readouterr().out
    scores = json.loads(json_path.read_text())
    assert set(scores) == {"task", "leaderboard", "per_class", "cases"}
    assert scores["leaderboard"]["mean_dsc"] == pytest.approx(score)
    assert set(scores["per_class"]) == {"irma", "npa", "nv"}
    assert scores["cases"] == 6
    assert csv_path.read_text().splitlines()[0] == "case,irma_dsc,irma_iou,npa_dsc,npa_iou,nv_dsc,nv_iou,mean_dsc"
    with zipfile.ZipFile(demo.submission) as archive:
        assert archive.namelist() == ["eyegc_demo/1.nii.gz", "eyegc_demo/2.nii.gz", "eyegc_demo/3.nii.gz"]


@pytest.mark.parametrize(
    ("task_size", "demo_size"),
    [((512, 768), (128, 192)), ((400, 552), (128, 192)), ((512, 512), (128, 128)), ((900, 300), (384, 128))],
)
def test_the_classification_demo_keeps_the_task_s_aspect(
    task_size: tuple[int, int], demo_size: tuple[int, int]
) -> None:
    assert demo_input_size(task_size) == demo_size
