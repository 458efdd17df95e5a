"""The PaddlePaddle backend: a clear error without paddle; with it, a bundle that eyegc's inference serves."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from eyegc.common.bundle import Bundle, FoldModel, read_config, verify_checksums
from eyegc.common.bundle_config import BundleConfig, NetworkSpec
from eyegc.common.errors import EyegcError
from eyegc.common.inference import Predictor, classify_with_tta
from eyegc.common.paddle_backend import (
    MISSING_PADDLE,
    PADDLE_NETWORK,
    build_paddle_network,
    load_paddle_fold,
    load_paddle_state,
    require_paddle,
    train_paddle,
)
from eyegc.common.preprocessing import prepare_image
from eyegc.common.registry import available_tasks, get_task
from eyegc.common.sample_data import write_sample_data
from eyegc.common.training import TrainConfig

GRADING = "idrid-grading"


def tiny_paddle_config(**overrides: object) -> TrainConfig:
    """2 folds, 2 epochs of a ResNet-18 at 64x96: seconds on two CPU cores."""
    settings: dict[str, object] = {
        "folds": 2,
        "epochs": 2,
        "batch_size": 4,
        "network_kwargs": {"depth": 18},
        "extra": {"input_size": (64, 96)},
        "device": "cpu",
    }
    settings.update(overrides)
    return TrainConfig(**settings)  # type: ignore[arg-type]


class StopAfter:
    """An epoch callback that interrupts training like Ctrl-C after ``epoch`` epochs of ``fold``."""

    def __init__(self, fold: int, epoch: int) -> None:
        self.fold, self.epoch = fold, epoch

    def __call__(self, fold: int, epoch: int, history: dict) -> None:
        if (fold, epoch) == (self.fold, self.epoch):
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def paddle() -> ModuleType:
    """The paddle module; every test that needs it is skipped without it."""
    return pytest.importorskip("paddle")


@pytest.fixture(scope="module")
def grading_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six training and three testing IDRiD grading cases."""
    root = tmp_path_factory.mktemp("idrid_grading") / "data"
    return write_sample_data(get_task(GRADING), root, 6, 3, seed=1)


