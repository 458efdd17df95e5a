"""Issue 16, rule 1: a local leaderboard that never lies.

Everything the scorer and the trainer read is validated as strictly as predictions, for every
task where a rule applies: suffixes in any case are read (never ignored), files of another type,
duplicates, ground truth with other values or another size and missing class folders are errors
naming the file and the fix, and ``--allow-missing-class`` gives the n/a-class result.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_train_config
from eyegc.common.bundle import read_config
from eyegc.common.cli import main
from eyegc.common.datafiles import check_mask_values, index_files, mask_values
from eyegc.common.errors import DataError
from eyegc.common.inference import list_images
from eyegc.common.plugin import Case, TaskKind, TaskPlugin
from eyegc.common.registry import available_tasks, get_task
from eyegc.common.sample_data import write_sample_data
from eyegc.common.training import train
from PIL import Image

TASKS = available_tasks()  # every registered task: a new plugin inherits each rule
#: Tasks sharing one synthetic layout reuse its data.
SAME_DATA = {"drive-vessels-rgb": "drive-vessels", "goals-glaucoma": "goals-layers"}
#: (task, label key) of every kind of ground-truth mask file.
MASK_KINDS = (
    ("drac22-task1", "npa"),
    ("drive-vessels", "vessel"),
    ("drive-vessels", "fov"),
    ("drive-vessels-rgb", "vessel"),
    ("goals-layers", "layers"),
    ("idrid-lesions", "he"),
    ("idrid-lesions-od", "od"),
)
#: (task, class key, its ground-truth folder under the testing split's ground-truth root).
CLASS_FOLDER_TASKS = (
    ("drac22-task1", "nv", "3. Neovascularization"),
    ("idrid-lesions", "se", "4. Soft Exudates"),
    ("idrid-lesions-od", "od", "5. Optic Disc"),
)
REAL = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Task -> a small synthetic data set (3 training + 3 testing cases), made once per module."""
    made: dict[str, Path] = {}

    def make(task: str) -> Path:
        source = SAME_DATA.get(task, task)
        if source not in made:
            root = tmp_path_factory.mktemp(source) / "data"
            made[source] = write_sample_data(get_task(source), root, cases=3, test_cases=3, seed=0)
        return made[source]

    return make


@pytest.fixture
def copy_of(pristine: Callable[[str], Path], tmp_path: Path) -> Callable[[str], tuple[TaskPlugin, Path]]:
    """Task -> (plugin, a writable copy of its sample data)."""

    def make(task: str) -> tuple[TaskPlugin, Path]:
        return get_task(task), Path(shutil.copytree(pristine(task), tmp_path / "data"))

    return make


def _case_with(plugin: TaskPlugin, root: Path, key: str, split: str = "test") -> tuple[Case, Path]:
    """The first case of ``split`` with a ground-truth file for ``key``, and that file."""
    for case in plugin.list_cases(root, split):
        path = (case.labels or {}).get(key)
        if isinstance(path, Path):
            return case, path
    raise AssertionError(f"no {key} file in the sample data")


def _case(plugin: TaskPlugin, root: Path, case_id: str, **options: bool) -> Case:
    return next(c for c in plugin.list_cases(root, "test", **options) if c.case_id == case_id)


def _read_truth(plugin: TaskPlugin, case: Case) -> tuple[np.ndarray, np.ndarray | None]:
    return plugin.read_target(case), plugin.read_roi(case)


