"""Inference: sliding-window prediction, batched test-time augmentation, fold/model ensembling."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from eyegc.common.backend import OwnInference
from eyegc.common.bundle import Bundle, check_input_channels, load_bundle
from eyegc.common.bundle_config import Postprocessing
from eyegc.common.crf import refine_classes
from eyegc.common.datafiles import index_files
from eyegc.common.errors import BundleError, DataError
from eyegc.common.imageio import READABLE_SUFFIXES, atomic_output_dir, split_image_suffix
from eyegc.common.outputs import OutputKind, check_output_path
from eyegc.common.plugin import DIHEDRAL_OPS, TaskKind, TaskPlugin
from eyegc.common.postprocessing import plugin_postprocess
from eyegc.common.preprocessing import prepare_image, resize_probabilities
from eyegc.common.registry import get_backend, look_up_option
from monai.inferers import sliding_window_inference
from torch import nn
from tqdm import tqdm

__all__ = [
    "TTA_OPS",
    "Predictor",
    "classify_with_tta",
    "list_images",
    "predict_folder",
    "resolve_device",
    "tta_ops_for",
]

_Op = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor], bool]

#: op name -> (forward, inverse, swaps H and W). Applied to ``(..., H, W)`` tensors.
TTA_OPS: dict[str, _Op] = {
    "identity": (lambda x: x, lambda x: x, False),
    "flip_lr": (lambda x: x.flip(-1), lambda x: x.flip(-1), False),
    "flip_ud": (lambda x: x.flip(-2), lambda x: x.flip(-2), False),
    "rot180": (lambda x: x.flip(-2, -1), lambda x: x.flip(-2, -1), False),
    "rot90": (lambda x: x.rot90(1, (-2, -1)), lambda x: x.rot90(-1, (-2, -1)), True),
    "rot270": (lambda x: x.rot90(-1, (-2, -1)), lambda x: x.rot90(1, (-2, -1)), True),
    "transpose": (lambda x: x.transpose(-2, -1), lambda x: x.transpose(-2, -1), True),
    "antitranspose": (
        lambda x: x.flip(-2, -1).transpose(-2, -1),
        lambda x: x.flip(-2, -1).transpose(-2, -1),
        True,
    ),
}
assert set(TTA_OPS) == set(DIHEDRAL_OPS)


def tta_ops_for(plugin_or_allowed: TaskPlugin | Mapping[str, Sequence[str]], mode: str) -> tuple[str, ...]:
    """The ops of TTA ``mode`` for a task; a mode the task does not allow is a clear error."""
    allowed = getattr(plugin_or_allowed, "allowed_tta", plugin_or_allowed)
    return tuple(look_up_option(mode, allowed, what="TTA mode for this task"))


#: The device names ``--device`` accepts (torch also knows others, but eyegc is tested on these).
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU; an unknown name or an unavailable CUDA request is an error."""
    if not DEVICE_PATTERN.fullmatch(device):
        raise DataError(f"--device {device!r} is not a device: use auto, cpu, cuda or cuda:N (N = the GPU's index)")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DataError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return torch.device(device)


def classify_with_tta(
    network: nn.Module, image: torch.Tensor, ops: Sequence[str], head_sizes: Sequence[int]
) -> torch.Tensor:
    """Mean per-head softmax ``(heads, max classes)`` (zero-padded) over the TTA copies of one prepared image.

    All copies go through the network as one batch; a rotation of a non-square image changes its
    shape, so such copies form a second batch.
    """
    groups: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for name in ops:
        copy = TTA_OPS[name][0](image)
        groups.setdefault(tuple(copy.shape), []).append(copy)
    total = torch.zeros((len(head_sizes), max(head_sizes)), dtype=torch.float32, device=image.device)
    for copies in groups.values():
        logits = network(torch.stack(copies)).float()
        for h, chunk in enumerate(logits.split(list(head_sizes), dim=1)):
            total[h, : chunk.shape[1]] += torch.softmax(chunk, dim=1).sum(dim=0)
    return total / len(ops)


def _activation(kind: TaskKind) -> Callable[[torch.Tensor], torch.Tensor]:
    if kind == TaskKind.MULTILABEL_SEGMENTATION:
        return torch.sigmoid
    return lambda logits: torch.softmax(logits, dim=1)


