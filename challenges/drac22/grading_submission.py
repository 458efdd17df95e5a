"""The DRAC22 Task 2 and Task 3 submission: one CSV, ``case,class,P0,P1,P2`` (docs/REFERENCE.md §2).

From the organisers' guidance (repository zhuanjiao2222/DRAC2022, ``submission_guidance/README.md``
and ``task_2_submission_example.csv``): a CSV named after the team, one row per test image named
as in the test set (``086.png``), the predicted class and the probability of each class, which
sum to 1; the predictions must match the test images one to one, or the submission is invalid.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from eyegc.challenges.drac22.layout import sorted_case_ids
from eyegc.common.classification import read_classification_cases
from eyegc.common.datafiles import decode_table_text, index_files
from eyegc.common.errors import DataError, SubmissionError
from eyegc.common.imageio import atomic_output_file, split_image_suffix
from eyegc.common.plugin import ClassSpec

__all__ = ["read_drac22_grading_submission", "submission_header", "write_drac22_grading_submission"]


def submission_header(grades: int) -> list[str]:
    """``case,class,P0,...``: the organisers' header."""
    return ["case", "class", *(f"P{g}" for g in range(grades))]


def _probabilities_sum_to_one(row: np.ndarray) -> bool:
    # What scikit-learn's roc_auc_score demands of multi-class scores (numpy.allclose with its defaults).
    return bool(np.allclose(1.0, row.sum()))


def _check_images(ids: list[str], images: Path | None, pred: Path) -> None:
    """Every test image has exactly one prediction and every prediction an image."""
    if images is None:
        return
    if not Path(images).is_dir():
        raise SubmissionError(f"--option images={images} is not a folder; give the testing images folder")
    expected = set(index_files(Path(images), (".png",), what="DRAC22 image"))
    missing, extra = sorted_case_ids(list(expected - set(ids))), sorted_case_ids(list(set(ids) - expected))
    if missing:
        raise SubmissionError(f"{pred} has no prediction for {len(missing)} test image(s): {', '.join(missing[:5])}")
    if extra:
        raise SubmissionError(f"{pred} predicts {len(extra)} image(s) not in {images}: {', '.join(extra[:5])}")


