"""Numeric options are checked where they are parsed (argparse and the Python API, one rule each);
network arguments against the network's constructor; Ctrl-C in train hints --resume only when it can."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import tiny_train_config
from eyegc.challenges.goals.cli import THICKNESS_OPTIONS
from eyegc.common import torch_backend, training
from eyegc.common.bundle import check_bundle_settings, load_bundle, read_config, write_checksums
from eyegc.common.bundle_config import BundleConfig, NetworkSpec
from eyegc.common.cli import build_parser, main
from eyegc.common.errors import BundleError, EyegcError
from eyegc.common.options import (
    DEMO_OPTIONS,
    LAUNCH_OPTIONS,
    REPORT_OPTIONS,
    SAMPLE_DATA_OPTIONS,
    TRAIN_OPTIONS,
    NumberRule,
    Rule,
)
from eyegc.common.plugin import TaskKind
from eyegc.common.registry import available_tasks, get_task
from eyegc.common.training import TrainConfig, train

TASKS = available_tasks()  # every registered task: a new plugin inherits each rule
CLASSIFICATION = [t for t in TASKS if get_task(t).kind == TaskKind.CLASSIFICATION]

INT_AT_LEAST_1 = ["0", "-1", "1.5", "two", "nan", ""]
POSITIVE_FLOAT = ["0", "-1", "nan", "inf", "-inf", "x"]
SEEDS = ["-1", "4294967296", "1.5", "x"]

#: (verb, option) -> bad values; the allowed range comes from the option's rule.
BAD_VALUES: dict[tuple[str, str], list[str]] = {
    ("train", "--folds"): ["1", "0", "-1", "x"],
    ("train", "--fold"): ["-1", "1.5", "x"],
    ("train", "--epochs"): INT_AT_LEAST_1,
    ("train", "--batch-size"): INT_AT_LEAST_1,
    ("train", "--patch-size"): ["-1", "1.5", "x"],
    ("train", "--working-scale"): [*POSITIVE_FLOAT, "4.5"],
    ("train", "--lr"): POSITIVE_FLOAT,
    ("train", "--patches-per-image"): INT_AT_LEAST_1,
    ("train", "--class-weights"): ["0,0", "-1,1", "1,nan", "1,inf", "a,b", "1,,2"],
    ("train", "--validate-every"): INT_AT_LEAST_1,
    ("train", "--jobs"): INT_AT_LEAST_1,
    ("train", "--nproc-per-node"): INT_AT_LEAST_1,
    ("train", "--nnodes"): INT_AT_LEAST_1,
    ("train", "--node-rank"): ["-1", "1.5", "x"],
    ("train", "--master-port"): ["0", "65536", "1.5", "x"],
    ("train", "--seed"): SEEDS,
    ("train", "--clahe-clip"): ["0", "-0.1", "1.5", "nan", "inf"],
    ("train", "--input-size"): ["64", "0,64", "64,-1", "64,64,64", "64.5,64", "x,y"],
    ("train", "--rmi-weight"): ["-1", "-0.5", "nan", "inf", "x"],
    ("train", "--super-resolution"): ["1", "5", "2.5", "0", "x"],
    ("train", "--sr-weights"): ["1", "-1,1", "1,nan", "1,2,3", "a,b"],
    ("demo", "--cases"): ["1", "0", "-1", "x"],
    ("demo", "--test-cases"): ["0", "-1"],
    ("demo", "--epochs"): ["0", "-1", "2.5"],
    ("sample-data", "--cases"): ["0", "-1", "x"],
    ("sample-data", "--test-cases"): ["-1", "x"],
    ("sample-data", "--seed"): SEEDS,
    ("thickness-model", "--sectors"): ["0", "-1", "x"],
    ("thickness-model", "--C"): POSITIVE_FLOAT,
    ("thickness-model", "--folds"): ["1", "0"],
    ("thickness-model", "--seed"): SEEDS,
    ("report", "--cases"): ["-1", "51", "1.5", "x"],
    ("serve", "--port"): ["0", "65536", "1.5", "x"],
    ("serve", "--max-upload-mb"): ["0", "-1", "2049", "nan", "x"],
}
TABLES: dict[str, dict[str, Rule]] = {
    "train": {**TRAIN_OPTIONS, **LAUNCH_OPTIONS},
    "demo": DEMO_OPTIONS,
    "sample-data": SAMPLE_DATA_OPTIONS,
    "thickness-model": THICKNESS_OPTIONS,
    "report": REPORT_OPTIONS,
    "serve": REPORT_OPTIONS,
}


def _rule(verb: str, option: str) -> Rule:
    return next(rule for rule in TABLES[verb].values() if rule.option == option)


def _verb_args(verb: str, tmp_path: Path) -> list[str]:
    """The verb with its required arguments (pointing nowhere: a bad number must stop it first)."""
    return {
        "train": ["train", "drac22-task1", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run")],
        "demo": ["demo", "drac22-task1", "--out", str(tmp_path / "demo")],
        "sample-data": ["sample-data", "drac22-task1", str(tmp_path / "data")],
        "thickness-model": ["thickness-model", "fit", "--out", str(tmp_path / "model")],
        "report": [
            "report",
            "drac22-task1",
            "--pred",
            str(tmp_path / "p"),
            "--gt",
            str(tmp_path / "g"),
            "--out",
            str(tmp_path / "r"),
        ],
        "serve": ["serve", "--model", str(tmp_path / "run")],
    }[verb]


def test_every_numeric_option_of_every_verb_has_bad_values() -> None:
    numeric = {
        (verb, action.option_strings[-1])
        for verb, sub in _subparsers().items()
        for action in sub._actions
        if action.type not in (None, Path)
    }
    assert numeric == set(BAD_VALUES)


def _subparsers() -> dict[str, Any]:
    parser = build_parser()
    choices = next(a for a in parser._actions if a.dest == "command").choices
    return dict(choices)


@pytest.mark.parametrize(
    ("verb", "option", "value"), [(verb, option, v) for (verb, option), values in BAD_VALUES.items() for v in values]
)
def test_a_bad_number_stops_the_command_at_parse_time(
    verb: str, option: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        main([*_verb_args(verb, tmp_path), f"{option}={value}"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: must be {_rule(verb, option).allowed()}, got " in err
    assert not any(tmp_path.iterdir())  # nothing read, nothing written


def test_the_messages_read_as_documented(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = {
        "--lr=0": "argument --lr: must be a number > 0 and finite, got 0",
        "--epochs=0": "argument --epochs: must be a whole number of at least 1, got 0",
        "--working-scale=-1": "argument --working-scale: must be a number in (0, 4], got -1",
        "--patch-size=-1": "argument --patch-size: must be a whole number of at least 0 (0 = whole image), got -1",
        "--class-weights=0,0": (
            "argument --class-weights: must be comma-separated numbers, each >= 0 and finite, not all 0, got '0,0'"
        ),
        "--input-size=64": "argument --input-size: must be two comma-separated whole numbers H,W, each at least 1",
        "--seed=-1": "argument --seed: must be a whole number from 0 to 4294967295, got -1",
    }
    for arg, message in expected.items():
        with pytest.raises(SystemExit):
            main([*_verb_args("train", tmp_path), arg])
        assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "dest", "value"),
    [
        (["--patch-size", "0"], "patch_size", 0),
        (["--working-scale", "4"], "working_scale", 4.0),
        (["--working-scale", "0.125"], "working_scale", 0.125),
        (["--clahe-clip", "1"], "clahe_clip", 1.0),
        (["--class-weights", "0,1.5"], "class_weights", [0.0, 1.5]),
        (["--input-size", "1,2"], "input_size", [1, 2]),
        (["--seed", "0"], "seed", 0),
        (["--seed", "4294967295"], "seed", 4294967295),
        (["--folds", "2"], "folds", 2),
        (["--fold", "0"], "fold", "0"),
        ([], "fold", "all"),
        (["--lr", "1e-4"], "lr", 1e-4),
    ],
)
def test_edge_values_inside_the_range_parse(args: list[str], dest: str, value: object, tmp_path: Path) -> None:
    parsed = build_parser().parse_args([*_verb_args("train", tmp_path), *args])
    assert getattr(parsed, dest) == value


def test_edge_values_of_the_other_verbs_parse(tmp_path: Path) -> None:
    parsed = build_parser().parse_args([*_verb_args("sample-data", tmp_path), "--test-cases", "0", "--cases", "1"])
    assert (parsed.test_cases, parsed.cases) == (0, 1)
    parsed = build_parser().parse_args([*_verb_args("demo", tmp_path), "--cases", "2", "--test-cases", "1"])
    assert (parsed.cases, parsed.test_cases, parsed.epochs) == (2, 1, None)
    parsed = build_parser().parse_args([*_verb_args("thickness-model", tmp_path), "--C", "1e-3", "--sectors", "1"])
    assert (parsed.C, parsed.sectors, parsed.folds) == (1e-3, 1, 5)


# -- the Python API: the same rules, the same names --------------------------------------------------

BAD_CONFIGS: list[tuple[dict[str, Any], str]] = [
    ({"epochs": 0}, "--epochs"),
    ({"epochs": -1}, "--epochs"),
    ({"epochs": 2.0}, "--epochs"),
    ({"epochs": "3"}, "--epochs"),
    ({"epochs": True}, "--epochs"),
    ({"batch_size": 0}, "--batch-size"),
    ({"patches_per_image": 0}, "--patches-per-image"),
    ({"learning_rate": 0.0}, "--lr"),
    ({"learning_rate": float("nan")}, "--lr"),
    ({"learning_rate": float("inf")}, "--lr"),
    ({"working_scale": 0.0}, "--working-scale"),
    ({"working_scale": -1.0}, "--working-scale"),
    ({"folds": 1}, "--folds"),
    ({"fold": "x"}, "--fold"),
    ({"fold": -1}, "--fold"),
    ({"patch_size": -1}, "--patch-size"),
    ({"validate_every": 0}, "--validate-every"),
    ({"jobs": 0}, "--jobs"),
    ({"seed": -1}, "--seed"),
    ({"clahe_clip": 0.0}, "--clahe-clip"),
    ({"clahe_clip": 2.0}, "--clahe-clip"),
    ({"class_weights": [0.0, 0.0]}, "--class-weights"),
    ({"class_weights": [1.0, float("nan")]}, "--class-weights"),
    ({"class_weights": [-1.0, 1.0]}, "--class-weights"),
]


class UntouchedData:
    """A task that fails if its data is read: a bad setting must be reported before any reading."""

    def __init__(self, name: str) -> None:
        self._plugin = get_task(name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._plugin, name)

    def list_cases(self, *args: object, **kwargs: object) -> list[Any]:
        raise AssertionError("the data was read before the settings were checked")

    def read_image(self, *args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("the data was read before the settings were checked")


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize(("overrides", "option"), BAD_CONFIGS)
def test_train_refuses_a_bad_config_before_reading_data(
    task: str, overrides: dict[str, Any], option: str, tmp_path: Path
) -> None:
    cfg = TrainConfig(**overrides)
    field = next(f for f, rule in TRAIN_OPTIONS.items() if rule.option == option)
    with pytest.raises(EyegcError) as raised:
        train(UntouchedData(task), tmp_path / "data", tmp_path / "run", cfg)  # type: ignore[arg-type]
    message = str(raised.value)
    assert message.startswith(f"{option} must be {TRAIN_OPTIONS[field].allowed()}, got ")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("task", CLASSIFICATION)
@pytest.mark.parametrize("size", [(0, 64), (64,), (64, 64, 64), (64.0, 64), "64,64", (-1, 8)])
def test_train_refuses_a_bad_input_size(task: str, size: object, tmp_path: Path) -> None:
    cfg = TrainConfig(extra={"input_size": size})
    with pytest.raises(EyegcError, match=r"^--input-size must be two comma-separated whole numbers H,W, each at least"):
        train(UntouchedData(task), tmp_path / "data", tmp_path / "run", cfg)  # type: ignore[arg-type]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("task", CLASSIFICATION)
def test_the_paddle_backend_checks_the_same_rules(task: str, tmp_path: Path) -> None:
    pytest.importorskip("paddle")
    from eyegc.common.paddle_backend import train_paddle

    cfg = TrainConfig(backend="paddle", learning_rate=0)
    for backend_train in (train, train_paddle):
        with pytest.raises(EyegcError, match=r"^--lr must be a number > 0 and finite, got 0"):
            backend_train(UntouchedData(task), tmp_path, tmp_path / "run", cfg)  # type: ignore[arg-type]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("task", TASKS)
def test_zero_is_a_value_and_none_the_default(task: str) -> None:
    plugin = get_task(task)
    config = training.resolve_config(plugin, TrainConfig(patch_size=0, seed=0))
    assert config.patch_size == 0 and config.training.seed == 0  # 0 kept, not the default
    config = training.resolve_config(plugin, TrainConfig())
    assert config.training.epochs == plugin.defaults.epochs
    assert config.training.learning_rate == plugin.defaults.learning_rate


def test_the_other_python_apis_use_the_same_rules(tmp_path: Path) -> None:
    from eyegc.challenges.goals.thickness_model import build_pipeline, fit_thickness_model
    from eyegc.common.demo import prepare_demo
    from eyegc.common.sample_data import write_sample_data

    plugin = get_task("drac22-task1")
    with pytest.raises(EyegcError, match=r"^--seed must be a whole number from 0 to 4294967295, got -1"):
        write_sample_data(plugin, tmp_path / "a", cases=2, seed=-1)
    with pytest.raises(EyegcError, match=r"^--test-cases must be a whole number of at least 0, got -1"):
        write_sample_data(plugin, tmp_path / "a", cases=2, test_cases=-1)
    with pytest.raises(EyegcError, match=r"^--cases must be a whole number of at least 2, got 1"):
        prepare_demo(plugin, tmp_path / "b", cases=1)
    with pytest.raises(EyegcError, match=r"^--epochs must be a whole number of at least 1, got 0"):
        prepare_demo(plugin, tmp_path / "b", training={"epochs": 0})
    with pytest.raises(EyegcError, match=r"^--C must be a number > 0 and finite, got nan"):
        build_pipeline(float("nan"))
    with pytest.raises(EyegcError, match=r"^--folds must be a whole number of at least 2, got 1"):
        fit_thickness_model([], tmp_path, tmp_path / "c", source="truth", folds=1)
    assert not any(tmp_path.iterdir())


def test_a_rule_checks_python_values_like_text() -> None:
    rule = NumberRule("--x", float, 0, 1, min_inclusive=False)
    assert rule.check(1) == 1.0 and rule.parse("0.5") == 0.5
    for bad in (0, 0.0, -1, 1.5, float("nan"), float("inf"), "0.5", None, True):
        with pytest.raises(EyegcError, match=r"^--x must be a number in \(0, 1\], got "):
            rule.check(bad)


# -- network arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_an_unknown_network_argument_is_one_line_at_train_time(
    task: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    network = get_task(task).defaults.network
    args = ["train", task, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run")]
    assert main([*args, "--network-kwargs", '{"foo": 1, "channelz": [8]}']) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"--network-kwargs: network {network} takes no argument 'channelz', 'foo'; it accepts " in err
    assert ("channels" if network == "UNet" else "block_inplanes") in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ('{"foo": 1}', "network PaddleResNet takes no argument 'foo'; it takes only depth (18, 34, 50)"),
        ('{"depth": 7}', "PaddleResNet depth 7 is not one of 18, 34, 50"),
    ],
)
def test_paddle_network_arguments_are_one_line(
    kwargs: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("paddle")
    args = ["train", "idrid-grading", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run")]
    assert main([*args, "--backend", "paddle", "--network-kwargs", kwargs]) == 2
    err = capsys.readouterr().err
    assert err == f"eyegc: error: --network-kwargs: {message}\n"
    assert not (tmp_path / "run").exists()


def test_an_unusable_network_argument_value_is_one_line(
    drac22_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "drac22-task1", "--data", str(drac22_data), "--out", str(tmp_path / "run"), "--device", "cpu"]
    assert main([*args, "--network-kwargs", '{"channels": "x"}']) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "network UNet cannot be built with arguments" in err and "channels" in err
    assert not (tmp_path / "run").exists()


def _edited_bundle(drac22_run: Path, tmp_path: Path, kwargs: dict[str, Any]) -> Path:
    """A copy of the tiny bundle whose bundle.json holds other network arguments, signed again."""
    run = tmp_path / "bundle"
    shutil.copytree(drac22_run, run)
    config = json.loads((run / "bundle.json").read_text())
    config["network"]["kwargs"].update(kwargs)
    (run / "bundle.json").write_text(json.dumps(config))
    write_checksums(run)  # so that the checksums pass and the arguments are what is refused
    return run


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"foo": 1}, "network UNet takes no argument 'foo'; it accepts "), ({"channels": "x"}, "cannot be built")],
)
def test_an_edited_bundle_names_its_bundle_json_at_predict_time(
    kwargs: dict[str, Any],
    message: str,
    drac22_run: Path,
    drac22_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = _edited_bundle(drac22_run, tmp_path, kwargs)
    images = get_task("drac22-task1").list_cases(drac22_data, "test", require_labels=False)[0].image.parent
    out = tmp_path / "pred"
    assert main(["predict", "drac22-task1", "--model", str(run), "--images", str(images), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"eyegc: error: {run / 'bundle.json'}: ") and message in err
    assert not out.exists()


def test_an_edited_paddle_bundle_names_its_bundle_json(tmp_path: Path) -> None:
    paddle = pytest.importorskip("paddle")
    from eyegc.common.paddle_backend import PADDLE_NETWORK, build_paddle_network, load_paddle_fold

    # Only what the paddle network reads (model_construct skips the other required keys).
    network = NetworkSpec(name=PADDLE_NETWORK, kwargs={"depth": 18})
    config = BundleConfig.model_construct(network=network, head_classes=[2], in_channels=3)
    weights = tmp_path / "run" / "fold_0" / "model.pdparams"
    weights.parent.mkdir(parents=True)
    with paddle.utils.unique_name.guard():
        paddle.save(build_paddle_network(config).state_dict(), str(weights))
    for kwargs, message in (({"depth": 18, "foo": 1}, "takes no argument 'foo'"), ({"depth": 7}, "depth 7")):
        edited = config.model_copy(update={"network": NetworkSpec(name=PADDLE_NETWORK, kwargs=kwargs)})
        with pytest.raises(BundleError, match=message) as raised:
            load_paddle_fold(edited, weights)
        assert str(raised.value).startswith(f"{tmp_path / 'run' / 'bundle.json'}: ")


def _resigned(drac22_run: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of the tiny bundle with ``edit`` applied to its bundle.json, signed again."""
    run = tmp_path / "bundle"
    shutil.copytree(drac22_run, run)
    config = json.loads((run / "bundle.json").read_text())
    edit(config)
    (run / "bundle.json").write_text(json.dumps(config))
    write_checksums(run)
    return run


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["postprocessing"]["thresholds"].update(npa=7), "postprocessing.thresholds.npa must be a number"),
        (lambda c: c["postprocessing"]["thresholds"].update(npa=-0.1), "thresholds.npa must be a number from 0 to 1"),
        (lambda c: c["postprocessing"]["thresholds"].update(npa="0.5"), "thresholds.npa must be a number from 0 to 1"),
        (lambda c: c["postprocessing"]["thresholds"].update(xyz=0.5), "thresholds.xyz names no class of this bundle"),
        (lambda c: c["postprocessing"]["min_component_size"].update(nv=-3), "min_component_size.nv must be a whole"),
        (lambda c: c["postprocessing"]["min_component_size"].update(nv=2.5), "min_component_size.nv must be a whole"),
        (lambda c: c["preprocessing"].update(working_scale=0), "working_scale must be a number in (0, 4], got 0"),
        (lambda c: c.update(patch_size=-1), "patch_size must be a whole number of at least 0"),
        (lambda c: c["allowed_tta"].update(flip=["flip_lr", "spin"]), "allowed_tta.flip holds unknown operations spin"),
    ],
)
def test_a_resigned_bundle_with_settings_out_of_range_is_refused(
    edit: Callable[[dict[str, Any]], None], message: str, drac22_run: Path, tmp_path: Path
) -> None:
    run = _resigned(drac22_run, tmp_path, edit)
    with pytest.raises(BundleError) as raised:
        load_bundle(run)
    assert str(raised.value).startswith(f"{run / 'bundle.json'}: ") and message in str(raised.value)
    assert "retrain it, or re-tune it with `eyegc tune`" in str(raised.value)


