"""Issue 16, rules 3-5: no output overwrites an input, user-caused failures are one line, modes follow the umask.

Each rule is parametrised over every registered task (or every verb) so that a new plugin inherits it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from eyegc.common import bundle, cli, container
from eyegc.common.bundle import read_config
from eyegc.common.errors import EyegcError, user_error_message
from eyegc.common.imageio import atomic_output_dir, atomic_output_file, read_image_array
from eyegc.common.inference import Predictor
from eyegc.common.outputs import OutputKind, check_output_path, check_outputs
from eyegc.common.registry import available_tasks, get_task
from eyegc.common.sample_data import write_sample_data
from PIL import Image

TASKS = available_tasks()


@pytest.fixture(scope="module")
def task_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two training and one testing case of every task, in its official layout."""
    root = tmp_path_factory.mktemp("output-rules")
    return {task: write_sample_data(get_task(task), root / task, 2, 1, seed=5) for task in TASKS}


def _digest(root: Path) -> dict[str, str]:
    """Every file below ``root`` with its sha256: what must not change."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def _a_data_file(root: Path) -> Path:
    return sorted(p for p in root.rglob("*") if p.is_file())[-1]


def _one_error_line(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    # Progress bars (tqdm: "NN%|") may precede the message; the message itself is one line.
    lines = [line for line in err.splitlines() if line.strip() and "%|" not in line]
    assert len(lines) == 1, err
    err = lines[0]
    for word in words:
        assert word in err, err
    return err


# -- rule 3: no output ever overwrites an input ---------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("report", ["--json", "--csv"])
def test_evaluate_never_writes_a_report_over_ground_truth(
    task: str, report: str, task_data: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data = task_data[task]
    before = _digest(data)
    target = _a_data_file(data)
    assert cli.main(["evaluate", task, "--pred", str(data), "--gt", str(data), report, str(target)]) == 2
    _one_error_line(capsys, report, "never writes into its inputs")
    assert _digest(data) == before


@pytest.mark.parametrize("task", TASKS)
def test_predict_refuses_an_output_inside_its_inputs(
    task: str, task_data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, model = task_data[task], tmp_path / "bundle"
    model.mkdir()
    images = _a_data_file(data).parent
    before = _digest(data)
    for out, named in ((images / "pred", "--images"), (model / "pred", "--model"), (data, "--images")):
        args = ["predict", task, "--model", str(model), "--images", str(images), "--out", str(out), "--overwrite"]
        assert cli.main(args) == 2
        _one_error_line(capsys, "--out", named)
    assert _digest(data) == before
    assert not (images / "pred").exists() and not (model / "pred").exists()


@pytest.mark.parametrize("task", TASKS)
def test_train_refuses_a_run_folder_inside_the_data(
    task: str, task_data: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data = task_data[task]
    before = _digest(data)
    assert cli.main(["train", task, "--data", str(data), "--out", str(data / "run")]) == 2
    _one_error_line(capsys, "--out", "lies inside the input --data")
    assert not (data / "run").exists()
    assert _digest(data) == before


@pytest.mark.parametrize("task", TASKS)
def test_submission_never_replaces_a_prediction_file(
    task: str, task_data: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data = task_data[task]
    before = _digest(data)
    target = _a_data_file(data)
    args = ["submission", task, "--pred", str(data), "--out", str(target), "--team", "t", "--overwrite"]
    assert cli.main(args) == 2
    _one_error_line(capsys, "--out", "never writes into its inputs")
    assert _digest(data) == before


def test_thickness_model_refuses_an_output_inside_the_data(
    task_data: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data = task_data["goals-layers"]
    args = ["thickness-model", "fit", "--data", str(data), "--source", "truth", "--out", str(data / "Train" / "m")]
    assert cli.main(args) == 2
    _one_error_line(capsys, "--out", "--data")
    assert not (data / "Train" / "m").exists()


def test_a_symbolic_link_into_the_data_is_caught(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "mask.png").write_bytes(b"truth")
    (tmp_path / "link").symlink_to(data)
    with pytest.raises(EyegcError, match="lies inside the input --gt"):
        check_output_path(tmp_path / "link" / "mask.png", "--csv", OutputKind.FILE, [("--gt", data)])
    assert (data / "mask.png").read_bytes() == b"truth"


def test_an_output_folder_holding_an_input_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EyegcError, match="holds the input --images"):
        check_output_path(tmp_path, "--out", OutputKind.FOLDER, [("--images", tmp_path / "images")])


def test_a_path_outside_the_inputs_passes(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    out = tmp_path / "data-scores.json"  # a sibling whose name starts like the input's is outside it
    assert check_output_path(out, "--json", OutputKind.FILE, [("--gt", tmp_path / "data"), ("--x", None)]) == out


@pytest.mark.parametrize(
    ("verb", "kind"),
    [
        (["evaluate", "drac22-task1", "--pred", "P", "--gt", "P", "--json", "{dir}"], "is a folder"),
        (["evaluate", "drac22-task1", "--pred", "P", "--gt", "P", "--csv", "{dir}"], "is a folder"),
        (["submission", "drac22-task1", "--pred", "P", "--out", "{dir}", "--team", "t"], "is a folder"),
        (["predict", "drac22-task1", "--model", "P", "--images", "P", "--out", "{file}"], "is a file"),
        (["train", "drac22-task1", "--data", "P", "--out", "{file}"], "is a file"),
        (["sample-data", "drac22-task1", "{file}"], "is a file"),
    ],
)
def test_a_folder_where_a_file_is_expected_and_the_reverse(
    verb: list[str], kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, file = tmp_path / "a-folder", tmp_path / "a-file"
    folder.mkdir()
    file.write_bytes(b"keep")
    (tmp_path / "P").mkdir()
    args = [str(tmp_path / "P") if a == "P" else a.format(dir=folder, file=file) for a in verb]
    assert cli.main(args) == 2
    _one_error_line(capsys, kind)
    assert file.read_bytes() == b"keep" and folder.is_dir() and not any(folder.iterdir())


def test_two_reports_at_one_path_are_refused(tmp_path: Path) -> None:
    with pytest.raises(EyegcError, match="--json and --csv both name"):
        check_outputs([("--json", tmp_path / "r", OutputKind.FILE), ("--csv", tmp_path / "." / "r", OutputKind.FILE)])


# -- rule 4: one line, exit 2, no traceback, nothing partial -------------------------------------


def test_an_output_below_a_file_is_one_line(
    drac22_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "plain-file").write_text("x")
    args = ["evaluate", "drac22-task1", "--pred", str(drac22_data), "--gt", str(drac22_data)]
    assert cli.main([*args, "--json", str(tmp_path / "plain-file" / "s.json")]) == 2
    _one_error_line(capsys, "plain-file is a file, so nothing can be written below it")


@pytest.mark.parametrize(
    ("code", "fix"),
    [(errno.ENOSPC, "free some space"), (errno.EROFS, "choose a writable location"), (errno.EACCES, "permissions")],
)
def test_a_full_or_read_only_disk_is_one_line(
    code: int, fix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code), str(tmp_path / "out"))

    monkeypatch.setattr("eyegc.common.sample_data.atomic_output_dir", refuse)
    assert cli.main(["sample-data", "drac22-task1", str(tmp_path / "out")]) == 2
    _one_error_line(capsys, fix, str(tmp_path / "out"))


def _tmpfs(folder: Path, options: str) -> Iterator[Path]:
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "eyegc-test", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.fixture
def read_only_disk(tmp_path: Path) -> Iterator[Path]:
    """A real read-only file system (tmpfs mounted ro)."""
    yield from _tmpfs(tmp_path / "read-only", "ro,size=1m")


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A real file system with 64 KiB of room."""
    yield from _tmpfs(tmp_path / "full", "size=64k")


