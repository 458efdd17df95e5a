"""A PaddlePaddle backend for classification tasks (GOALS glaucoma, IDRiD grading).

``eyegc train TASK --backend paddle`` trains a ``paddle.vision`` ResNet (depth 18, 34 or 50;
50 by default, as the challenge reports used) and writes the same run folder as the torch
path, so tuning, evaluation, prediction and the container work unchanged::

    RUN/bundle.json               "backend": "paddle", "network": {"name": "PaddleResNet", "kwargs": {"depth": 50}}
    RUN/splits.json               the deterministic k-fold split (:func:`eyegc.common.training.make_splits`)
    RUN/fold_<k>/model.pdparams   best-epoch weights: ``paddle.save(model.state_dict())``
    RUN/checksums.sha256          as for every bundle
    RUN/fold_<k>/checkpoint.pdckpt, history.json, training_curve.png, RUN/oof/*.npz   training artefacts

Choices:

* Input channels: the network takes the task's own channel count. For anything but 3 channels
  (GOALS B-scans are grey) the first convolution is replaced by one with that many inputs; a
  3-channel ``--pretrained`` first convolution is summed over its inputs into a 1-channel one
  (the same as feeding the grey image three times).
* Augmentation (numpy, seeded per epoch): random flips within the task's allowed TTA ops (left-right;
  up-down where allowed), intensity scaling (±15 %, p 0.5) and Gaussian noise (σ 0.05, p 0.2), as the
  torch path's intensity steps; its small rotations and elastic warps are left out.
* Optimiser and schedule as the torch path: AdamW (weight decay 1e-4), learning rate decayed
  per epoch by ``(1 - epoch / epochs) ** 0.9``; loss: cross-entropy per head, averaged (weighted by
  ``--class-weights``, one per head), as :class:`eyegc.common.losses.MultiHeadCrossEntropy`.
* Weights stay in Paddle's own ``.pdparams`` format but are read back with an unpickler that only
  rebuilds numpy arrays, so loading a bundle or checkpoint never runs code from it (``paddle.load`` would).
* Every epoch ends with a checkpoint; ``resume=True`` continues exactly (CPU).

PaddlePaddle is an optional extra (``pip install 'eyegc[paddle]'``) imported only inside these
functions; without it, :func:`require_paddle` raises one clear :class:`EyegcError`.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from eyegc.common.backend import EpochCallback
from eyegc.common.bundle import CONFIG_NAME, read_config
from eyegc.common.bundle_config import BundleConfig, FoldRecord, NetworkSpec
from eyegc.common.errors import BundleError, EyegcError
from eyegc.common.plugin import TaskKind, TaskPlugin
from eyegc.common.postprocessing import postprocess
from eyegc.common.training import (
    FoldJob,
    FoldLog,
    TrainConfig,
    TrainingData,
    resolve_config,
    train,
)

__all__ = [
    "PADDLE_BACKEND",
    "PADDLE_CHECKPOINT_NAME",
    "PADDLE_DEPTHS",
    "PADDLE_NETWORK",
    "PADDLE_WEIGHTS_NAME",
    "PaddleBackend",
    "PaddleNetwork",
    "build_paddle_network",
    "load_paddle_fold",
    "load_paddle_state",
    "paddle_device",
    "require_paddle",
    "train_paddle",
]

#: :attr:`BundleConfig.network` name of a paddle bundle.
PADDLE_NETWORK = "PaddleResNet"
#: the ResNet depths ``paddle.vision.models`` offers here.
PADDLE_DEPTHS: tuple[int, ...] = (18, 34, 50)
#: per-fold weights file of a paddle bundle.
PADDLE_WEIGHTS_NAME = "model.pdparams"
#: per-fold training state of a paddle run, for resume (not part of the bundle).
PADDLE_CHECKPOINT_NAME = "checkpoint.pdckpt"
DEFAULT_DEPTH = 50
MISSING_PADDLE = "the paddle backend needs PaddlePaddle: pip install 'eyegc[paddle]' (CPU) or paddlepaddle-gpu"


def require_paddle() -> ModuleType:
    """Import PaddlePaddle, or raise one clear :class:`EyegcError` naming the extra.

    Raises:
        EyegcError: paddle is not installed (or cannot be imported).
    """
    try:
        with warnings.catch_warnings():
            # paddle's C++-extension helper warns about ccache on every import.
            warnings.filterwarnings("ignore", message=".*ccache.*")
            import paddle
    except ImportError:
        raise EyegcError(MISSING_PADDLE) from None
    return paddle


# ---------------------------------------------------------------- network and weights


def _depth(kwargs: dict[str, Any]) -> int:
    unknown = sorted(set(kwargs) - {"depth"})
    if unknown:
        raise EyegcError(
            f"network {PADDLE_NETWORK} takes no argument {', '.join(map(repr, unknown))}; "
            f"it takes only depth ({', '.join(map(str, PADDLE_DEPTHS))})"
        )
    depth = kwargs.get("depth", DEFAULT_DEPTH)
    if isinstance(depth, bool) or not isinstance(depth, (int, str)) or str(depth) not in map(str, PADDLE_DEPTHS):
        raise EyegcError(f"{PADDLE_NETWORK} depth {depth!r} is not one of {', '.join(map(str, PADDLE_DEPTHS))}")
    return int(depth)


def _head_sizes(config: BundleConfig) -> list[int]:
    return [int(n) for n in config.head_classes or ()]


def build_paddle_network(config: BundleConfig) -> Any:
    """The untrained ``paddle.nn.Layer`` a paddle bundle config describes, on paddle's current device.

    A ``paddle.vision.models.resnet{depth}`` with ``sum(head_classes)`` outputs; its first
    convolution takes ``config.in_channels`` channels.
    """
    paddle = require_paddle()
    net = config.network
    if net.name != PADDLE_NETWORK:
        raise BundleError(f"network {net.name!r} is not a paddle network ({PADDLE_NETWORK})")
    depth = _depth(dict(net.kwargs))
    builder = {18: paddle.vision.models.resnet18, 34: paddle.vision.models.resnet34, 50: paddle.vision.models.resnet50}
    model = builder[depth](pretrained=False, num_classes=sum(_head_sizes(config)))
    in_channels = config.in_channels
    if in_channels != 3:
        model.conv1 = paddle.nn.Conv2D(in_channels, 64, kernel_size=7, stride=2, padding=3, bias_attr=False)
    return model


_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("collections", "OrderedDict"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds dicts, lists, numbers, strings and numpy arrays; any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a weights file")


def _read_pickle(path: Path) -> Any:
    with open(path, "rb") as handle:
        return _ArrayUnpickler(handle, encoding="latin1").load()


def load_paddle_state(path: Path) -> dict[str, np.ndarray]:
    """A state dict saved by ``paddle.save(layer.state_dict(), path)``, as numpy arrays, without running code.

    Raises:
        EyegcError: the file is missing, is not a paddle state dict, or holds objects other than arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise EyegcError(f"weights file not found: {path}")
    try:
        state = _read_pickle(path)
    except Exception as exc:
        raise EyegcError(
            f"cannot read a paddle state dict from {path} ({str(exc).splitlines()[0][:120]}); "
            "save weights with paddle.save(layer.state_dict(), PATH)"
        ) from None
    if not isinstance(state, dict):
        raise EyegcError(f"{path} holds a {type(state).__name__}, not a paddle state dict")
    if "UnpackBigParamInfor@@" in state:
        raise EyegcError(f"{path} splits parameters over 4 GB; save it with protocol 4")
    state.pop("StructuredToParameterName@@", None)
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    if len(arrays) != len(state):
        raise EyegcError(f"{path} is not a paddle state dict (entries other than arrays)")
    return arrays


