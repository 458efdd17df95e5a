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
    "DOWNLOADS",
    "UPLOAD_SUFFIXES",
    "ModelChoice",
    "PredictionService",
    "ServedPrediction",
    "UploadError",
    "load_choices",
]

#: The image types the page accepts, by suffix (lower case).
UPLOAD_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".mha")
#: An upload whose header claims more pixels than this is refused before it is decoded: about three IDRiD
#: photographs (12.2 M each); a 9000 x 11000 PNG (99 M) took 3.9 GB to predict with a network that did nothing.
MAX_PIXELS = 40_000_000
#: Predictions kept for their downloads, at most this many and this many bytes of arrays (the latest one is
#: always kept); the oldest goes first. An IDRiD photograph's result takes about 250 MB.
KEPT_RESULTS = 16
KEPT_BYTES = 1 << 30


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
    """One upload's prediction: the page's JSON, and what its downloads are made from when first asked for
    (most results are looked at, not downloaded: zipping and compressing an IDRiD photograph's maps took 9 s)."""

    summary: dict[str, Any]
    plugin: TaskPlugin
    masks: np.ndarray
    probabilities: np.ndarray
    #: the display image and its reduction factor (the one-page PDF shows them).
    display: np.ndarray
    factor: int
    _made: dict[str, tuple[str, str, bytes]] = field(default_factory=dict)
    _making: threading.Lock = field(default_factory=threading.Lock)

    @property
    def nbytes(self) -> int:
        """Memory the kept arrays take."""
        return self.masks.nbytes + self.probabilities.nbytes + self.display.nbytes

    def download(self, name: str) -> tuple[str, str, bytes]:
        """``(file name, media type, bytes)`` of one of :data:`DOWNLOADS`, made once."""
        maker = DOWNLOADS.get(name)
        if maker is None:
            raise UploadError(f"no download {name!r}; there are {', '.join(DOWNLOADS)}", 404)
        with self._making:
            if name not in self._made:
                self._made[name] = maker(self)
            return self._made[name]


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
    """The case id an upload's prediction files are named after: its name less the suffix, made safe
    (anything but letters, digits, ``_`` and ``-`` becomes ``_``)."""
    stem = split_image_suffix(Path(filename).name)[0]
    return re.sub(r"[^\w-]", "_", stem).strip("_") or "upload"  # \w: letters of any script, digits, _


def _mha_data_file(path: Path) -> str | None:
    """The ``ElementDataFile`` an MHA header names (``LOCAL``: the pixels follow the header in the same file)."""
    with path.open("rb") as handle:
        header = handle.read(65536)
    match = re.search(rb"^\s*ElementDataFile\s*=\s*(.*?)\s*$", header, re.MULTILINE)
    return None if match is None else match.group(1).decode("latin-1")


def _header_pixels(path: Path) -> int | None:
    """Pixels (all channels' positions) the file's header claims, read without decoding; None if unreadable."""
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        return int(np.prod(reader.GetSize()))
    except RuntimeError:
        pass
    try:  # a grey+alpha PNG, or a JPEG named .png: SimpleITK's header readers refuse what eyegc predict reads
        with Image.open(path) as image:
            return image.width * image.height
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _read_upload(plugin: TaskPlugin, data: bytes, filename: str) -> np.ndarray:
    """Decode an upload as the task reads its images; a temporary copy lives only as long as this call."""
    suffix = "".join(Path(filename).suffixes[-1:]).lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise UploadError(f"{filename}: not an image type the page takes ({', '.join(UPLOAD_SUFFIXES)})", 415)
    with tempfile.TemporaryDirectory(prefix="eyegc-serve-") as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)
        # An MHA header may name another file for its pixels: on a server that would read its own disk.
        if suffix == ".mha" and _mha_data_file(path) not in (None, "LOCAL"):
            raise UploadError(f"{filename}: an uploaded MHA must hold its pixels (ElementDataFile = LOCAL)")
        pixels = _header_pixels(path)
        if pixels is None:
            raise UploadError(f"{filename}: cannot be decoded as {suffix[1:].upper()}; is it corrupt or truncated?")
        if pixels > MAX_PIXELS:
            raise UploadError(f"{filename}: {pixels:,} pixels is above the page's limit of {MAX_PIXELS:,}", 413)
        try:
            return plugin.read_image(path)
        except EyegcError as exc:
            raise UploadError(str(exc).replace(str(path), filename)) from None


def _prediction_zip(result: ServedPrediction) -> tuple[str, str, bytes]:
    """The case's files exactly as ``eyegc predict`` writes them, zipped."""
    case_id = result.summary["case"]
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="eyegc-serve-") as folder, zipfile.ZipFile(buffer, "w") as archive:
        result.plugin.write_prediction(Path(folder), case_id, result.masks, result.probabilities)
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return f"{case_id}-prediction.zip", "application/zip", buffer.getvalue()


def _probabilities_npz(result: ServedPrediction) -> tuple[str, str, bytes]:
    """The probabilities (float16) with the class keys."""
    npz = io.BytesIO()
    classes = np.array([c.key for c in result.plugin.classes])
    np.savez_compressed(npz, probabilities=result.probabilities.astype(np.float16), classes=classes)
    return f"{result.summary['case']}-probabilities.npz", "application/octet-stream", npz.getvalue()


def _report_pdf(result: ServedPrediction) -> tuple[str, str, bytes]:
    """The one-page PDF report."""
    pdf = one_page_pdf(result.plugin, result.summary, result.display, result.masks, result.factor)
    return f"{result.summary['case']}-report.pdf", "application/pdf", pdf


#: What the page offers for each result, by name (``/api/results/{id}/{name}``).
DOWNLOADS = {"prediction": _prediction_zip, "probabilities": _probabilities_npz, "report": _report_pdf}


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
        # Decoding, predicting and drawing all wait their turn: memory holds one upload's work at a time.
        with self._turn:
            image = _read_upload(choice.plugin, data, filename)
            started = time.perf_counter()
            predictor = Predictor(choice.plugin, list(choice.bundles), tta, self.device)
            masks, probs = predictor.predict(image)
            seconds = time.perf_counter() - started
            result = self._served(choice, tta, filename, image, masks, probs, seconds)
        with self._results_lock:
            self._results[result.summary["id"]] = result
            while len(self._results) > 1 and (
                len(self._results) > KEPT_RESULTS or sum(r.nbytes for r in self._results.values()) > KEPT_BYTES
            ):
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
        return ServedPrediction(summary, plugin, masks, probs, rgb, factor)

    def download(self, result_id: str, name: str) -> tuple[str, str, bytes]:
        """A kept result's download: file name, media type, bytes."""
        with self._results_lock:
            result = self._results.get(result_id)
        if result is None:
            raise UploadError("that result is no longer kept here: predict the image again", 404)
        return result.download(name)
