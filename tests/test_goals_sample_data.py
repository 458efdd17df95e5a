"""Synthetic GOALS data: official layout, masks tied to the drawn bands, thinner RNFL in glaucoma."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from eyegc.challenges.goals.encoding import read_goals_image, read_layer_mask
from eyegc.challenges.goals.layout import list_goals_glaucoma_cases, list_goals_layer_cases, read_gc_labels
from eyegc.challenges.goals.metric import layer_thickness
from eyegc.challenges.goals.postprocessing import anatomical_layers
from eyegc.challenges.goals.sample_data import make_goals_case, make_goals_sample_data
from openpyxl import load_workbook


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("goals") / "data"
    root.mkdir()
    make_goals_sample_data(root, cases=4, test_cases=2, seed=5)
    return root


def test_layout_is_read_by_the_official_readers(data: Path) -> None:
    train = list_goals_layer_cases(data, "train")
    test = list_goals_layer_cases(data, "test")
    assert [c.case_id for c in train] == ["0001", "0002", "0003", "0004"]
    assert [c.case_id for c in test] == ["0101", "0102"]
    assert (data / "Validation" / "Validation_GC_GT.xlsx").is_file()
    labels = [c.labels["glaucoma"] for c in list_goals_glaucoma_cases(data, "test")]  # type: ignore[index]
    assert labels == [0, 1]  # the first two cases of a split hold both classes
    assert [c.labels["glaucoma"] for c in list_goals_glaucoma_cases(data, "train")][:2] == [0, 1]  # type: ignore[index]
    sheet = load_workbook(data / "Train" / "Train_GC_GT.xlsx", read_only=True).worksheets[0]
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0] == ("ImgName", "GC_Label") and rows[1][0] == 1  # integers, as in the real sheet


def test_masks_match_the_drawn_bands(data: Path) -> None:
    for case in list_goals_layer_cases(data, "train")[:2]:
        image = read_goals_image(case.image)[0].astype(np.float64)
        index = read_layer_mask(case.labels["layers"])[0]  # type: ignore[index]
        assert set(np.unique(index).tolist()) == {0, 1, 2, 3}
        assert np.array_equal(anatomical_layers(index), index)  # every column in anatomical order
        top = np.argmax(index == 1, axis=0)  # the first RNFL row of each column
        vitreous = np.arange(index.shape[0])[:, None] < top[None, :]
        rnfl, gcipl, choroid = (image[index == c].mean() for c in (1, 2, 3))
        assert rnfl > gcipl > image[vitreous].mean() + 50
        assert choroid > image[vitreous].mean() + 40
        assert np.all(layer_thickness(index, 1) > 0) and np.all(layer_thickness(index, 3) > 0)


def test_glaucoma_cases_have_a_thinner_rnfl() -> None:
    def mean_rnfl(glaucoma: bool, seed: int) -> float:
        _, mask = make_goals_case(np.random.default_rng(seed), glaucoma)
        return float((mask == 0).sum(axis=0).mean())

    normal = [mean_rnfl(False, s) for s in range(4)]
    glaucoma = [mean_rnfl(True, s) for s in range(4, 8)]
    assert max(glaucoma) < min(normal)
    assert np.mean(glaucoma) < 0.75 * np.mean(normal)


def test_same_seed_gives_identical_files_and_labels_near_the_rate(tmp_path: Path) -> None:
    first, second, more = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for root in (first, second, more):
        root.mkdir()
    make_goals_sample_data(first, cases=3, test_cases=1, seed=2, width=220, height=400)
    make_goals_sample_data(second, cases=3, test_cases=1, seed=2, width=220, height=400)
    make_goals_sample_data(more, cases=40, test_cases=1, seed=2, width=220, height=400)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(files) == 4 * 2 + 2
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel
    for rel in ("Train/Image/0002.png", "Train/Layer_Masks/0003.png", "Validation/Image/0101.png"):
        assert (first / rel).read_bytes() == (more / rel).read_bytes(), rel  # more cases keep the first ones
    rate = np.mean(list(read_gc_labels(more / "Train" / "Train_GC_GT.xlsx").values()))
    assert 0.25 <= rate <= 0.65