def test_the_tiny_bundle_passes_its_own_settings_check(drac22_run: Path) -> None:
    check_bundle_settings(read_config(drac22_run), drac22_run / "bundle.json")


# -- Ctrl-C in train --------------------------------------------------------------------------------


def _train_args(data: Path, run: Path) -> list[str]:
    args = ["train", "drac22-task1", "--data", str(data), "--out", str(run), "--folds", "2", "--epochs", "1"]
    args += ["--patch-size", "64", "--working-scale", "0.125", "--patches-per-image", "1", "--device", "cpu"]
    return [*args, "--network-kwargs", json.dumps(tiny_train_config().network_kwargs), "--no-tune"]


def _interrupt(*args: object, **kwargs: object) -> None:
    raise KeyboardInterrupt


def test_ctrl_c_before_the_first_checkpoint_says_nothing_was_written(
    drac22_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch_backend, "_check_network", _interrupt)  # after loading the data, before any epoch
    run = tmp_path / "run"
    assert main(_train_args(drac22_data, run)) == 130
    captured = capsys.readouterr()
    assert "interrupted; nothing was written before the first checkpoint" in captured.err
    assert "--resume" not in captured.out + captured.err
    assert not run.exists()


def test_ctrl_c_after_a_checkpoint_says_how_to_resume(
    drac22_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(training, "plot_curve", _interrupt)  # fold 0's epochs and checkpoint are done
    run = tmp_path / "run"
    assert main(_train_args(drac22_data, run)) == 130
    err = capsys.readouterr().err
    assert f"interrupted; continue with: eyegc train drac22-task1 --data {drac22_data} --out {run} --resume" in err
    assert (run / "fold_0" / "checkpoint.pt").is_file()


@pytest.mark.parametrize("checkpoint", ["checkpoint.pt", "checkpoint.pdckpt"])
def test_the_resume_hint_follows_a_checkpoint_of_either_backend(
    checkpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"

    def interrupted_after_a_checkpoint(*args: object, **kwargs: object) -> None:
        (run / "fold_1").mkdir(parents=True)
        (run / "fold_1" / checkpoint).write_bytes(b"")
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train", interrupted_after_a_checkpoint)
    assert main(["train", "idrid-grading", "--data", str(tmp_path), "--out", str(run)]) == 130
    assert "--resume" in capsys.readouterr().err
