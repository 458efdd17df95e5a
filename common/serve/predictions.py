"""What ``eyegc serve`` does with one upload: check it, predict it, and keep what the page offers.

Bundles are loaded once (:func:`load_choices`); one prediction runs at a time and the others wait
their turn (:class:`PredictionService`); an upload is written to a private temporary folder only
for as long as it is read, and every download is made while the prediction is at hand, so nothing
of an upload stays on disk.
"""

from __future__ import annotations

import base64
import io
import re
import tempfile
import threading
import time
import uuid
import zipfile
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from eyegc.common.bundle import Bundle, load_bundle, read_config
from eyegc.common.errors import EyegcError
from eyegc.common.imageio import split_image_suffix
from eyegc.common.inference import Predictor, resolve_device
from eyegc.common.plugin import TaskKind, TaskPlugin
from eyegc.common.registry import get_task
from eyegc.common.report.overlays import (
    class_masks,
    display_factor,
    display_image,
    reduce_masks,
    shown_classes,
)
from eyegc.common.serve.page_pdf import one_page_pdf
from PIL import Image

__all__ = [
    "UPLOAD_SUFFIXES",
    "ModelChoice",
    "PredictionService",
    "ServedPrediction",
    "UploadError",
    "load_choices",
]

#: The image types the page accepts, by suffix (lower case).
UPLOAD_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".mha")
#: An upload whose header claims more pixels than this is refused before it is decoded (IDRiD: 12.2 M).
MAX_PIXELS = 100_000_000
#: Predictions kept for their downloads; the oldest goes first.
KEPT_RESULTS = 16


class UploadError(EyegcError):
    """An upload the page reports instead of predicting: ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ModelChoice:
    """A model the page offers: one bundle, or every bundle of one task averaged."""

    key: str
    label: str
    plugin: TaskPlugin
    bundles: tuple[Bundle, ...]

    def describe(self) -> dict[str, Any]:
        """What the page needs to show the choice and its results."""
        return {
            "key": self.key,
            "label": self.label,
            "task": self.plugin.name,
            "title": self.plugin.title,
            "kind": self.plugin.kind.value,
            "tta": list(self.plugin.allowed_tta),
            "members": sum(len(b.folds) for b in self.bundles),
            "classes": [
                {"key": c.spec.key, "name": c.spec.name, "colour": c.colour} for c in shown_classes(self.plugin)
            ],
        }


def load_choices(models: Sequence[Path]) -> list[ModelChoice]:
    """Every bundle as a choice, and for a task with several bundles their ensemble too.

    Raises:
        BundleError: a model that is no bundle, or a tampered one (the message names it).
    """
    bundles = []
    for path in models:
        task = read_config(Path(path)).task
        bundles.append(load_bundle(Path(path), task=task))
    choices = [
        ModelChoice(f"model-{i + 1}", f"{b.path.name} ({b.task}, {len(b.folds)} folds)", get_task(b.task), (b,))
        for i, b in enumerate(bundles)
    ]
    for task in dict.fromkeys(b.task for b in bundles):
        members = tuple(b for b in bundles if b.task == task)
        if len(members) > 1:
            label = f"ensemble of {len(members)} bundles ({task})"
            choices.append(ModelChoice(f"ensemble-{task}", label, get_task(task), members))
    return choices


@dataclass
class ServedPrediction:
    """One upload's prediction: the page's JSON and the bytes of each download."""

    summary: dict[str, Any]
    downloads: dict[str, tuple[str, str, bytes]] = field(default_factory=dict)  # name -> (file name, type, bytes)


def _png_data_url(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _layer(mask: np.ndarray, colour: str) -> np.ndarray:
    """An RGBA layer: the class's colour where the mask is set, transparent elsewhere."""
    rgba = np.zeros((*mask.shape, 4), dtype=np.uint8)
    rgba[mask] = [int(colour[i : i + 2], 16) for i in (1, 3, 5)] + [255]
    return rgba


def case_id_of(filename: str) -> str:
    """The case id an upload's prediction files are named after: its name less the suffix, made safe."""
    stem = split_image_suffix(Path(filename).name)[0]
    return re.sub(r"[^A-Za-z0-9_-]", "_", stem).strip("_") or "upload"


def _read_upload(plugin: TaskPlugin, data: bytes, filename: str) -> np.ndarray:
    """Decode an upload as the task reads its images; a temporary copy lives only as long as this call."""
    suffix = "".join(Path(filename).suffixes[-1:]).lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise UploadError(f"{filename}: not an image type the page takes ({', '.join(UPLOAD_SUFFIXES)})", 415)
    with tempfile.TemporaryDirectory(prefix="eyegc-serve-") as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            pixels = int(np.prod(reader.GetSize()))
        except RuntimeError:
            raise UploadError(
                f"{filename}: cannot be decoded as {suffix[1:].upper()}; is it corrupt or truncated?"
            ) from None
        if pixels > MAX_PIXELS:
            raise UploadError(f"{filename}: {pixels:,} pixels is above the page's limit of {MAX_PIXELS:,}", 413)
        try:
            return plugin.read_image(path)
        except EyegcError as exc:
            raise UploadError(str(exc).replace(str(path), filename)) from None


