"""``eyegc report``: the order of the cases, what the page holds, and bad requests refused before the work."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import pytest
from eyegc.common import cli
from eyegc.common.bundle_config import HISTORY_NAME
from eyegc.common.inference import predict_folder
from eyegc.common.registry import get_task
from eyegc.common.report import REPORT_FILES, write_report
from eyegc.common.report.content import worst_first
from eyegc.common.report.runs import read_run, training_figure
from eyegc.common.sample_data import write_sample_data
from pypdf import PdfReader

TASK = "drac22-task1"


@pytest.fixture(scope="module")
def predicted(drac22_run: Path, drac22_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    plugin = get_task(TASK)
    out = tmp_path_factory.mktemp("report") / "pred"
    images = plugin.list_cases(drac22_data, "test")[0].image.parent
    predict_folder(plugin, [drac22_run], images, out, tta="none", device="cpu")
    return out


def _report(*args: str) -> int:
    return cli.main(["report", TASK, *args])


def test_worst_first_puts_unscored_cases_last_and_breaks_ties_by_case() -> None:
    rows = [
        {"case": "d", "f": 0.5},
        {"case": "a", "f": math.nan},
        {"case": "c", "f": 0.2},
        {"case": "b", "f": 0.5},
        {"case": "e"},
    ]
    assert [r["case"] for r in worst_first(rows, "f")] == ["c", "b", "d", "a", "e"]


def test_the_page_holds_the_leaderboard_of_eyegc_evaluate_and_every_case_once(
    predicted: Path, drac22_data: Path, drac22_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    assert (
        _report("--pred", str(predicted), "--gt", str(drac22_data), "--model", str(drac22_run), "--out", str(out)) == 0
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(v for k, v in REPORT_FILES.items() if k != "pdf")
    assert (
        cli.main(
            ["evaluate", TASK, "--pred", str(predicted), "--gt", str(drac22_data), "--json", str(tmp_path / "e.json")]
        )
        == 0
    )
    assert (out / REPORT_FILES["json"]).read_bytes() == (tmp_path / "e.json").read_bytes()
    page = (out / REPORT_FILES["html"]).read_text()
    # three test cases and --cases 4: each drawn once, the lower half as the worst, the rest as the best
    titles = re.findall(r'alt="((?:worst|best) \d+: case [^,"]+)', page)
    assert [t.split(":")[0] for t in titles] == ["worst 1", "worst 2", "best 1"]
    assert len({t.split("case ")[1] for t in titles}) == 3
    assert "<script" in page and "table.sortable" in page
    assert drac22_run.name in page and "learning_rate" in page  # the run's settings


def test_a_model_that_is_no_bundle_fails_before_any_output(
    predicted: Path, drac22_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    assert _report("--pred", str(predicted), "--gt", str(drac22_data), "--model", str(tmp_path), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("eyegc: error:") and str(tmp_path) in err
    assert not out.exists() and not list(tmp_path.glob(".report.partial-*"))


def test_an_existing_out_folder_is_kept_unless_overwrite(
    predicted: Path, drac22_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    out.mkdir()
    (out / "mine.txt").write_text("the user's")
    args = ["--pred", str(predicted), "--gt", str(drac22_data), "--out", str(out), "--cases", "0"]
    assert _report(*args) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "mine.txt").read_text() == "the user's"
    assert _report(*args, "--overwrite") == 0
    assert not (out / "mine.txt").exists() and (out / REPORT_FILES["html"]).exists()


def test_a_prediction_missing_a_case_names_it(
    predicted: Path, drac22_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(predicted, partial)
    missing = get_task(TASK).list_cases(drac22_data, "test")[0].case_id
    for path in partial.rglob(f"{missing}.*"):
        path.unlink()
    out = tmp_path / "report"
    assert _report("--pred", str(partial), "--gt", str(drac22_data), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("eyegc: error:") and missing in err
    assert not out.exists()


def test_out_inside_the_prediction_is_refused(
    predicted: Path, drac22_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _report("--pred", str(predicted), "--gt", str(drac22_data), "--out", str(predicted / "report")) == 2
    assert "--out" in capsys.readouterr().err


def test_a_bundle_of_another_task_is_refused(
    predicted: Path, drac22_data: Path, drac22_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "--pred",
        str(predicted),
        "--gt",
        str(drac22_data),
        "--model",
        str(drac22_run),
        "--out",
        str(tmp_path / "r"),
    ]
    assert cli.main(["report", "goals-layers", *args]) == 2
    assert f"{drac22_run} was trained for 'drac22-task1', not 'goals-layers'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "history",
    ['{"loss": [1, 2], "metric": [0.1, 0.2, 0.3]}', '{"loss": ["a", null], "metric": [0.1, 0.2]}', "[1, 2]", "{"],
)
def test_a_fold_history_that_does_not_fit_leaves_only_that_fold_s_curves_out(
    drac22_run: Path, tmp_path: Path, history: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(drac22_run, run)
    (run / "fold_0" / HISTORY_NAME).write_text(history)
    summary = read_run(run, TASK)
    assert sorted(summary.histories) == [1]
    training_figure(summary).clear()


def test_case_names_with_dollar_signs_are_drawn_as_text(tmp_path: Path) -> None:
    plugin = get_task("goals-layers")  # GOALS names are free; matplotlib reads $...$ as a formula unless told not to
    data = write_sample_data(plugin, tmp_path / "data", cases=1, test_cases=2, seed=3)
    case = plugin.list_cases(data, "test")[0]
    odd = "x$\\frac$"
    for path in (case.image, case.labels["layers"]):
        path.rename(path.with_name(f"{odd}.png"))
    shutil.copytree(case.labels["layers"].parent, tmp_path / "pred" / "Layer_Segmentations")  # a perfect prediction
    out = write_report(plugin, tmp_path / "pred", data, tmp_path / "report", shown=1, pdf=True)
    assert f"case {odd}" in (out / REPORT_FILES["html"]).read_text()
    assert odd in "".join(page.extract_text() for page in PdfReader(out / REPORT_FILES["pdf"]).pages)