def _set_weights(model: Any, state: dict[str, np.ndarray], path: Path) -> None:
    """Load ``state`` into ``model`` exactly (every key, every shape) or raise a BundleError naming ``path``."""
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        raise BundleError(
            f"weights {path} do not fit the bundle's network (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}, other shapes {wrong[:3]}); the bundle is damaged"
        )
    model.set_state_dict(state)


def _load_pretrained(model: Any, path: Path) -> tuple[list[str], list[str]]:
    """Load a user's paddle state dict (never downloaded) where names and shapes match.

    A 3-channel first convolution is summed over its inputs for a 1-channel network; the
    classifier (other number of outputs) is skipped.

    Returns:
        The missing and the skipped keys.
    """
    state = load_paddle_state(path)
    own = model.state_dict()
    conv = state.get("conv1.weight")
    if conv is not None and "conv1.weight" in own:
        wanted = tuple(own["conv1.weight"].shape)
        if conv.ndim == 4 and wanted[1] == 1 and conv.shape[1] == 3 and wanted[0] == conv.shape[0]:
            state["conv1.weight"] = conv.sum(axis=1, keepdims=True)
    usable = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    if not usable:
        raise EyegcError(f"no tensor in {path} matches the {PADDLE_NETWORK} parameter names and shapes")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skip loading for")  # reported in the return value
        model.set_state_dict(usable)
    return sorted(set(own) - set(usable)), sorted(set(state) - set(usable))


