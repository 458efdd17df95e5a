"""The DRAC22 Task 2/3 submission CSV: exact format, round trip through evaluate, checks before writing."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from eyegc.challenges.drac22.grading_submission import read_drac22_grading_submission
from eyegc.common import cli
from eyegc.common.classification import write_classification_case
from eyegc.common.errors import DataError, SubmissionError
from eyegc.common.plugin import ClassSpec
from eyegc.common.registry import get_task
from eyegc.common.sample_data import write_sample_data

HEADS = (ClassSpec(key="grade", name="DR grade", num_classes=3),)


def _predictions(folder: Path, rows: dict[str, tuple[int, list[float]]]) -> Path:
    for case_id, (grade, probs) in rows.items():
        write_classification_case(folder, case_id, HEADS, np.array([grade]), np.array([probs]))
    return folder


def test_the_csv_is_exactly_the_organisers_format(tmp_path: Path) -> None:
    pred = _predictions(
        tmp_path / "pred", {"1299": (2, [0.1, 0.2, 0.7]), "086": (0, [0.5, 0.25, 0.25]), "402": (1, [0.2, 0.6, 0.2])}
    )
    out = get_task("drac22-task3").write_submission(pred, tmp_path / "my_team.csv")
    assert out.read_bytes() == (
        b"case,class,P0,P1,P2\n086.png,0,0.5,0.25,0.25\n402.png,1,0.2,0.6,0.2\n1299.png,2,0.1,0.2,0.7\n"
    )


def test_rows_are_divided_by_their_sum(tmp_path: Path) -> None:
    pred = _predictions(tmp_path / "pred", {"086": (1, [0.2, 0.4, 0.2])})  # sums to 0.8 (rounded JSON, say)
    out = get_task("drac22-task3").write_submission(pred, tmp_path / "t.csv")
    grades, probs = read_drac22_grading_submission(out, ["086"])
    assert grades.tolist() == [[1]] and probs[0, 0].tolist() == pytest.approx([0.25, 0.5, 0.25])


def test_a_perfect_submission_scores_one_through_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plugin = get_task("drac22-task2")
    data = write_sample_data(plugin, tmp_path / "data", cases=1, test_cases=6, seed=4)
    cases = plugin.list_cases(data, "test")
    rows = {c.case_id: (c.labels["quality"], np.eye(3)[c.labels["quality"]].tolist()) for c in cases}
    for case_id, (grade, probs) in rows.items():
        write_classification_case(tmp_path / "pred", case_id, plugin.classes, np.array([grade]), np.array([probs]))
    images = cases[0].image.parent
    csv = tmp_path / "team.csv"
    assert (
        cli.main(
            [
                "submission",
                plugin.name,
                "--pred",
                str(tmp_path / "pred"),
                "--out",
                str(csv),
                "--option",
                f"images={images}",
            ]
        )
        == 0
    )
    assert (
        cli.main(["evaluate", plugin.name, "--pred", str(csv), "--gt", str(data), "--json", str(tmp_path / "s.json")])
        == 0
    )
    board = json.loads((tmp_path / "s.json").read_text())["leaderboard"]
    assert board == {"kappa": 1.0, "auc": 1.0, "accuracy": 1.0}


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda p, i: (p / "086.json").unlink(), "has no prediction for 1 test image(s): 086"),
        (lambda p, i: shutil.copy(p / "402.json", p / "7.json"), "predicts 1 image(s) not in"),
    ],
)
def test_every_test_image_exactly_once(tmp_path: Path, change, says: str) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for name in ("086", "402"):
        (images / f"{name}.png").write_bytes(b"")
    pred = _predictions(tmp_path / "pred", {"086": (0, [1, 0, 0]), "402": (1, [0, 1, 0])})
    change(pred, images)
    with pytest.raises(SubmissionError, match=re.escape(says)):
        get_task("drac22-task3").write_submission(pred, tmp_path / "t.csv", images=images)
    assert not (tmp_path / "t.csv").exists()


def test_the_file_must_be_a_csv_and_predictions_must_exist(tmp_path: Path) -> None:
    plugin = get_task("drac22-task3")
    with pytest.raises(SubmissionError, match="a CSV named after the team"):
        plugin.write_submission(tmp_path, tmp_path / "t.zip")
    with pytest.raises(SubmissionError, match="holds no predictions"):
        plugin.write_submission(tmp_path, tmp_path / "t.csv")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("case,class,P0,P1\n086.png,0,1,0\n", "the header must be case,class,P0,P1,P2"),
        ("case,class,P0,P1,P2\n086.png,0,0.5,0.4,0.2\n402.png,1,0,1,0\n", "line 2: the probabilities sum to 1.1"),
        ("case,class,P0,P1,P2\n086.png,3,1,0,0\n402.png,1,0,1,0\n", "line 2: class '3' is not a grade 0-2"),
        ("case,class,P0,P1,P2\n086.png,0,1,0,0\n086,0,1,0,0\n", "line 3: 086 is listed twice (also on line 2)"),
        ("case,class,P0,P1,P2\n086.png,0,1,0,0\n", "no row for 402"),
        ("case,class,P0,P1,P2\n086.png,0,1,0,0\n402.png,1,0,1,0\n5.png,1,0,1,0\n", "rows for images not in the set: 5"),
        ("case,class,P0,P1,P2\n086.png,0,x,0,0\n", "class and probabilities must be numbers"),
    ],
)
def test_a_bad_submission_names_file_and_line(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "team.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=re.escape(says)):
        read_drac22_grading_submission(path, ["086", "402"])


def test_the_organisers_example_rows_read(tmp_path: Path) -> None:
    # rows of submission_guidance/task_2_submission_example.csv: scientific notation, sums 1 +- 3e-8
    path = tmp_path / "team.csv"
    path.write_text("case,class,P0,P1,P2\n086.png,2,4.79E-05,0.009975418,0.989976704\n161.png,2,4.26E-15,2.38E-08,1\n")
    grades, probs = read_drac22_grading_submission(path, ["086", "161"])
    assert grades.tolist() == [[2], [2]] and probs[1, 0, 2] == 1.0


def test_an_unknown_option_is_refused_not_ignored(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred = _predictions(tmp_path / "pred", {"086": (0, [1, 0, 0])})
    args = ["submission", "drac22-task3", "--pred", str(pred), "--out", str(tmp_path / "t.csv")]
    (tmp_path / "images").mkdir()
    assert cli.main([*args, "--option", f"image={tmp_path / 'images'}"]) == 2  # a typo of images=
    assert "--option image is not an option of drac22-task3 submissions" in capsys.readouterr().err
    assert not (tmp_path / "t.csv").exists()
    assert cli.main([*args, "--team", "my_team"]) == 0  # --team is taken (the file name carries it)


def test_two_predictions_of_one_image_are_refused(tmp_path: Path) -> None:
    pred = _predictions(tmp_path / "pred", {"086": (0, [1, 0, 0]), "86": (1, [0, 1, 0])})
    with pytest.raises(SubmissionError, match="two predictions of image 086"):
        get_task("drac22-task3").write_submission(pred, tmp_path / "t.csv")


def test_a_name_without_its_zero_padding_gets_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "team.csv"
    path.write_text("case,class,P0,P1,P2\n86.png,0,1,0,0\n402.png,1,0,1,0\n")
    with pytest.raises(DataError, match=r"no row for 086; rows for images not in the set: 86 \(names keep the test"):
        read_drac22_grading_submission(path, ["086", "402"])


def test_an_unreadable_csv_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "team.csv"
    path.write_text('case,class,P0,P1,P2\n"086.png' + "x" * 200_000 + "\n")
    with pytest.raises(DataError, match="is no readable CSV"):
        read_drac22_grading_submission(path, ["086"])


def test_all_zero_probabilities_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plugin = get_task("drac22-task3")
    data = write_sample_data(plugin, tmp_path / "data", cases=1, test_cases=3, seed=4)
    for case in plugin.list_cases(data, "test"):
        write_classification_case(tmp_path / "pred", case.case_id, HEADS, np.array([0]), np.array([[0.0, 0.0, 0.0]]))
    assert cli.main(["evaluate", plugin.name, "--pred", str(tmp_path / "pred"), "--gt", str(data)]) == 2
    assert "case 086: its grade probabilities are all 0; predict the case again" in capsys.readouterr().err