def _grey(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L"))


def _rewrite(path: Path, array: np.ndarray) -> None:
    """Write an 8-bit grey mask in the file's own format (PNG, TIFF or GIF), and check it reads back."""
    Image.fromarray(array.astype(np.uint8)).save(path)
    assert np.array_equal(_grey(path), array)


def _with_suffix_case(path: Path, suffix: str) -> Path:
    stem = path.name[: -len(path.suffix)]
    return path.with_name(stem + suffix)


def _one_error_line(err: str) -> str:
    """The single line a terminal shows on stderr (a progress bar that clears itself leaves none)."""
    lines = [line for line in err.split("\n") if line.strip()]
    assert len(lines) == 1, err
    line = lines[0].rsplit("\r", 1)[-1]
    assert line.startswith("eyegc: error: "), err
    return line


def _drac22_with_perfect_predictions(
    copy_of: Callable, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[TaskPlugin, Path, Path]:
    """A copy of the DRAC22 sample data and predictions equal to its test ground truth."""
    plugin, root = copy_of("drac22-task1")
    pred = tmp_path / "pred"
    _perfect_predictions(plugin, root, pred)
    capsys.readouterr()  # the sample data's progress bars
    return plugin, root, pred


def _assert_a_twin_is_refused(plugin: TaskPlugin, root: Path, path: Path) -> None:
    """A copy of ``path`` with its suffix in upper case is a second file of one case: an error naming both."""
    twin = _with_suffix_case(path, path.suffix.upper())
    shutil.copy(path, twin)
    with pytest.raises(DataError, match="keep one file per image") as error:
        plugin.list_cases(root, "test")
    assert f"holds both {twin.name} and {path.name}" in str(error.value)


def _perfect_predictions(plugin: TaskPlugin, root: Path, out: Path, **options: bool) -> None:
    for case in plugin.list_cases(root, "test", **options):
        target = plugin.read_target(case)
        plugin.write_prediction(out, case.case_id, target, target.astype(np.float32))


# -- file names: suffixes in any case, foreign types, duplicates ---------------------------------


@pytest.mark.parametrize(("task", "key"), MASK_KINDS)
def test_upper_case_mask_suffix_is_read(copy_of: Callable, task: str, key: str) -> None:
    plugin, root = copy_of(task)
    case, path = _case_with(plugin, root, key)
    before = _read_truth(plugin, case)
    upper = _with_suffix_case(path, path.suffix.upper())
    path.rename(upper)
    case = _case(plugin, root, case.case_id)
    assert case.labels is not None and case.labels[key] == upper
    target, roi = _read_truth(plugin, case)
    assert np.array_equal(target, before[0])
    assert (roi is None and before[1] is None) or np.array_equal(roi, before[1])


@pytest.mark.parametrize(("task", "key"), MASK_KINDS)
def test_mask_of_another_type_is_an_error(copy_of: Callable, task: str, key: str) -> None:
    plugin, root = copy_of(task)
    _, path = _case_with(plugin, root, key)
    foreign = _with_suffix_case(path, ".jpg")
    shutil.copy(path, foreign)
    with pytest.raises(DataError, match=r"not \.jpg; convert the file or move it out of the folder") as error:
        plugin.list_cases(root, "test")
    assert str(foreign) in str(error.value)


def test_drac22_tif_mask_names_the_png_format(copy_of: Callable) -> None:
    plugin, root = copy_of("drac22-task1")
    _, path = _case_with(plugin, root, "npa")
    shutil.copy(path, path.with_name("402.tif"))
    with pytest.raises(DataError) as error:
        plugin.list_cases(root, "test")
    assert str(error.value) == (
        f"{path.with_name('402.tif')}: DRAC22 ground-truth masks in this folder are .png files, not .tif; "
        "convert the file or move it out of the folder"
    )


@pytest.mark.parametrize(("task", "key"), MASK_KINDS)
def test_duplicate_masks_are_an_error_naming_both(copy_of: Callable, task: str, key: str) -> None:
    plugin, root = copy_of(task)
    _assert_a_twin_is_refused(plugin, root, _case_with(plugin, root, key)[1])


@pytest.mark.parametrize("task", TASKS)
def test_upper_case_image_suffix_is_read(copy_of: Callable, task: str) -> None:
    plugin, root = copy_of(task)
    first = plugin.list_cases(root, "test")[0]
    upper = _with_suffix_case(first.image, first.image.suffix.upper())
    first.image.rename(upper)
    cases = plugin.list_cases(root, "test")
    assert len(cases) == 3 and cases[0].case_id == first.case_id and cases[0].image == upper


@pytest.mark.parametrize("task", TASKS)
def test_duplicate_images_are_an_error_naming_both(copy_of: Callable, task: str) -> None:
    plugin, root = copy_of(task)
    _assert_a_twin_is_refused(plugin, root, plugin.list_cases(root, "test")[0].image)


@pytest.mark.parametrize("task", TASKS)
def test_image_of_another_type_is_an_error(copy_of: Callable, task: str) -> None:
    plugin, root = copy_of(task)
    image = plugin.list_cases(root, "test")[0].image
    foreign = _with_suffix_case(image, ".gif")
    shutil.copy(image, foreign)
    with pytest.raises(DataError, match=r"not \.gif") as error:
        plugin.list_cases(root, "test")
    assert str(foreign) in str(error.value)


@pytest.mark.parametrize("task", TASKS)
def test_hidden_and_junk_files_are_skipped(copy_of: Callable, task: str) -> None:
    plugin, root = copy_of(task)
    cases = plugin.list_cases(root, "test")
    image = cases[0].image
    (image.parent / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (image.parent / f"._{image.name}").write_bytes(b"\0\5\26\7")  # a macOS resource fork
    (image.parent / "Thumbs.db").write_bytes(b"junk")
    for path in (cases[0].labels or {}).values():
        if isinstance(path, Path):
            (path.parent / f"._{path.name}").write_bytes(b"\0\5\26\7")
    assert [c.case_id for c in plugin.list_cases(root, "test")] == [c.case_id for c in cases]


# -- mask contents: values and size ---------------------------------------------------------------


@pytest.mark.parametrize(("task", "key"), MASK_KINDS)
def test_ground_truth_with_other_values_is_an_error(copy_of: Callable, task: str, key: str) -> None:
    plugin, root = copy_of(task)
    case, path = _case_with(plugin, root, key)
    mask = _grey(path).copy()
    if task.startswith("goals"):
        mask[0, :4] = 81
        expected = "pixel values [81] are not GOALS layer values"
    else:
        mask = np.where(mask > 0, 255, 0).astype(np.uint8)
        mask[0, :3] = [1, 2, 3]  # values 0..3 in the background, as in the issue
        expected = "a ground-truth mask holds only the values 0/255 or 0/1; this one holds 0, 1, 2, 3, 255"
    _rewrite(path, mask)
    with pytest.raises(DataError) as error:
        _read_truth(plugin, case)
    assert str(error.value).startswith(f"{path}: ") and expected in str(error.value)


@pytest.mark.parametrize(("task", "key"), MASK_KINDS)
def test_ground_truth_of_another_size_is_an_error(copy_of: Callable, task: str, key: str) -> None:
    plugin, root = copy_of(task)
    case, path = _case_with(plugin, root, key)
    mask = _grey(path)
    _rewrite(path, mask[:-8])
    with pytest.raises(DataError, match=rf"{mask.shape[1]}x{mask.shape[0] - 8}") as error:
        _read_truth(plugin, case)
    assert path.name in str(error.value)


@pytest.mark.parametrize(("task", "key"), [k for k in MASK_KINDS if not k[0].startswith("goals")])
@pytest.mark.parametrize("values", [(0, 1), (0, 255), (0,), (255,)])
def test_binary_ground_truth_in_either_encoding_is_read(copy_of: Callable, task: str, key: str, values: tuple) -> None:
    if key == "fov" and values == (0,):
        pytest.skip("an all-0 field of view is refused (test_an_empty_field_of_view_is_an_error)")
    plugin, root = copy_of(task)
    case, path = _case_with(plugin, root, key)
    shape = _grey(path).shape
    mask = np.full(shape, values[0], np.uint8)
    mask[: shape[0] // 2, : shape[1] // 3] = values[-1]
    _rewrite(path, mask)
    target, roi = _read_truth(plugin, case)
    read = roi if key == "fov" else target[[c.key for c in plugin.classes].index(key)]
    assert np.array_equal(read.astype(np.uint8), (mask > 0).astype(np.uint8))


# -- class folders ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("task", "key", "folder"), CLASS_FOLDER_TASKS)
def test_missing_class_folder_is_an_error_naming_it(copy_of: Callable, task: str, key: str, folder: str) -> None:
    plugin, root = copy_of(task)
    _, path = _case_with(plugin, root, key)
    gt_root = path.parent.parent
    assert path.parent.name == folder
    path.parent.rename(gt_root / folder.replace("s", "z", 1))
    with pytest.raises(DataError) as error:
        plugin.list_cases(root, "test")
    message = str(error.value)
    assert repr(folder) in message and str(gt_root) in message and "--allow-missing-class" in message
    if key != "od":  # the optic disc folder has its own message: use the task without it
        assert f"unexpected folder(s) there: {folder.replace('s', 'z', 1)!r}" in message
    cases = plugin.list_cases(root, "test", allow_missing_class=True)
    assert [c.labels[key] for c in cases] == [None, None, None]


@pytest.mark.parametrize(("task", "key", "folder"), CLASS_FOLDER_TASKS)
def test_evaluate_missing_class_folder_one_line_or_na(
    copy_of: Callable, tmp_path: Path, capsys: pytest.CaptureFixture[str], task: str, key: str, folder: str
) -> None:
    plugin, root = copy_of(task)
    pred = tmp_path / "pred"
    _perfect_predictions(plugin, root, pred)
    capsys.readouterr()  # the sample data's progress bars
    _, path = _case_with(plugin, root, key)
    shutil.rmtree(path.parent)
    args = ["evaluate", task, "--pred", str(pred), "--gt", str(root)]
    assert main(args) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"no ground-truth class folder {folder!r} in {path.parent.parent}" in line
    result_json = tmp_path / "result.json"
    assert main([*args, "--allow-missing-class", "--json", str(result_json)]) == 0
    result = json.loads(result_json.read_text())
    primary = plugin.metric.primary.removeprefix("mean_")  # the ranked per-class figure: dsc, aupr
    assert result["per_class"][key][primary] is None  # n/a, and left out of the ranked mean
    assert result["leaderboard"][plugin.metric.primary] == pytest.approx(1.0)
    others = [v[primary] for k, v in result["per_class"].items() if k != key]
    assert others and all(v == pytest.approx(1.0) for v in others if v is not None)


def test_empty_class_folder_stays_na_without_the_option(
    copy_of: Callable, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin, root, pred = _drac22_with_perfect_predictions(copy_of, tmp_path, capsys)
    _, path = _case_with(plugin, root, "nv")
    for mask in path.parent.iterdir():
        mask.unlink()
    assert main(["evaluate", "drac22-task1", "--pred", str(pred), "--gt", str(root)]) == 0
    out = capsys.readouterr().out
    assert "mean_dsc: 1.0000" in out and "nv               n/a" in out


# -- evaluation: bad values through the command line, and an exact hand-made score ------------------


def test_evaluate_ground_truth_with_other_values_is_one_line(
    copy_of: Callable, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin, root, pred = _drac22_with_perfect_predictions(copy_of, tmp_path, capsys)
    _, path = _case_with(plugin, root, "npa")
    mask = _grey(path).copy()
    mask[0, :3] = [1, 2, 3]
    _rewrite(path, mask)
    assert main(["evaluate", "drac22-task1", "--pred", str(pred), "--gt", str(root)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line == (
        f"eyegc: error: {path}: a ground-truth mask holds only the values 0/255 or 0/1; this one holds "
        "0, 1, 2, 3, 255. Was it resized with interpolation or saved as JPEG? Rewrite it with exact values"
    )


def _rect(rows: slice, cols: slice, value: int = 1) -> np.ndarray:
    mask = np.zeros((1024, 1024), np.uint8)
    mask[rows, cols] = value
    return mask


def test_drac22_hand_made_score_is_exact_with_an_upper_case_mask(copy_of: Callable, tmp_path: Path) -> None:
    from eyegc.common.evaluation import evaluate_predictions

    plugin, root = copy_of("drac22-task1")
    cases = plugin.list_cases(root, "test")
    assert [c.case_id for c in cases] == ["086", "402", "1299"]
    folders = {key: cases[0].labels[key].parent for key in ("irma", "npa", "nv") if cases[0].labels[key]}
    gt_root = next(iter(folders.values())).parent
    for folder in gt_root.iterdir():
        for mask in folder.iterdir():
            mask.unlink()
    npa, irma = gt_root / "2. Nonperfusion Areas", gt_root / "1. Intraretinal Microvascular Abnormalities"
    Image.fromarray(_rect(slice(0, 100), slice(0, 100), 1)).save(npa / "086.PNG")  # 0/1 values, upper case
    Image.fromarray(_rect(slice(0, 100), slice(0, 100), 255)).save(npa / "402.png")
    Image.fromarray(_rect(slice(200, 300), slice(200, 300), 255)).save(irma / "086.png")
    empty = _rect(slice(0, 0), slice(0, 0))
    predictions = {
        "086": [_rect(slice(250, 350), slice(200, 300)), _rect(slice(0, 100), slice(0, 50)), empty],
        "402": [empty, _rect(slice(0, 100), slice(0, 100)), empty],
        "1299": [empty, empty, empty],
    }
    pred = tmp_path / "pred"
    for case_id, masks in predictions.items():
        plugin.write_prediction(pred, case_id, np.stack(masks), np.stack(masks).astype(np.float32))
    result = evaluate_predictions(plugin, pred, root, "test")
    # IRMA: 086 only: Dice 2*5000/20000, IoU 5000/15000. NPA: 086 Dice 2*5000/15000, IoU 1/2; 402 exact.
    assert result.per_class["irma"]["dsc"] == pytest.approx(0.5, abs=1e-12)
    assert result.per_class["irma"]["iou"] == pytest.approx(1 / 3, abs=1e-12)
    assert result.per_class["npa"]["dsc"] == pytest.approx((2 / 3 + 1) / 2, abs=1e-12)
    assert result.per_class["npa"]["iou"] == pytest.approx((0.5 + 1) / 2, abs=1e-12)
    assert np.isnan(result.per_class["nv"]["dsc"])
    assert result.leaderboard["mean_dsc"] == pytest.approx((0.5 + 5 / 6) / 2, abs=1e-12)
    assert result.leaderboard["mean_iou"] == pytest.approx((1 / 3 + 0.75) / 2, abs=1e-12)


# -- training refuses a class with no ground truth ----------------------------------------------------


def _blank_class(task: str, plugin: TaskPlugin, root: Path) -> str:
    """Remove every training case's ground truth for one class; returns what the error must name."""
    cases = plugin.list_cases(root, "train")
    if task == "goals-layers":  # GCIPL (value 80) becomes "everything else" (255)
        for case in cases:
            mask = _grey(case.labels["layers"])
            _rewrite(case.labels["layers"], np.where(mask == 80, 255, mask).astype(np.uint8))
        return "class 'gcipl' (mask value 80)"
    if task == "drive-vessels":  # the manual masks are required: all black
        for case in cases:
            _rewrite(case.labels["vessel"], np.zeros_like(_grey(case.labels["vessel"])))
        return "class 'vessel' (ground-truth folder '1st_manual')"
    key = {"drac22-task1": "nv", "idrid-lesions": "se"}[task]
    for case in cases:
        if case.labels[key] is not None:
            case.labels[key].unlink()
    spec = next(c for c in plugin.classes if c.key == key)
    return f"class {key!r} (ground-truth folder {spec.folder!r})"


@pytest.mark.parametrize("task", ["drac22-task1", "drive-vessels", "goals-layers", "idrid-lesions"])
def test_train_refuses_a_class_without_ground_truth(copy_of: Callable, tmp_path: Path, task: str) -> None:
    plugin, root = copy_of(task)
    names = _blank_class(task, plugin, root)
    run = tmp_path / "run"
    with pytest.raises(DataError) as error:
        train(plugin, root, run, tiny_train_config(epochs=1))
    assert str(error.value) == (
        f"no training case under {root} has ground truth for {names}: no mask file, or no pixel of it in any "
        "mask; check the folder's name and files, or pass --allow-missing-class to train without it"
    )
    assert not run.exists()


def test_train_cli_refuses_in_one_line_and_trains_with_the_option(
    copy_of: Callable, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin, root = copy_of("drac22-task1")
    _, path = _case_with(plugin, root, "nv", split="train")
    shutil.rmtree(path.parent)  # the class folder itself is missing
    capsys.readouterr()  # the sample data's progress bars
    run = tmp_path / "run"
    args = ["train", "drac22-task1", "--data", str(root), "--out", str(run), "--epochs", "1", "--folds", "2"]
    args += ["--network-kwargs", json.dumps({"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1})]
    args += ["--patch-size", "64", "--working-scale", "0.125", "--patches-per-image", "1", "--device", "cpu"]
    assert main(args) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"no ground-truth class folder '3. Neovascularization' in {path.parent.parent}" in line
    assert not run.exists()
    assert main([*args, "--allow-missing-class"]) == 0
    assert "training without ground truth for class(es) nv (--allow-missing-class)" in capsys.readouterr().err
    training = read_config(run).training
    assert training.allow_missing_class is True and training.classes_without_ground_truth == ["nv"]
    assert read_config(run).cross_validation is not None  # tuning read the data with the same option


# -- predict: two images of one case ------------------------------------------------------------------


def test_predict_images_of_one_case_are_an_error_naming_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(images / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(images / "a.tif")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(images / "b.PNG")
    (images / ".DS_Store").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"holds both a\.png and a\.tif for a; keep one file per image"):
        list_images(images)
    (images / "a.tif").unlink()
    assert [p.name for p in list_images(images)] == ["a.png", "b.PNG"]
    (images / "b.png").write_bytes((images / "b.PNG").read_bytes())
    model = tmp_path / "model"
    model.mkdir()
    argv = ["predict", "drac22-task1", "--model", str(model), "--images", str(images), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line == f"eyegc: error: {images} holds both b.PNG and b.png for b; keep one file per image"


# -- the shared rules themselves ----------------------------------------------------------------------


def test_index_files_rules(tmp_path: Path) -> None:
    for name in ("086.PNG", "402.png", ".DS_Store", "._086.png", "Thumbs.db", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    assert index_files(tmp_path, (".png",)) == {"086": tmp_path / "086.PNG", "402": tmp_path / "402.png"}
    (tmp_path / "sub.png").mkdir()  # named like a mask: reading it as "no mask" would be a silent lie
    with pytest.raises(DataError, match=r"sub\.png is not a file; masks in this folder must be \.png files"):
        index_files(tmp_path, (".png",), what="mask")
    (tmp_path / "sub.png").rmdir()
    (tmp_path / "1299.tiff").write_bytes(b"x")
    with pytest.raises(DataError, match=r"1299\.tiff: masks in this folder are \.png files, not \.tiff"):
        index_files(tmp_path, (".png",), what="mask")


@pytest.mark.parametrize(
    ("array", "ok"),
    [
        (np.array([[0, 255]], np.uint8), True),
        (np.array([[0, 1]], np.uint8), True),
        (np.zeros((2, 2), np.uint8), True),
        (np.array([[True, False]]), True),
        (np.array([[0.0, 1.0]]), True),
        (np.array([[1, 255]], np.uint8), False),
        (np.array([[0, 128, 255]], np.uint8), False),
        (np.array([[0, 65535]], np.uint16), False),
    ],
)
def test_mask_value_rule(array: np.ndarray, ok: bool) -> None:
    assert mask_values(np.array([[3, 0, 3, 255]], np.uint8)) == [0, 3, 255]
    if ok:
        check_mask_values(array, "m.png")
    else:
        with pytest.raises(DataError, match=r"^m\.png: a ground-truth mask holds only the values 0/255 or 0/1"):
            check_mask_values(array, "m.png")


# -- the official files are never rejected --------------------------------------------------------


@pytest.mark.real_data
@pytest.mark.parametrize(("task", "folder"), [("idrid-lesions", "IDRiD"), ("drive-vessels", "DRIVE")])
def test_official_ground_truth_is_accepted(task: str, folder: str) -> None:
    root = REAL / folder
    if not root.is_dir():
        pytest.skip(f"real {folder} data not found at {root}")
    plugin = get_task(task)
    cases = plugin.list_cases(root, "train")
    for case in cases[:2]:
        target, roi = _read_truth(plugin, case)
        assert target.any() and set(mask_values(target)) == {0, 1}
        assert plugin.kind == TaskKind.MULTILABEL_SEGMENTATION and (roi is None or roi.any())


# -- hostile round: masks that are not files, empty fields of view, label sheets, predictions ----


@pytest.mark.parametrize(("task", "key"), MASK_KINDS)
@pytest.mark.parametrize("kind", ["folder", "broken link"])
def test_a_mask_that_is_not_a_file_is_an_error(copy_of: Callable, task: str, key: str, kind: str) -> None:
    plugin, root = copy_of(task)
    _, path = _case_with(plugin, root, key)
    path.unlink()
    if kind == "folder":
        path.mkdir()
    else:
        path.symlink_to(path.with_name("gone.png"))
    expected = "is not a file" if kind == "folder" else "is a broken symbolic link"
    with pytest.raises(DataError, match=expected) as error:
        plugin.list_cases(root, "test")
    assert str(error.value).startswith(f"{path} ")


@pytest.mark.parametrize(("task", "key"), MASK_KINDS)
def test_a_mask_without_an_extension_is_an_error(copy_of: Callable, task: str, key: str) -> None:
    plugin, root = copy_of(task)
    _, path = _case_with(plugin, root, key)
    bare = path.with_name(path.name[: -len(path.suffix)] + "x")  # 086.png -> 086x, still an image
    path.rename(bare)
    (path.parent / "README").write_text("notes are not images: skipped\n")
    with pytest.raises(DataError, match="has no file extension") as error:
        plugin.list_cases(root, "test")
    assert str(error.value).startswith(f"{bare} ")


@pytest.mark.parametrize("task", ["drive-vessels", "drive-vessels-rgb"])
def test_an_empty_field_of_view_is_an_error(copy_of: Callable, task: str) -> None:
    plugin, root = copy_of(task)
    case, path = _case_with(plugin, root, "fov")
    _rewrite(path, np.zeros_like(_grey(path)))
    with pytest.raises(DataError, match=r"the field of view is empty \(all 0\)") as error:
        plugin.read_roi(case)
    assert str(error.value).startswith(f"{path}: ")


def test_two_goals_label_sheets_are_an_error(copy_of: Callable) -> None:
    from eyegc.challenges.goals.layout import gc_labels_path, read_gc_labels

    plugin, root = copy_of("goals-glaucoma")
    sheet = gc_labels_path(root, "train")
    assert sheet is not None and sheet.suffix == ".xlsx"
    labels = read_gc_labels(sheet)
    lines = ["ImgName,GC_Label", *(f"{name},{1 - label}" for name, label in labels.items())]  # disagrees
    sheet.with_suffix(".csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"holds both {sheet.name} and {sheet.stem}\.csv; keep one label sheet"):
        plugin.list_cases(root, "train")


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"grade": 1, "probabilities": [-0.1, 1.1]}, "probabilities must be numbers from 0 to 1"),
        ({"grade": 1, "probabilities": [float("nan"), 0.5]}, "probabilities must be numbers from 0 to 1"),
        ({"grade": 1, "probabilities": [0.0, float("inf")]}, "probabilities must be numbers from 0 to 1"),
        ({"grade": 1, "probabilities": ["0.3", "0.7"]}, "probabilities must be numbers from 0 to 1"),
        ({"grade": float("inf")}, "grade must be a whole number"),
        ({"grade": 0.5}, "grade must be a whole number"),
        ({"grade": True}, "grade must be a whole number"),
        ({"grade": "1"}, "grade must be a whole number"),
    ],
)
def test_a_glaucoma_prediction_out_of_range_is_an_error(
    copy_of: Callable, tmp_path: Path, entry: dict, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin, root = copy_of("goals-glaucoma")
    pred = tmp_path / "pred"
    _perfect_predictions(plugin, root, pred)
    path = sorted(pred.glob("*.json"))[0]
    doc = json.loads(path.read_text())
    doc["heads"]["glaucoma"] = entry
    path.write_text(json.dumps(doc))  # json writes NaN and Infinity, as a careless script would
    assert main(["evaluate", "goals-glaucoma", "--pred", str(pred), "--gt", str(root), "--split", "test"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(path) in line and problem in line


def test_predict_images_naming_a_file_says_to_give_its_folder(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(image)
    with pytest.raises(DataError, match=rf"--images {image} is a file; give the folder that holds the images"):
        list_images(image)