@contextlib.contextmanager
def _paddle_device_scope(paddle: ModuleType, device: str) -> Iterator[None]:
    """Run with paddle's global device set to ``device``, then restore it."""
    previous = paddle.get_device()
    paddle.set_device(device)
    try:
        yield
    finally:
        paddle.set_device(previous)


def paddle_device(device: str | torch.device) -> str:
    """eyegc's ``--device`` (``auto``, ``cpu``, ``cuda[:N]``) as a paddle device (``cpu``, ``gpu:N``).

    Raises:
        EyegcError: a GPU was asked for but this paddle has no CUDA or sees no GPU.
    """
    paddle = require_paddle()
    name = str(device)
    has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if name == "auto":
        return "gpu:0" if has_gpu else "cpu"
    if name == "cpu":
        return "cpu"
    if name.split(":")[0] in ("cuda", "gpu"):
        if not has_gpu:
            raise EyegcError(
                f"--device {name} was asked for but this PaddlePaddle sees no CUDA GPU "
                "(install paddlepaddle-gpu on a GPU machine); use --device cpu"
            )
        index = name.split(":")[1] if ":" in name else "0"
        return f"gpu:{int(index)}"
    raise EyegcError(f"--device {name} is not auto, cpu or cuda[:N]")


class PaddleNetwork:
    """A paddle classifier that eyegc's torch inference can call like an ``nn.Module`` in eval mode.

    Takes a ``(B, C, H, W)`` float torch tensor and returns ``(B, sum(head sizes))`` float32 torch
    logits on the input's device, converting through numpy under ``paddle.no_grad()``.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.place = "cpu"
        self.model.eval()

    def to(self, device: str | torch.device) -> PaddleNetwork:
        """Run on a CUDA GPU when asked and paddle has one (else stay on the CPU); returns self."""
        paddle = require_paddle()
        torch_device = torch.device(device)
        wanted = "cpu"
        if torch_device.type == "cuda" and paddle.device.is_compiled_with_cuda():
            wanted = f"gpu:{torch_device.index or 0}"
        if wanted != self.place:
            self.model.to(device=wanted)
            self.place = wanted
        return self

    def eval(self) -> PaddleNetwork:
        """Eval mode (batch-norm running statistics); returns self."""
        self.model.eval()
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        paddle = require_paddle()
        array = np.ascontiguousarray(x.detach().float().cpu().numpy())
        with paddle.no_grad():
            logits = self.model(paddle.to_tensor(array, place=_place(paddle, self.place))).numpy()
        return torch.from_numpy(np.asarray(logits, dtype=np.float32)).to(x.device)


def _place(paddle: ModuleType, device: str) -> Any:
    if device.startswith("gpu"):
        return paddle.CUDAPlace(int(device.split(":")[1]))
    return paddle.CPUPlace()


def load_paddle_fold(config: BundleConfig, weights: Path) -> PaddleNetwork:
    """One fold of a paddle bundle, on the CPU in eval mode, callable like a torch classifier.

    Raises:
        EyegcError: paddle is not installed.
        BundleError: the weights cannot be read or do not fit the network.
    """
    paddle = require_paddle()
    weights = Path(weights)
    try:
        state = load_paddle_state(weights)
    except EyegcError as exc:
        raise BundleError(f"cannot load weights {weights}: {exc}") from None
    with _paddle_device_scope(paddle, "cpu"), paddle.utils.unique_name.guard():
        try:
            model = build_paddle_network(config)
        except EyegcError as exc:  # an edited bundle.json (an unknown argument, a depth paddle lacks): name it
            raise BundleError(f"{weights.parent.parent / CONFIG_NAME}: {exc}") from None
    _set_weights(model, state, weights)
    return PaddleNetwork(model)


# ---------------------------------------------------------------- training


def _seed(paddle: ModuleType, seed: int) -> None:
    np.random.seed(seed % (2**32))
    paddle.seed(seed)


def _save_pickle_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        pickle.dump(obj, handle, protocol=4)
    os.replace(tmp, path)


def _save_weights_atomic(paddle: ModuleType, model: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    paddle.save(model.state_dict(), str(tmp))
    os.replace(tmp, path)


def _numpy_state(state: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in state.items()}


def _augment(image: np.ndarray, ops: set[str], rng: np.random.Generator) -> np.ndarray:
    """Flips within the allowed TTA ops, then intensity scaling and Gaussian noise (a new array)."""
    out = image
    if "flip_lr" in ops and rng.random() < 0.5:
        out = out[..., ::-1]
    if "flip_ud" in ops and rng.random() < 0.5:
        out = out[..., ::-1, :]
    out = np.array(out, dtype=np.float32)
    if rng.random() < 0.5:
        out *= np.float32(1.0 + rng.uniform(-0.15, 0.15))
    if rng.random() < 0.2:
        out += rng.normal(0.0, 0.05, size=out.shape).astype(np.float32)
    return out


def _loss(paddle: ModuleType, logits: Any, labels: Any, head_sizes: list[int], weights: list[float]) -> Any:
    """Cross-entropy of each head on its slice of the logits, weighted mean over heads."""
    total = None
    for h, chunk in enumerate(paddle.split(logits, head_sizes, axis=1)):
        term = paddle.nn.functional.cross_entropy(chunk, labels[:, h]) * weights[h]
        total = term if total is None else total + term
    return total / sum(weights)


def _probabilities(paddle: ModuleType, model: Any, images: np.ndarray, head_sizes: list[int]) -> np.ndarray:
    """Per-head softmax of a batch, ``(B, heads, max classes)`` float32, zero-padded."""
    with paddle.no_grad():
        logits = model(paddle.to_tensor(images)).numpy().astype(np.float32)
    out = np.zeros((len(images), len(head_sizes), max(head_sizes)), dtype=np.float32)
    start = 0
    for h, size in enumerate(head_sizes):
        chunk = logits[:, start : start + size]
        chunk = np.exp(chunk - chunk.max(axis=1, keepdims=True))
        out[:, h, :size] = chunk / chunk.sum(axis=1, keepdims=True)
        start += size
    return out


def _validate(
    paddle: ModuleType,
    plugin: TaskPlugin,
    model: Any,
    images: dict[str, np.ndarray],
    targets: dict[str, np.ndarray],
    ids: list[str],
    config: BundleConfig,
) -> tuple[float, dict[str, np.ndarray]]:
    """The leaderboard metric on the validation cases (no TTA), as the torch path's ``_validate_classification``."""
    model.eval()
    probabilities: dict[str, np.ndarray] = {}
    for start in range(0, len(ids), 8):
        chunk = ids[start : start + 8]
        probs = _probabilities(paddle, model, np.stack([images[c] for c in chunk]), _head_sizes(config))
        probabilities.update(zip(chunk, probs, strict=True))
    predictions = [postprocess(probabilities[c], plugin.kind, config.classes, config.postprocessing) for c in ids]
    result = plugin.metric(
        plugin.name, predictions, [targets[c] for c in ids], ids, probabilities=[probabilities[c] for c in ids]
    )
    return float(result.leaderboard[plugin.metric.primary]), probabilities