def test_predict_into_a_read_only_disk_is_one_line(
    drac22_data: Path, drac22_run: Path, read_only_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = drac22_data / "A. Segmentation" / "1. Original Images" / "b. Testing Set"
    args = ["predict", "drac22-task1", "--model", str(drac22_run), "--images", str(images), "--tta", "none"]
    assert cli.main([*args, "--out", str(read_only_disk / "pred")]) == 2
    _one_error_line(capsys, f"{read_only_disk / 'pred'}: Read-only file system; choose a writable location")


def test_a_full_disk_is_one_line_and_leaves_nothing(full_disk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["sample-data", "drac22-task1", str(full_disk / "data"), "--cases", "3"]) == 2
    _one_error_line(capsys, str(full_disk / "data"), "No space left on device; free some space")
    assert list(full_disk.iterdir()) == []


def test_container_refuses_a_read_only_output(
    drac22_data: Path, read_only_disk: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = sorted((drac22_data / "A. Segmentation" / "1. Original Images" / "b. Testing Set").iterdir())[0]
    input_dir = container.layout_case(get_task("drac22-task1"), image, tmp_path / "input")
    args = ["--task", "drac22-task1", "--input", str(input_dir), "--output", str(read_only_disk)]
    assert container.main([*args, "--model", str(tmp_path / "no-bundle")]) == 2
    err = capsys.readouterr().err
    assert f"output folder {read_only_disk} is not writable (Read-only file system)" in err
    assert "Traceback" not in err


def test_a_bug_still_shows_its_traceback() -> None:
    assert user_error_message(KeyError("x")) is None
    assert user_error_message(OSError("no errno")) is None


#: Each verb, the function it calls (patched to be interrupted) and its arguments.
VERBS = {
    "sample-data": ("eyegc.common.sample_data.write_sample_data", ["drac22-task1", "OUT"]),
    "train": ("eyegc.common.training.train", ["drac22-task1", "--data", "D", "--out", "OUT"]),
    "tune": ("eyegc.common.tuning.tune", ["drac22-task1", "--model", "D"]),
    "predict": (
        "eyegc.common.inference.predict_folder",
        ["drac22-task1", "--model", "D", "--images", "D", "--out", "OUT"],
    ),
    "evaluate": ("eyegc.common.evaluation.evaluate_predictions", ["drac22-task1", "--pred", "D", "--gt", "D"]),
    "demo": ("eyegc.common.demo.run_demo", ["drac22-task1", "--out", "OUT"]),
    "thickness-model": (
        "eyegc.challenges.goals.thickness_model.fit_thickness_model",
        ["fit", "--data", "D", "--out", "OUT"],
    ),
}


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_ctrl_c_in_every_verb_is_one_line(
    verb: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target, args = VERBS[verb]

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(target, interrupted)
    (tmp_path / "D").mkdir()
    argv = [verb, *(str(tmp_path / a) if a in ("D", "OUT") else a for a in args)]
    assert cli.main(argv) == 130
    _one_error_line(capsys, "interrupted")
    assert not (tmp_path / "OUT").exists()


def test_ctrl_c_during_predict_leaves_no_partial_folder(
    drac22_data: Path, drac22_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    original, calls = Predictor.predict, []

    def predict_then_interrupt(self: Predictor, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, image)

    monkeypatch.setattr(Predictor, "predict", predict_then_interrupt)
    images = drac22_data / "A. Segmentation" / "1. Original Images" / "b. Testing Set"
    args = ["predict", "drac22-task1", "--model", str(drac22_run), "--images", str(images), "--tta", "none"]
    assert cli.main([*args, "--out", str(tmp_path / "pred")]) == 130
    _one_error_line(capsys, "interrupted")
    assert len(calls) == 2
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its hidden partial sibling


def test_ctrl_c_between_config_and_checksums_leaves_a_valid_bundle(
    drac22_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    shutil.copytree(drac22_run, run)
    config = read_config(run)
    config.created = "re-tuned"
    write_config = bundle.write_config

    def write_then_interrupt(run: Path, config: bundle.BundleConfig) -> None:
        write_config(run, config)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C between bundle.json and its checksums

    monkeypatch.setattr(bundle, "write_config", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        bundle.save_signed_config(run, config)
    bundle.verify_checksums(run)  # signed: the interrupt waited for the checksums
    assert read_config(run).created == "re-tuned"


def test_missing_required_option_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["predict", "drac22-task1", "--images", "x", "--out", "y"])
    assert exit_info.value.code == 2
    assert "the following arguments are required: --model" in capsys.readouterr().err


def test_drac22_submission_without_team_says_how(
    drac22_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["submission", "drac22-task1", "--pred", str(drac22_data), "--out", str(tmp_path / "s.zip")]
    assert cli.main(args) == 2
    _one_error_line(capsys, "pass --team NAME")
    assert cli.main([*args, "--team", "t", "--option", "colour=red"]) == 2
    _one_error_line(capsys, "--option colour is not an option of drac22-task1 submissions")
    assert list(tmp_path.iterdir()) == []


def test_container_refuses_an_unwritable_output_before_loading_models(
    drac22_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = sorted((drac22_data / "A. Segmentation" / "1. Original Images" / "b. Testing Set").iterdir())[0]
    input_dir = container.layout_case(get_task("drac22-task1"), image, tmp_path / "input")
    (tmp_path / "not-a-folder").write_text("x")
    args = ["--task", "drac22-task1", "--input", str(input_dir), "--output", str(tmp_path / "not-a-folder" / "out")]
    # --model names no bundle: the output check must fail first, or this would be a bundle error.
    assert container.main([*args, "--model", str(tmp_path / "no-bundle")]) == 2
    err = capsys.readouterr().err
    assert "is not writable" in err and "Traceback" not in err


@pytest.mark.parametrize(("mode", "channels"), [("LA", 1), ("RGBA", 3)])
def test_an_alpha_channel_is_dropped_not_called_corrupt(mode: str, channels: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (8, 9, channels + 1), dtype=np.uint8)
    path = tmp_path / "image.png"
    Image.fromarray(pixels.squeeze(), mode).save(path)
    array = read_image_array(path)
    assert array.shape == (channels, 8, 9)
    assert np.array_equal(np.moveaxis(array, 0, -1), pixels[..., :channels])


def test_drac22_reads_a_grey_alpha_png(tmp_path: Path) -> None:
    pixels = np.zeros((1024, 1024, 2), dtype=np.uint8)
    pixels[..., 0], pixels[..., 1] = 7, 255
    Image.fromarray(pixels, "LA").save(tmp_path / "086.png")
    image = get_task("drac22-task1").read_image(tmp_path / "086.png")
    assert image.shape == (1, 1024, 1024) and int(image.max()) == 7


# -- rule 5: files are created with the user's umask ---------------------------------------------


@pytest.fixture
def umask_027() -> Iterator[None]:
    previous = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(previous)


def test_atomic_outputs_follow_the_umask(tmp_path: Path, umask_027: None) -> None:
    with atomic_output_dir(tmp_path / "folder") as tmp:
        (tmp / "a.txt").write_text("x")
    with atomic_output_file(tmp_path / "file.json") as tmp:
        tmp.write_text("{}")
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "file.json").stat().st_mode & 0o777 == 0o640


def test_cli_outputs_follow_the_umask(drac22_data: Path, tmp_path: Path, umask_027: None) -> None:
    out = tmp_path / "sample"
    assert cli.main(["sample-data", "drac22-task1", str(out), "--cases", "1", "--test-cases", "0"]) == 0
    assert out.stat().st_mode & 0o777 == 0o750
    pred, report = _ground_truth_as_prediction(drac22_data, tmp_path), tmp_path / "scores.json"
    assert (
        cli.main(["evaluate", "drac22-task1", "--pred", str(pred), "--gt", str(drac22_data), "--json", str(report)])
        == 0
    )
    assert report.stat().st_mode & 0o777 == 0o640


def _ground_truth_as_prediction(data: Path, tmp_path: Path) -> Path:
    """A DRAC22 prediction folder made from the testing ground truth (absent masks written empty)."""
    plugin = get_task("drac22-task1")
    pred = tmp_path / "gt-pred"
    for case in plugin.list_cases(data, "test"):
        target = plugin.read_target(case)
        plugin.write_prediction(pred, case.case_id, target, target.astype(np.float32))
    return pred


# -- hostile round: outputs that are not plain files, links, loops; names that are not paths -------


def test_a_report_over_a_device_or_pipe_is_refused(tmp_path: Path) -> None:
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    for target in (Path("/dev/null"), pipe):
        with pytest.raises(EyegcError, match=r"is not a plain file \(a device, pipe or socket\)"):
            check_output_path(target, "--json", OutputKind.FILE)
    assert pipe.exists() and not pipe.is_file()  # not replaced by a regular file


@pytest.mark.parametrize("dangling", [False, True])
def test_a_report_over_a_symbolic_link_is_refused(dangling: bool, tmp_path: Path) -> None:
    target = tmp_path / "real.json"
    if not dangling:
        target.write_text("{}")
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    with pytest.raises(EyegcError, match="is a symbolic link; eyegc replaces files whole"):
        check_output_path(link, "--json", OutputKind.FILE)
    assert link.is_symlink()


def test_a_symbolic_link_loop_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(EyegcError, match="cannot follow its symbolic links"):
        check_output_path(tmp_path / "a" / "pred", "--out", OutputKind.FOLDER)
    with pytest.raises(EyegcError, match=r"--images .* cannot follow its symbolic links"):
        check_output_path(tmp_path / "out", "--out", OutputKind.FOLDER, [("--images", tmp_path / "a" / "x")])


def test_a_team_name_is_not_an_input_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from eyegc.challenges.drac22.submission import write_drac22_prediction

    write_drac22_prediction(tmp_path / "pred", "1", np.zeros((3, 1024, 1024), dtype=np.uint8))
    (tmp_path / "TeamX").mkdir()  # a folder that happens to carry the team's name
    monkeypatch.chdir(tmp_path)
    args = ["submission", "drac22-task1", "--pred", "pred", "--team", "TeamX", "--out", "TeamX/sub.zip"]
    assert cli.main(args) == 0
    assert (tmp_path / "TeamX" / "sub.zip").is_file()
    assert cli.main([*args[:-3], ".hidden", "--out", "other.zip"]) == 2
    _one_error_line(capsys, "must start with a letter or digit")


@pytest.mark.parametrize("device", ["gpu0", "cuda:x", "CPU", ""])
def test_an_unknown_device_is_one_line(device: str) -> None:
    from eyegc.common.inference import resolve_device

    with pytest.raises(EyegcError, match="is not a device: use auto, cpu, cuda or cuda:N"):
        resolve_device(device)


def test_train_on_a_full_disk_is_an_os_error_naming_the_file(full_disk: Path) -> None:
    from eyegc.common import torch_backend

    with pytest.raises(OSError) as error:
        torch_backend._save_atomic({"weights": np.zeros(100_000)}, full_disk / "checkpoint.pt")
    assert error.value.errno == errno.ENOSPC and error.value.filename == str(full_disk / "checkpoint.pt")
    assert list(full_disk.iterdir()) == []


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stopped_command_leaves_nothing_partial(stop: signal.Signals, tmp_path: Path) -> None:
    """``kill`` (a scheduler's time limit) or a closed terminal unwinds like Ctrl-C: no ``.OUT.partial-*``."""
    import sys
    import time

    out = tmp_path / "data"
    command = [sys.executable, "-m", "eyegc.common.cli", "sample-data", "drac22-task1", str(out), "--cases", "200"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".data.partial-*/**/*.png")) and time.monotonic() < deadline:
        time.sleep(0.05)  # stop it mid-write, once a partial folder holds files
    process.send_signal(stop)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + stop, err
    how = "interrupted" if stop == signal.SIGINT else f"stopped by {stop.name}"
    assert err.strip().splitlines()[-1] == f"eyegc sample-data: {how}; no partial output was left", err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