def predict_with_tta(
    network: nn.Module,
    image: torch.Tensor,
    ops: Sequence[str],
    patch_size: int,
    kind: TaskKind,
    sw_batch_size: int = 4,
    overlap: float = 0.5,
) -> torch.Tensor:
    """Mean probabilities ``(C, h, w)`` over the TTA copies of one prepared image ``(C_in, h, w)``.

    MONAI's sliding-window inferer (Gaussian blending) walks the image; every batch of windows is
    expanded into its TTA copies and run through the network as ONE batched forward pass, then
    each copy is transformed back and the copies averaged. For a fully convolutional network this
    equals whole-image TTA up to border effects. ``patch_size`` 0 makes the whole image one
    window; only then can a rotation change the window's shape (non-square image), and those
    copies form a second batch.
    """
    activation = _activation(kind)

    def tta_forward(windows: torch.Tensor) -> torch.Tensor:
        square = windows.shape[-1] == windows.shape[-2]
        groups: dict[bool, list[str]] = {}
        for name in ops:
            groups.setdefault(TTA_OPS[name][2] and not square, []).append(name)
        total = None
        for names in groups.values():
            batch = torch.cat([TTA_OPS[n][0](windows) for n in names])
            probs = activation(network(batch).float())
            chunks = probs.chunk(len(names))
            restored = sum(TTA_OPS[n][1](chunk) for n, chunk in zip(names, chunks, strict=True))
            total = restored if total is None else total + restored
        assert total is not None
        return total / len(ops)

    roi = (patch_size, patch_size) if patch_size else tuple(image.shape[-2:])
    probs = sliding_window_inference(
        image[None], roi_size=roi, sw_batch_size=sw_batch_size, predictor=tta_forward, overlap=overlap, mode="gaussian"
    )
    return probs[0]