def _train_fold(paddle: ModuleType, job: FoldJob, data: dict[str, Any], fold: int) -> FoldRecord:
    """One fold of ``job`` on ``data`` (:func:`_as_arrays`); returns its ``bundle.json`` record."""
    plugin, run, config, split, callbacks = job.plugin, job.run, job.config, job.splits[fold], job.callbacks
    t = config.training
    fold_dir = run / f"fold_{fold}"
    fold_dir.mkdir(exist_ok=True)
    checkpoint_path = fold_dir / PADDLE_CHECKPOINT_NAME
    weights_path = fold_dir / PADDLE_WEIGHTS_NAME
    head_sizes = _head_sizes(config)
    head_weights = [float(w) for w in t.class_weights or [1.0] * len(head_sizes)]
    ops = set().union(*config.allowed_tta.values())
    images: dict[str, np.ndarray] = data["images"]
    labels: dict[str, np.ndarray] = data["labels"]
    base_seed = t.seed * 1000 + fold
    epochs, batch_size, base_lr = t.epochs, t.batch_size, t.learning_rate
    # Fresh parameter names per fold: the optimizer state is keyed by them, so resume finds its own.
    with paddle.utils.unique_name.guard():
        _seed(paddle, base_seed)
        model = build_paddle_network(config)
        if t.pretrained and not checkpoint_path.is_file():
            _load_pretrained(model, Path(t.pretrained))
        optimizer = paddle.optimizer.AdamW(learning_rate=base_lr, parameters=model.parameters(), weight_decay=1e-4)
        log = FoldLog(fold, fold_dir, t.metric, callbacks)
        start_epoch = 0
        if checkpoint_path.is_file():
            try:
                state = _read_pickle(checkpoint_path)
                _set_weights(model, state["network"], checkpoint_path)
                optimizer.set_state_dict(state["optimizer"])
            except Exception as exc:
                raise EyegcError(f"cannot resume from {checkpoint_path} ({str(exc)[:160]}); start a new run") from None
            start_epoch = log.restore(state)
        train_ids = sorted(split["train"])
        progress = log.progress(start_epoch, epochs)
        for epoch in progress:
            # Every epoch is a pure function of (weights, optimizer state, epoch): resume is exact.
            rng = np.random.default_rng(base_seed * 10007 + epoch)
            optimizer.set_lr(base_lr * (1.0 - epoch / epochs) ** 0.9)
            model.train()
            order = [train_ids[i] for i in rng.permutation(len(train_ids))]
            losses = []
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*always track global mean and variance.*")
                for start in range(0, len(order), batch_size):
                    chunk = order[start : start + batch_size]
                    x = paddle.to_tensor(np.stack([_augment(images[c], ops, rng) for c in chunk]))
                    y = paddle.to_tensor(np.stack([labels[c] for c in chunk]))
                    loss = _loss(paddle, model(x), y, head_sizes, head_weights)
                    loss.backward()
                    optimizer.step()
                    optimizer.clear_grad()
                    losses.append(float(loss))
            score, _ = _validate(paddle, plugin, model, images, data["targets"], split["val"], config)
            if log.add_epoch(float(np.mean(losses)), score):
                _save_weights_atomic(paddle, model, weights_path)
            state = {"network": _numpy_state(model.state_dict()), "optimizer": _numpy_state(optimizer.state_dict())}
            _save_pickle_atomic(state | log.checkpoint_fields(), checkpoint_path)
            log.end_epoch(progress)
        _set_weights(model, load_paddle_state(weights_path), weights_path)
        out_of_fold = _validate(paddle, plugin, model, images, data["targets"], split["val"], config)[1]
    return log.finish(PADDLE_WEIGHTS_NAME, split["val"], out_of_fold)