def _downloads(
    plugin: TaskPlugin, case_id: str, masks: np.ndarray, probs: np.ndarray
) -> dict[str, tuple[str, str, bytes]]:
    """The case's files exactly as ``eyegc predict`` writes them (zipped), and its probabilities."""
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="eyegc-serve-") as folder, zipfile.ZipFile(buffer, "w") as archive:
        plugin.write_prediction(Path(folder), case_id, masks, probs)
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    npz = io.BytesIO()
    np.savez_compressed(npz, probabilities=probs.astype(np.float16), classes=np.array([c.key for c in plugin.classes]))
    return {
        "prediction": (f"{case_id}-prediction.zip", "application/zip", buffer.getvalue()),
        "probabilities": (f"{case_id}-probabilities.npz", "application/octet-stream", npz.getvalue()),
    }


def _figures(plugin: TaskPlugin, masks: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Per class its area (segmentation) or per head its grade and probabilities (classification)."""
    if plugin.kind == TaskKind.CLASSIFICATION:
        return {
            "grades": [
                {
                    "key": s.key,
                    "name": s.name,
                    "grade": int(masks[h]),
                    "probabilities": probs[h][: s.num_classes].tolist(),
                }
                for h, s in enumerate(plugin.classes)
            ]
        }
    per_class = class_masks(plugin, masks)
    total = per_class[0].size
    return {
        "areas": [
            {"key": c.spec.key, "pixels": int(m.sum()), "fraction": float(m.sum() / total)}
            for c, m in zip(shown_classes(plugin), per_class, strict=True)
        ]
    }


class PredictionService:
    """Predicts uploads one at a time with the loaded bundles and keeps the latest results' downloads."""

    def __init__(self, choices: Sequence[ModelChoice], device: str = "auto") -> None:
        self.choices = {c.key: c for c in choices}
        self.device = resolve_device(device)
        self._turn = threading.Lock()  # the queue: one prediction at a time, the rest wait here
        self._results: OrderedDict[str, ServedPrediction] = OrderedDict()
        self._results_lock = threading.Lock()

    def predict(self, model: str, tta: str, data: bytes, filename: str) -> ServedPrediction:
        """Predict one upload; a bad request raises :class:`UploadError` with its message."""
        choice = self.choices.get(model)
        if choice is None:
            raise UploadError(f"no model {model!r} here; choose one of {', '.join(self.choices)}", 404)
        if tta not in choice.plugin.allowed_tta:
            raise UploadError(f"{choice.plugin.name} allows TTA {', '.join(choice.plugin.allowed_tta)}, not {tta!r}")
        plugin = choice.plugin
        image = _read_upload(plugin, data, filename)
        with self._turn:
            started = time.perf_counter()
            predictor = Predictor(plugin, list(choice.bundles), tta, self.device)
            masks, probs = predictor.predict(image)
            seconds = time.perf_counter() - started
        result = self._served(choice, tta, filename, image, masks, probs, seconds)
        with self._results_lock:
            self._results[result.summary["id"]] = result
            while len(self._results) > KEPT_RESULTS:
                self._results.popitem(last=False)
        return result

    def _served(
        self,
        choice: ModelChoice,
        tta: str,
        filename: str,
        image: np.ndarray,
        masks: np.ndarray,
        probs: np.ndarray,
        seconds: float,
    ) -> ServedPrediction:
        plugin = choice.plugin
        factor = display_factor(image.shape)
        rgb = display_image(image, factor)
        layers = []
        if plugin.kind != TaskKind.CLASSIFICATION:
            reduced = reduce_masks(class_masks(plugin, masks), factor)
            layers = [_png_data_url(_layer(m, c.colour)) for m, c in zip(reduced, shown_classes(plugin), strict=True)]
        case_id = case_id_of(filename)
        summary = {
            "id": uuid.uuid4().hex,
            "case": case_id,
            "filename": filename,
            "model": choice.describe(),
            "tta": tta,
            "seconds": round(seconds, 3),
            "size": list(image.shape[-2:]),
            "image": _png_data_url(rgb),
            "layers": layers,
            **_figures(plugin, masks, probs),
        }
        downloads = _downloads(plugin, case_id, masks, probs)
        pdf = one_page_pdf(plugin, summary, rgb, masks, factor)
        downloads["report"] = (f"{case_id}-report.pdf", "application/pdf", pdf)
        return ServedPrediction(summary, downloads)

    def download(self, result_id: str, name: str) -> tuple[str, str, bytes]:
        """A kept result's download: file name, media type, bytes."""
        with self._results_lock:
            result = self._results.get(result_id)
        if result is None or name not in result.downloads:
            raise UploadError("that result is no longer kept here: predict the image again", 404)
        return result.downloads[name]