def write_drac22_grading_submission(
    pred: Path,
    out: Path,
    heads: Sequence[ClassSpec],
    images: Path | str | None = None,
    overwrite: bool = False,
    team: str | None = None,
) -> Path:
    """Write the submission CSV from a folder of per-case JSON predictions; nothing is written on any error.

    Rows follow the numeric order of the names; each row's probabilities are divided by their sum
    (the JSON keeps six decimals) and written in full precision, so they sum to 1. ``images`` (the
    testing images folder) checks that every test image is predicted exactly once. Name the file
    after the team, as the organisers ask (``--out TEAM.csv``); ``team`` is accepted as for the other
    tasks and not used (the CSV has no team field).

    Raises:
        SubmissionError: no predictions, a missing or malformed one, probabilities that are no
            distribution, or (with ``images``) a test image without a prediction or the reverse.
    """
    pred, out = Path(pred), Path(out)
    if out.suffix.lower() != ".csv":
        raise SubmissionError(f"--out {out}: the DRAC22 submission is a CSV named after the team, e.g. TEAM.csv")
    if not pred.is_dir():
        raise SubmissionError(f"prediction folder not found: {pred} (write it with `eyegc predict`)")
    ids = sorted_case_ids([p.stem for p in pred.glob("*.json") if not p.name.startswith(".")])
    twice = [b for a, b in itertools.pairwise(ids) if int(a) == int(b)]
    if twice:
        raise SubmissionError(
            f"{pred} holds two predictions of image {int(twice[0]):03d} (zero-padded and not); keep one"
        )
    if not ids:
        raise SubmissionError(f"{pred} holds no predictions (<image>.json); run `eyegc predict` first")
    _check_images(ids, None if images is None else Path(images), pred)
    try:
        grades, probs = read_classification_cases(pred, ids, heads)
    except DataError as exc:
        raise SubmissionError(str(exc)) from None
    width = int(heads[0].num_classes or 0)
    rows = [submission_header(width)]
    # The JSON keeps six decimals; the reader hands them over as float32: round back to what the file says.
    exact = np.round(probs[:, 0, :width].astype(np.float64), 6)
    for case_id, grade, row in zip(ids, grades[:, 0], exact, strict=True):
        if not row.sum() > 0:
            raise SubmissionError(f"{pred / (case_id + '.json')}: its probabilities are all 0; predict the case again")
        row = row / row.sum()
        rows.append([f"{case_id}.png", str(int(grade)), *(repr(float(p)) for p in row)])
    with atomic_output_file(out, overwrite=overwrite) as tmp, tmp.open("w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)
    return out


def _header_columns(cells: list[str], grades: int, where: str) -> list[int]:
    names = [c.strip().lower() for c in cells]
    wanted = [n.lower() for n in submission_header(grades)]
    if any(n not in names for n in wanted):
        raise DataError(f"{where}: the header must be {','.join(submission_header(grades))}; got {','.join(cells)!r}")
    return [names.index(n) for n in wanted]


def _parse_row(cells: list[str], columns: list[int], grades: int, where: str) -> tuple[str, int, np.ndarray]:
    if len(cells) <= max(columns):
        raise DataError(f"{where}: expected {grades + 2} cells (case, class, P0 ...); got {','.join(cells)!r}")
    stem, suffix = split_image_suffix(cells[columns[0]].strip())
    name = stem if suffix.lower() == ".png" else cells[columns[0]].strip()
    try:
        grade = float(cells[columns[1]])
        probs = np.array([float(cells[c]) for c in columns[2:]], dtype=np.float64)
    except ValueError:
        raise DataError(f"{where}: class and probabilities must be numbers; got {','.join(cells)!r}") from None
    if not grade.is_integer() or not 0 <= grade < grades:
        raise DataError(f"{where}: class {cells[columns[1]]!r} is not a grade 0-{grades - 1}")
    if not np.all(np.isfinite(probs)) or (probs < 0).any() or (probs > 1).any():
        raise DataError(f"{where}: the probabilities must be numbers from 0 to 1")
    if not _probabilities_sum_to_one(probs):
        raise DataError(f"{where}: the probabilities sum to {probs.sum():.6g}; they must sum to 1 (the guidance)")
    return name, int(grade), probs


def read_drac22_grading_submission(
    path: Path, case_ids: Sequence[str], grades: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Grades ``(N, 1)`` int64 and probabilities ``(N, 1, grades)`` float64 of ``case_ids`` from a submission CSV.

    Raises:
        DataError: a malformed file, a case listed twice or not at all, or rows for images that are
            not among ``case_ids`` (the organisers require a one-to-one match).
    """
    path = Path(path)
    text = decode_table_text(path.read_bytes(), str(path))
    try:
        rows = [(n, row) for n, row in enumerate(csv.reader(text.lstrip("\ufeff").splitlines()), 1) if any(row)]
    except csv.Error as exc:
        raise DataError(f"{path} is no readable CSV ({exc}); check its quotes") from None
    if not rows:
        raise DataError(f"{path} is empty; the first line is {','.join(submission_header(grades))}")
    columns = _header_columns(rows[0][1], grades, f"{path}, line {rows[0][0]}")
    found: dict[str, tuple[int, int, np.ndarray]] = {}
    for number, cells in rows[1:]:
        name, grade, probs = _parse_row(cells, columns, grades, f"{path}, line {number}")
        if name in found:
            raise DataError(f"{path}, line {number}: {name} is listed twice (also on line {found[name][0]})")
        found[name] = (number, grade, probs)
    missing = [c for c in case_ids if c not in found]
    extra = sorted_case_ids([n for n in found if n not in set(case_ids)])
    if missing or extra:
        problems = [f"no row for {', '.join(missing[:5])}"] if missing else []
        problems += [f"rows for images not in the set: {', '.join(extra[:5])}"] if extra else []
        padded = {int(c) for c in missing} & {int(c) for c in extra}
        hint = " (names keep the test set's zero padding: 086.png, not 86.png)" if padded else ""
        raise DataError(f"{path}: {'; '.join(problems)}{hint}; the submission must match the test images one to one")
    out_grades = np.array([[found[c][1]] for c in case_ids], dtype=np.int64).reshape(len(case_ids), 1)
    out_probs = np.array([[found[c][2]] for c in case_ids], dtype=np.float64).reshape(len(case_ids), 1, grades)
    return out_grades, out_probs