def _paddle_config(plugin: TaskPlugin, cfg: TrainConfig) -> BundleConfig:
    """The shared run config (same validation and defaults), with the paddle network."""
    if cfg.model not in (None, "ResNet", PADDLE_NETWORK):
        raise EyegcError(f"the paddle backend trains {PADDLE_NETWORK} only (--model {cfg.model} is a torch network)")
    try:
        depth = _depth(dict(cfg.network_kwargs or {}))
    except EyegcError as exc:
        raise EyegcError(f"--network-kwargs: {exc}") from None
    config = resolve_config(plugin, replace(cfg, model=None, network_kwargs=None))
    return config.model_copy(
        update={"backend": PADDLE_BACKEND.name, "network": NetworkSpec(name=PADDLE_NETWORK, kwargs={"depth": depth})}
    )


def _check_network(paddle: ModuleType, config: BundleConfig, first: np.ndarray) -> None:
    """Build the network and run one image through it, so bad settings fail before any training."""
    try:
        with paddle.utils.unique_name.guard():
            model = build_paddle_network(config)
            if config.training.pretrained:
                _load_pretrained(model, Path(config.training.pretrained))
            model.eval()
            with paddle.no_grad():
                model(paddle.to_tensor(np.zeros((1, *first.shape), dtype=np.float32)))
    except EyegcError:
        raise
    except Exception as exc:
        raise EyegcError(
            f"network {PADDLE_NETWORK} cannot take a {first.shape[-1]}x{first.shape[-2]} input "
            f"({str(exc).splitlines()[0][:120]}); choose another input size"
        ) from None