class Predictor:
    """Probabilities for a task from one or more bundles: every fold of every bundle, averaged.

    Args:
        plugin: the task.
        bundles: loaded bundles for that task (at least one).
        tta: TTA mode name (``"none"``, ``"flip"``, ``"dihedral"``), restricted per task.
        device: torch device; CUDA runs under autocast (AMP).
    """

    def __init__(
        self, plugin: TaskPlugin, bundles: Sequence[Bundle], tta: str = "flip", device: str | torch.device = "cpu"
    ) -> None:
        if not bundles:
            raise BundleError("give at least one model bundle (--model RUN)")
        for bundle in bundles:
            if bundle.task != plugin.name:
                raise BundleError(f"{bundle.path} was trained for {bundle.task!r}, not {plugin.name!r}")
            if bundle.classes != [c.key for c in plugin.classes]:
                raise BundleError(f"{bundle.path} predicts classes {bundle.classes}; {plugin.name} has others")
            check_input_channels(bundle.config, plugin, bundle.path)
        self.plugin = plugin
        self.bundles = list(bundles)
        self.ops = tta_ops_for(plugin, tta)
        self.device = torch.device(device)
        #: bundle index -> the backend's own predictor (OwnInference); the others run eyegc's.
        self.own_predictors: dict[int, Callable[[np.ndarray], np.ndarray]] = {}
        for index, bundle in enumerate(self.bundles):
            backend = get_backend(bundle.config.backend)
            if isinstance(backend, OwnInference):
                folds = [fold.network for fold in bundle.folds]
                self.own_predictors[index] = backend.bundle_predictor(plugin, bundle.config, folds, tta, self.device)
                continue
            for fold in bundle.folds:
                fold.network.to(self.device).eval()

    @property
    def members(self) -> int:
        """How many networks the ensemble averages."""
        return sum(len(b.folds) for b in self.bundles)

    @property
    def postprocessing(self) -> Postprocessing:
        """Thresholds and component sizes: the first bundle's (documented ensemble rule)."""
        return self.bundles[0].config.postprocessing

    @torch.no_grad()
    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """``(C, H, W)`` float32 probabilities at the image's original size (classification: ``(heads, K)``)."""
        if self.plugin.kind == TaskKind.CLASSIFICATION:
            return self._class_probabilities(image)
        shape = tuple(image.shape[-2:])
        total = torch.zeros((len(self.plugin.classes), *shape), dtype=torch.float32)
        autocast = torch.autocast("cuda") if self.device.type == "cuda" else nullcontext()
        for index, bundle in enumerate(self.bundles):
            if index in self.own_predictors:  # its fold mean, weighted as its folds
                total += torch.from_numpy(self.own_predictors[index](image)) * len(bundle.folds)
                continue
            prepared = prepare_image(image, bundle.config.preprocessing).to(self.device)
            for fold in bundle.folds:
                with autocast:
                    probs = predict_with_tta(
                        fold.network, prepared, self.ops, bundle.config.patch_size, self.plugin.kind
                    )
                total += resize_probabilities(probs.float().cpu(), shape)
        return (total / self.members).numpy()

    def _class_probabilities(self, image: np.ndarray) -> np.ndarray:
        head_sizes = [int(c.num_classes or 0) for c in self.plugin.classes]
        total = torch.zeros((len(head_sizes), max(head_sizes)), dtype=torch.float32)
        autocast = torch.autocast("cuda") if self.device.type == "cuda" else nullcontext()
        for bundle in self.bundles:
            prepared = prepare_image(image, bundle.config.preprocessing).to(self.device)
            for fold in bundle.folds:
                with autocast:
                    total += classify_with_tta(fold.network, prepared, self.ops, head_sizes).cpu()
        return (total / self.members).numpy()

    def predict(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Final masks ``(C, H, W)`` uint8 0/1 (label map for softmax tasks; grades for classification) and
        the probabilities (before a bundle's dense CRF, which refines them for the masks only)."""
        probs = self.probabilities(image)
        # eyegc tune --crf: a dense CRF on the image decides the masks. The probabilities returned (written,
        # ranked by AUC/AUPR) stay the ensemble's: the CRF's marginals are nearly binary and lose the ranking.
        refined = refine_classes(probs, image, [c.key for c in self.plugin.classes], self.postprocessing.crf)
        return plugin_postprocess(self.plugin, refined, self.postprocessing), probs


def list_images(folder: Path) -> list[Path]:
    """Readable images directly in ``folder``, sorted by name (hidden files skipped, suffixes in any case).

    Raises:
        DataError: the folder is missing or holds no readable image, two images are one case
            (``a.png`` and ``a.tif`` would be predicted into one set of masks; the message names
            both), or an image is of a type eyegc cannot read.
    """
    folder = Path(folder)
    if folder.is_file():
        raise DataError(f"--images {folder} is a file; give the folder that holds the images (here {folder.parent})")
    if not folder.is_dir():
        raise DataError(f"images folder not found: {folder}")
    images = sorted(index_files(folder, READABLE_SUFFIXES).values())
    if not images:
        raise DataError(f"{folder} holds no images ({', '.join(READABLE_SUFFIXES)})")
    return images


def predict_folder(
    plugin: TaskPlugin,
    models: Sequence[Path],
    images: Path,
    out: Path,
    tta: str = "flip",
    save_probabilities: bool = False,
    device: str = "auto",
    overwrite: bool = False,
) -> dict:
    """Predict every image in a folder and write the task's prediction layout to ``out``.

    Every fold of every bundle in ``models`` is averaged; thresholds and postprocessing come from
    the bundle. Probabilities (``out/probabilities/<case>.npz``, float16 ``(C, H, W)``) on request.
    The output folder appears only when every case succeeded.

    Returns:
        A summary: cases, ensemble members, TTA ops, seconds per case.
    """
    check_output_path(out, "--out", OutputKind.FOLDER, [("--images", images), *(("--model", m) for m in models)])
    paths = list_images(images)
    bundles = [load_bundle(m, task=plugin.name) for m in models]
    predictor = Predictor(plugin, bundles, tta=tta, device=resolve_device(device))
    started = time.perf_counter()
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        for path in tqdm(paths, desc=f"predict {plugin.name}", unit="case"):
            case_id = split_image_suffix(path.name)[0]
            masks, probs = predictor.predict(plugin.read_image(path))
            plugin.write_prediction(tmp, case_id, masks, probs)
            if save_probabilities and plugin.kind != TaskKind.CLASSIFICATION:
                (tmp / "probabilities").mkdir(exist_ok=True)
                np.savez_compressed(
                    tmp / "probabilities" / f"{case_id}.npz",
                    probabilities=probs.astype(np.float16),
                    classes=np.array([c.key for c in plugin.classes]),
                )
    elapsed = time.perf_counter() - started
    return {
        "cases": len(paths),
        "members": predictor.members,
        "tta": list(predictor.ops),
        "seconds_per_case": elapsed / len(paths),
    }