@pytest.fixture(scope="module")
def grading_run(paddle: ModuleType, grading_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny finished, tuned paddle bundle for IDRiD grading (heads of 5 and 3 grades)."""
    return train_paddle(
        get_task(GRADING), grading_data, tmp_path_factory.mktemp("paddle_run") / "run", tiny_paddle_config()
    )


def test_require_paddle_names_the_extra_when_paddle_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "paddle", None)  # `import paddle` now raises ImportError
    with pytest.raises(EyegcError) as info:
        require_paddle()
    assert str(info.value) == MISSING_PADDLE
    assert "pip install 'eyegc[paddle]'" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(EyegcError, match=r"eyegc\[paddle\]"):
        train_paddle(get_task(GRADING), Path("data"), Path("run"), tiny_paddle_config())
    # The package itself never imports paddle.
    code = (
        "import sys; sys.modules['paddle'] = None\n"
        "import eyegc.common.paddle_backend, eyegc.common.training, eyegc.common.bundle, eyegc.common.inference\n"
        "print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=os.environ)
    assert done.returncode == 0, done.stderr[-2000:]


def test_training_writes_a_verified_paddle_bundle(grading_run: Path, grading_data: Path) -> None:
    config = read_config(grading_run)
    assert config.backend == "paddle"
    assert config.network.model_dump() == {"name": PADDLE_NETWORK, "kwargs": {"depth": 18}, "super_resolution": None}
    assert config.head_classes == [5, 3] and config.preprocessing.input_size == (64, 96)
    assert verify_checksums(grading_run) == ["fold_0/model.pdparams", "fold_1/model.pdparams"]
    for fold in (0, 1):
        info = config.folds[fold]
        assert info.weights == f"fold_{fold}/model.pdparams" and info.epochs_done == 2
        assert 1 <= info.best_epoch <= 2 and info.seconds > 0
        assert (grading_run / f"fold_{fold}" / "training_curve.png").is_file()
    validation = sorted(c for f in config.folds.values() for c in f.validation_cases)
    assert sorted(p.stem for p in (grading_run / "oof").glob("*.npz")) == validation
    assert len(validation) == 6
    assert config.postprocessing.tuned is True  # tuning ran (no binary head: thresholds stay argmax)
    assert config.cross_validation.cases == 6
    assert json.loads((grading_run / "splits.json").read_text())[0]["val"] == config.folds[0].validation_cases


def test_fold_adapter_matches_the_paddle_model(paddle: ModuleType, grading_run: Path, grading_data: Path) -> None:
    config = read_config(grading_run)
    weights = grading_run / config.folds[0].weights
    adapter = load_paddle_fold(config, weights).to("cpu").eval()
    batch = torch.randn(3, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    logits = adapter(batch)
    assert logits.shape == (3, 8) and logits.dtype == torch.float32 and logits.device.type == "cpu"
    # The same weights read by paddle's own loader give the same logits.
    with paddle.utils.unique_name.guard():
        model = build_paddle_network(config)
    model.set_state_dict(paddle.load(str(weights)))
    model.eval()
    with paddle.no_grad():
        direct = model(paddle.to_tensor(batch.numpy())).numpy()
    np.testing.assert_allclose(logits.numpy(), direct, atol=1e-5, rtol=0)

    plugin = get_task(GRADING)
    case = plugin.list_cases(grading_data, "train")[0]
    prepared = prepare_image(plugin.read_image(case.image), config.preprocessing)
    probs = classify_with_tta(adapter, prepared, ("identity", "flip_lr"), [5, 3])
    assert probs.shape == (2, 5)
    assert probs[0].sum().item() == pytest.approx(1.0, abs=1e-5)
    assert probs[1, :3].sum().item() == pytest.approx(1.0, abs=1e-5)
    assert (probs[1, :3] > 0).all() and (probs[1, 3:] == 0).all()


def test_predictor_serves_a_paddle_bundle_as_training_validated_it(grading_run: Path, grading_data: Path) -> None:
    """Predictor over the adapter (no TTA) reproduces the fold's out-of-fold probabilities."""
    plugin = get_task(GRADING)
    config = read_config(grading_run)
    fold = FoldModel(fold=0, network=load_paddle_fold(config, grading_run / config.folds[0].weights))
    bundle = Bundle(path=grading_run, config=config, folds=[fold])  # what load_bundle gives once wired
    cases = {c.case_id: c for c in plugin.list_cases(grading_data, "train")}
    for case_id in config.folds[0].validation_cases:
        grades, probs = Predictor(plugin, [bundle], tta="none", device="cpu").predict(
            plugin.read_image(cases[case_id].image)
        )
        oof = np.load(grading_run / "oof" / f"{case_id}.npz")["probabilities"] / 255.0
        np.testing.assert_allclose(probs, oof, atol=1 / 255 + 1e-6)
        assert grades.shape == (2,) and grades.dtype == np.int64
    _, probs = Predictor(plugin, [bundle], tta="flip", device="cpu").predict(plugin.read_image(cases[case_id].image))
    assert probs.shape == (2, 5) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_interrupted_paddle_training_resumes_exactly(
    paddle: ModuleType, grading_run: Path, grading_data: Path, tmp_path: Path
) -> None:
    plugin = get_task(GRADING)
    run = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        train_paddle(plugin, grading_data, run, tiny_paddle_config(), callbacks=[StopAfter(fold=1, epoch=1)])
    assert 1 not in read_config(run).folds
    with pytest.raises(EyegcError, match="--resume"):
        train_paddle(plugin, grading_data, run, tiny_paddle_config())
    train_paddle(plugin, grading_data, run, tiny_paddle_config(), resume=True)
    assert verify_checksums(run) == verify_checksums(grading_run)
    for fold in (0, 1):
        a = json.loads((grading_run / f"fold_{fold}" / "history.json").read_text())
        b = json.loads((run / f"fold_{fold}" / "history.json").read_text())
        assert a == b
        wa = load_paddle_state(grading_run / f"fold_{fold}" / "model.pdparams")
        wb = load_paddle_state(run / f"fold_{fold}" / "model.pdparams")
        assert wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)