def _as_arrays(data: TrainingData) -> dict[str, Any]:
    """The prepared training data as paddle takes it: float32 images and int64 labels."""
    return {
        "images": {c: np.ascontiguousarray(v.numpy(), dtype=np.float32) for c, v in data.images.items()},
        "labels": {c: np.asarray(v.numpy(), dtype=np.int64).reshape(-1) for c, v in data.labels.items()},
        "targets": data.targets,
    }


@dataclass(frozen=True)
class PaddleBackend:
    """A ``paddle.vision`` ResNet for classification tasks, one fold after another."""

    name: str = "paddle"
    checkpoint_name: str = PADDLE_CHECKPOINT_NAME
    #: one process: paddle's own distributed training is not wired (torchrun is torch's).
    distributed: bool = False
    #: the optional dependencies an image holding such a bundle installs (NeedsExtra).
    extra: str = "paddle"

    def check_settings(self, plugin: TaskPlugin, cfg: TrainConfig) -> None:
        """Classification tasks only, folds one after another, paddle installed, a device paddle has."""
        if plugin.kind != TaskKind.CLASSIFICATION:
            raise EyegcError(
                f"the paddle backend trains classification tasks only; {plugin.name} is a {plugin.kind.value} "
                "task: use --backend torch"
            )
        if cfg.jobs > 1:
            raise EyegcError("the paddle backend trains its folds one after another: use --jobs 1")
        require_paddle()
        paddle_device(cfg.device)

    def configure(self, plugin: TaskPlugin, cfg: TrainConfig) -> BundleConfig:
        """The shared run config with this backend's name and the ResNet's depth."""
        return _paddle_config(plugin, cfg)

    def check_network(self, config: BundleConfig, data: TrainingData, device: str) -> None:
        """Build the network and run the first training image through it."""
        paddle = require_paddle()
        first = np.ascontiguousarray(next(iter(data.images.values())).numpy(), dtype=np.float32)
        with _paddle_device_scope(paddle, paddle_device(device)):
            _check_network(paddle, config, first)

    def train_folds(self, job: FoldJob) -> None:
        """Train the folds ``job.todo`` one after another; ``job.finished`` records each."""
        paddle = require_paddle()
        arrays = _as_arrays(job.data)
        with _paddle_device_scope(paddle, paddle_device(job.cfg.device)):
            for fold in job.todo:
                started = time.perf_counter()
                info = _train_fold(paddle, job, arrays, fold)
                job.finished(fold, info, time.perf_counter() - started)

    def load_fold(self, config: BundleConfig, weights: Path) -> PaddleNetwork:
        """One fold of a paddle bundle (:func:`load_paddle_fold`)."""
        return load_paddle_fold(config, weights)


#: The instance the ``eyegc.backends`` entry point ``paddle`` names.
PADDLE_BACKEND = PaddleBackend()


def train_paddle(
    plugin: TaskPlugin,
    data_root: Path,
    run: Path,
    cfg: TrainConfig,
    resume: bool = False,
    callbacks: Sequence[EpochCallback] = (),
) -> Path:
    """:func:`eyegc.common.training.train` with the paddle backend (and only it: a torch run is not resumed).

    The run folder is the torch path's (``bundle.json`` with ``"backend": "paddle"``, ``splits.json``,
    ``fold_<k>/model.pdparams``, checksums, out-of-fold probabilities).

    Raises:
        EyegcError: paddle is missing, the task is not a classification task, bad settings, or
            ``resume`` of a run another backend trained.
    """
    run = Path(run)
    if resume and (run / CONFIG_NAME).is_file():
        trained_with = read_config(run).backend
        if trained_with != PADDLE_BACKEND.name:
            raise EyegcError(f"{run} was trained with the {trained_with} backend; resume it with that")
    return train(plugin, data_root, run, replace(cfg, backend="paddle"), resume=resume, callbacks=callbacks)
