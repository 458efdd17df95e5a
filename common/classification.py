"""Per-case prediction files of classification tasks (GOALS glaucoma, IDRiD grading).

A classification task has one head per :class:`~eyegc.common.plugin.ClassSpec` (``num_classes``
grades each). ``eyegc predict`` writes one JSON file per image so that a run can be interrupted
and resumed like a segmentation run; the plugin's submission writer turns the folder into the
official CSV. One file, ``<case_id>.json``::

    {"case": "IDRiD_001", "heads": {"dr": {"grade": 2, "probabilities": [0.1, 0.2, 0.6, 0.05, 0.05]},
                                    "dme": {"grade": 1, "probabilities": [0.2, 0.7, 0.1]}}}

In memory a case's prediction is ``grades`` ``(heads,)`` int64 and ``probabilities``
``(heads, max_num_classes)`` float32, zero-padded past a head's own number of classes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from eyegc.common.errors import DataError
from eyegc.common.plugin import ClassSpec

__all__ = ["max_num_classes", "read_classification_cases", "write_classification_case"]


def max_num_classes(heads: Sequence[ClassSpec]) -> int:
    """The widest head: the second dimension of a probabilities array."""
    sizes = [h.num_classes for h in heads]
    if not sizes or any(s is None or s < 2 for s in sizes):
        raise ValueError("every classification head needs num_classes >= 2")
    return int(max(sizes))  # type: ignore[type-var]


def write_classification_case(
    out: Path, case_id: str, heads: Sequence[ClassSpec], grades: np.ndarray, probabilities: np.ndarray
) -> Path:
    """Write ``out/<case_id>.json`` (see the module docstring); returns its path."""
    grades = np.asarray(grades).reshape(-1)
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(len(heads), -1)
    if grades.shape[0] != len(heads):
        raise ValueError(f"{len(grades)} grades for {len(heads)} heads")
    doc = {
        "case": case_id,
        "heads": {
            h.key: {
                "grade": int(grades[i]),
                "probabilities": [round(float(p), 6) for p in probabilities[i, : h.num_classes]],
            }
            for i, h in enumerate(heads)
        },
    }
    path = Path(out) / f"{case_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)
    return path


def read_classification_cases(
    folder: Path, case_ids: Sequence[str], heads: Sequence[ClassSpec]
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``<case_id>.json`` for every id.

    Returns:
        ``grades`` ``(N, heads)`` int64 and ``probabilities`` ``(N, heads, max_num_classes)`` float32.

    Raises:
        DataError: a file is missing, is not JSON, lacks a head, or holds a grade out of range.
    """
    folder = Path(folder)
    width = max_num_classes(heads)
    grades = np.zeros((len(case_ids), len(heads)), dtype=np.int64)
    probs = np.zeros((len(case_ids), len(heads), width), dtype=np.float32)
    for n, case_id in enumerate(case_ids):
        path = folder / f"{case_id}.json"
        if not path.is_file():
            raise DataError(f"{path}: no prediction for case {case_id} (run `eyegc predict` on its image)")
        try:
            doc = json.loads(path.read_text())
            for i, head in enumerate(heads):
                entry = doc["heads"][head.key]
                grade = _whole_number(entry["grade"], f"{head.key} grade")
                values = [_probability(v, head.key) for v in entry.get("probabilities", [])]
                if not 0 <= grade < head.num_classes:  # type: ignore[operator]
                    raise ValueError(f"{head.key} grade {grade} outside 0..{head.num_classes - 1}")  # type: ignore[operator]
                if values and len(values) != head.num_classes:
                    raise ValueError(f"{head.key} has {len(values)} probabilities, expected {head.num_classes}")
                grades[n, i] = grade
                if values:
                    probs[n, i, : len(values)] = values
                else:
                    probs[n, i, grade] = 1.0
        except (ValueError, KeyError, TypeError, OverflowError) as exc:
            raise DataError(f"{path}: not an eyegc classification prediction ({exc})") from None
    return grades, probs


def _whole_number(value: object, what: str) -> int:
    """A JSON grade: a whole number (``2`` or ``2.0``), not a bool, a fraction, NaN or a string."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise ValueError(f"{what} must be a whole number, got {value!r}")
    return int(value)


def _probability(value: object, key: str) -> float:
    """A JSON probability: a finite number in [0, 1] (NaN, Infinity, -0.1 or "0.3" are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{key} probabilities must be numbers from 0 to 1, got {value!r}")
    return float(value)