def test_bad_settings_fail_before_training(paddle: ModuleType, grading_run: Path, tmp_path: Path) -> None:
    grading = get_task(GRADING)
    data = tmp_path / "unused"
    with pytest.raises(EyegcError, match="classification tasks only"):
        train_paddle(get_task("drac22-task1"), data, tmp_path / "a", tiny_paddle_config())
    with pytest.raises(EyegcError, match="depth 101 is not one of 18, 34, 50"):
        train_paddle(grading, data, tmp_path / "b", tiny_paddle_config(network_kwargs={"depth": 101}))
    with pytest.raises(EyegcError, match="takes only depth"):
        train_paddle(grading, data, tmp_path / "c", tiny_paddle_config(network_kwargs={"width": 32}))
    with pytest.raises(EyegcError, match="DenseNet121 is a torch network"):
        train_paddle(grading, data, tmp_path / "d", tiny_paddle_config(model="DenseNet121"))
    torch_run = tmp_path / "torch_run"
    torch_run.mkdir()
    config = read_config(grading_run)
    config.backend = "torch"
    (torch_run / "bundle.json").write_text(config.to_json())
    with pytest.raises(EyegcError, match="trained with the torch backend"):
        train_paddle(grading, data, torch_run, tiny_paddle_config(), resume=True)
    assert not any((tmp_path / n).exists() for n in "abcd")


def test_weights_are_read_without_running_code(paddle: ModuleType, tmp_path: Path) -> None:
    evil = tmp_path / "evil.pdparams"
    evil.write_bytes(pickle.dumps({"conv1.weight": os.system}))
    with pytest.raises(EyegcError, match="not allowed"):
        load_paddle_state(evil)


def test_pretrained_rgb_first_convolution_is_summed_for_grey_input(paddle: ModuleType, tmp_path: Path) -> None:
    from eyegc.common.paddle_backend import _load_pretrained

    # Only what build_paddle_network reads (model_construct skips the other required keys).
    network = NetworkSpec(name=PADDLE_NETWORK, kwargs={"depth": 18})
    rgb = BundleConfig.model_construct(network=network, in_channels=3, head_classes=[10])
    grey = rgb.model_copy(update={"in_channels": 1, "head_classes": [2]})
    with paddle.utils.unique_name.guard():
        source = build_paddle_network(rgb)
    paddle.save(source.state_dict(), str(tmp_path / "imagenet.pdparams"))
    with paddle.utils.unique_name.guard():
        target = build_paddle_network(grey)
    missing, skipped = _load_pretrained(target, tmp_path / "imagenet.pdparams")
    assert missing == ["fc.bias", "fc.weight"] and skipped == ["fc.bias", "fc.weight"]
    expected = source.state_dict()["conv1.weight"].numpy().sum(axis=1, keepdims=True)
    np.testing.assert_allclose(target.state_dict()["conv1.weight"].numpy(), expected, rtol=1e-6)


@pytest.mark.skipif("goals-glaucoma" not in available_tasks(), reason="goals-glaucoma is not registered yet")
def test_grey_single_head_task_trains_and_predicts(paddle: ModuleType, tmp_path: Path) -> None:
    plugin = get_task("goals-glaucoma")
    data = write_sample_data(plugin, tmp_path / "data", 6, 3, seed=1)
    run = train_paddle(plugin, data, tmp_path / "run", tiny_paddle_config(epochs=1, extra={"input_size": (64, 64)}))
    config = read_config(run)
    verify_checksums(run)
    adapter = load_paddle_fold(config, run / config.folds[0].weights)
    assert tuple(adapter.model.state_dict()["conv1.weight"].shape)[1] == plugin.in_channels
    heads = [int(c.num_classes or 0) for c in plugin.classes]
    bundle = Bundle(path=run, config=config, folds=[FoldModel(fold=0, network=adapter)])
    case = plugin.list_cases(data, "train")[0]
    grades, probs = Predictor(plugin, [bundle], tta="flip", device="cpu").predict(plugin.read_image(case.image))
    assert grades.shape == (len(heads),) and probs.shape == (len(heads), max(heads))
    assert set(config.postprocessing.thresholds) == {c.key for c in plugin.classes if c.num_classes == 2}


def test_cli_trains_a_paddle_bundle_and_prints_its_summary(
    paddle: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from eyegc.common.cli import main

    plugin = get_task("goals-glaucoma")
    data = write_sample_data(plugin, tmp_path / "data", 6, 3, seed=1)
    run = tmp_path / "run"
    args = ["train", plugin.name, "--data", str(data), "--out", str(run), "--backend", "paddle", "--folds", "2"]
    args += ["--epochs", "1", "--batch-size", "4", "--network-kwargs", '{"depth": 18}', "--input-size", "64,64"]
    assert main([*args, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "fold 0: best epoch 1/1" in out and "thresholds {'glaucoma'" in out and f"model bundle: {run}" in out
    assert read_config(run).backend == "paddle"
