"""GOALS prediction folders and the submission zip (docs/REFERENCE.md §3).

Prediction folders written by ``eyegc predict``:

* layers: ``<out>/Layer_Segmentations/<case_id>.png`` in the official encoding (0 RNFL, 80 GCIPL,
  160 choroid, 255 other) at the original 1100×800 size;
* glaucoma: ``<out>/<case_id>.json`` per case (``eyegc.common.classification``).

The submission zip holds, at its root, ``Layer_Segmentations/<name>.png`` (every image, sorted)
and/or ``Classification_Results.csv``: a header, then one row per image sorted by name,
``0001.png,0.873100`` — the image file name with ``.png`` and the likelihood of glaucoma (6
decimals). The organisers' CSV header is unconfirmed: the default ``ImgName,GC_Pred`` follows
the ground-truth sheet's naming (one team's code wrote ``GC Pred``); pass ``header=`` to change
it. The same predictions always give the same zip bytes (fixed timestamps, sorted names).
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from eyegc.challenges.goals.encoding import decode_layers, encode_layers, read_layer_mask
from eyegc.challenges.goals.layout import IMAGE_SIZE, name_key, sorted_case_ids
from eyegc.common.datafiles import decode_table_text
from eyegc.common.errors import DataError
from eyegc.common.imageio import atomic_output_file, write_png
from eyegc.common.lazy import LazySequence
from PIL import Image
from tqdm import tqdm

__all__ = [
    "CLASSIFICATION_CSV",
    "DEFAULT_HEADER",
    "LAYER_DIR",
    "glaucoma_case_ids",
    "layer_case_ids",
    "read_goals_classification_csv",
    "read_goals_glaucoma_submission",
    "read_goals_layer_predictions",
    "write_goals_layer_prediction",
    "write_goals_submission",
]

LAYER_DIR = "Layer_Segmentations"
CLASSIFICATION_CSV = "Classification_Results.csv"
#: the CSV header written by default (unconfirmed; see the module docstring).
DEFAULT_HEADER = ("ImgName", "GC_Pred")
_ZIP_DATE = (2022, 9, 1, 0, 0, 0)  # fixed so that the same predictions always give the same zip bytes


# -- layer prediction folders -----------------------------------------------------------------------


def write_goals_layer_prediction(out: Path, case_id: str, index_map: np.ndarray) -> Path:
    """Write ``out/Layer_Segmentations/<case_id>.png`` (official values) from a class-index map; returns it."""
    folder = Path(out) / LAYER_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{case_id}.png"
    tmp = folder / f".{case_id}.partial.png"
    try:
        write_png(tmp, encode_layers(index_map))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _layer_folder(pred: Path) -> Path:
    """``pred/Layer_Segmentations``, or ``pred`` itself when it is that folder or holds the PNGs directly."""
    pred = Path(pred)
    if (pred / LAYER_DIR).is_dir():
        return pred / LAYER_DIR
    if pred.is_dir() and any(p.suffix.lower() == ".png" for p in pred.iterdir()):
        return pred
    raise DataError(f"{pred} holds no {LAYER_DIR}/ folder of layer PNGs; write it with `eyegc predict goals-layers`")


def layer_case_ids(pred: Path) -> list[str]:
    """Case ids of the layer PNGs in a prediction folder, sorted."""
    return sorted_case_ids(p.stem for p in _layer_folder(pred).glob("*.png") if not p.name.startswith("."))


def _zip_members(archive: zipfile.ZipFile, path: Path) -> dict[str, str]:
    """``{member suffix without one optional top folder: member name}`` of the files in a zip."""
    names = [n for n in archive.namelist() if not n.endswith("/")]
    tops = {n.split("/")[0] for n in names if "/" in n}
    strip = len(tops) == 1 and not any(n.startswith(f"{LAYER_DIR}/") or n == CLASSIFICATION_CSV for n in names)
    members = {}
    for name in names:
        key = name.split("/", 1)[1] if strip and "/" in name else name
        members[key] = name
    if not members:
        raise DataError(f"{path} is an empty zip")
    return members


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"cannot open submission {path}: {exc}") from None


def _decode_png_bytes(data: bytes, where: str, shape: tuple[int, int] | None) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            array = np.asarray(image.convert("L") if image.mode in ("RGB", "RGBA", "LA", "P") else image)
    except OSError as exc:
        raise DataError(f"{where}: not a readable PNG ({exc})") from None
    if array.ndim != 2:
        raise DataError(f"{where}: a layer segmentation is a single-channel image; got shape {array.shape}")
    if shape is not None and array.shape != tuple(shape):
        raise DataError(
            f"{where} is {array.shape[1]}x{array.shape[0]} (W x H); GOALS segmentations are {shape[1]}x{shape[0]} "
            "(the original image size)"
        )
    return decode_layers(array, where)


def read_goals_layer_predictions(
    pred: Path, case_ids: Sequence[str], shape: tuple[int, int] | None = IMAGE_SIZE
) -> Sequence[np.ndarray]:
    """``(1, H, W)`` class-index maps for ``case_ids`` from a prediction folder or a submission zip.

    Every file is looked up first; each is read (and its size and values checked) when accessed.

    Raises:
        DataError: no layer PNGs, a case without a PNG, or a PNG of the wrong size or values.
    """
    pred = Path(pred)
    if pred.is_file() and pred.suffix.lower() == ".zip":
        with _open_zip(pred) as archive:
            members = _zip_members(archive, pred)
        by_key = {
            name_key(Path(k).stem): m
            for k, m in members.items()
            if k.startswith(f"{LAYER_DIR}/") and k.lower().endswith(".png")
        }
        missing = [c for c in case_ids if name_key(c) not in by_key]
        if missing:
            raise DataError(
                f"{pred} has no {LAYER_DIR}/<name>.png for case(s) {', '.join(missing[:5])}"
                f"{' ...' if len(missing) > 5 else ''}"
            )

        def load_member(i: int) -> np.ndarray:
            member = by_key[name_key(case_ids[i])]
            with _open_zip(pred) as archive:
                data = archive.read(member)
            return _decode_png_bytes(data, f"{member} in {pred}", shape)

        return LazySequence(len(case_ids), load_member)
    folder = _layer_folder(pred)
    files = {name_key(p.stem): p for p in folder.glob("*.png") if not p.name.startswith(".")}
    missing = [c for c in case_ids if name_key(c) not in files]
    if missing:
        raise DataError(
            f"no layer prediction for case(s) {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} "
            f"in {folder}; run `eyegc predict goals-layers` on those images"
        )
    return LazySequence(len(case_ids), lambda i: read_layer_mask(files[name_key(case_ids[i])], shape))


# -- glaucoma prediction folders --------------------------------------------------------------------


def glaucoma_case_ids(pred: Path) -> list[str]:
    """Case ids of the per-case JSON files in a glaucoma prediction folder, sorted."""
    return sorted_case_ids(p.stem for p in Path(pred).glob("*.json") if not p.name.startswith("."))


def _glaucoma_likelihoods(pred: Path, case_ids: Sequence[str]) -> np.ndarray:
    """The glaucoma probability of each case from ``<case_id>.json`` files (``heads.glaucoma``)."""
    values = np.zeros(len(case_ids), dtype=np.float64)
    for n, case_id in enumerate(case_ids):
        path = Path(pred) / f"{case_id}.json"
        if not path.is_file():
            raise DataError(f"{path}: no glaucoma prediction for case {case_id} (run `eyegc predict goals-glaucoma`)")
        try:
            entry = json.loads(path.read_text())["heads"]["glaucoma"]
            probabilities = [float(v) for v in entry.get("probabilities", [])]
            value = probabilities[1] if len(probabilities) == 2 else float(int(entry["grade"]))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise DataError(f"{path}: not an eyegc glaucoma prediction ({exc})") from None
        if not 0.0 <= value <= 1.0:
            raise DataError(f"{path}: glaucoma probability {value} is outside [0, 1]")
        values[n] = value
    return values


# -- the submission -------------------------------------------------------------------------------


def _png_bytes(official: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(official, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data)


def _csv_text(case_ids: Sequence[str], likelihoods: np.ndarray, header: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(header))
    for case_id, value in zip(case_ids, likelihoods, strict=True):
        writer.writerow([f"{case_id}.png", f"{float(value):.6f}"])
    return buffer.getvalue()


def _prediction_parts(
    pred: Path | None, layers_pred: Path | None, glaucoma_pred: Path | None
) -> tuple[Path | None, Path | None]:
    """The layers and glaucoma prediction folders: those given, else what ``pred`` holds."""
    if pred is not None:
        pred = Path(pred)
        if not pred.is_dir():
            raise DataError(f"prediction folder not found: {pred}")
        holds_layers, holds_glaucoma = (pred / LAYER_DIR).is_dir(), any(pred.glob("*.json"))
        if not (holds_layers or holds_glaucoma):
            raise DataError(
                f"{pred} holds neither {LAYER_DIR}/ nor per-case .json files; pass the output folder of "
                "`eyegc predict goals-layers` or `eyegc predict goals-glaucoma`"
            )
        if holds_layers and layers_pred is None:
            layers_pred = pred
        if holds_glaucoma and glaucoma_pred is None:
            glaucoma_pred = pred
    if layers_pred is None and glaucoma_pred is None:
        raise DataError("nothing to submit: give a layers and/or a glaucoma prediction folder")
    return layers_pred, glaucoma_pred


def _submission_case_ids(
    layers_pred: Path | None, glaucoma_pred: Path | None, case_ids: Sequence[str] | None
) -> list[str]:
    """The images to submit: ``case_ids``, else those the prediction folders cover (both the same)."""
    found: dict[str, list[str]] = {}
    if layers_pred is not None:
        found["layers"] = layer_case_ids(layers_pred)
    if glaucoma_pred is not None:
        if not Path(glaucoma_pred).is_dir():
            raise DataError(f"glaucoma prediction folder not found: {glaucoma_pred}")
        found["glaucoma"] = glaucoma_case_ids(glaucoma_pred)
    if case_ids is not None:
        ids = sorted_case_ids(case_ids)
    else:
        sets = {part: set(names) for part, names in found.items()}
        if len(sets) == 2 and sets["layers"] != sets["glaucoma"]:
            only_l = sorted_case_ids(sets["layers"] - sets["glaucoma"])[:5]
            only_g = sorted_case_ids(sets["glaucoma"] - sets["layers"])[:5]
            raise DataError(
                f"the layer and glaucoma predictions cover different images (layers only: {only_l}, "
                f"glaucoma only: {only_g}); predict both on the same images or pass case_ids"
            )
        ids = sorted_case_ids(next(iter(found.values())))
    if not ids:
        raise DataError("the prediction folder(s) hold no predictions")
    return ids


def write_goals_submission(
    pred: Path | None,
    out: Path,
    *,
    layers_pred: Path | None = None,
    glaucoma_pred: Path | None = None,
    header: Sequence[str] = DEFAULT_HEADER,
    glaucoma_value: str = "probability",
    threshold: float = 0.5,
    case_ids: Sequence[str] | None = None,
    shape: tuple[int, int] | None = IMAGE_SIZE,
    overwrite: bool = False,
) -> Path:
    """Validate predictions and write the GOALS submission zip; nothing is left on error.

    Args:
        pred: a prediction folder: a layers folder (it holds ``Layer_Segmentations/``) or a
            glaucoma folder (it holds ``<case_id>.json``); may be None when the keywords say.
        out: the zip to write.
        layers_pred: the layers prediction folder (overrides what ``pred`` provides).
        glaucoma_pred: the glaucoma prediction folder (overrides what ``pred`` provides).
        header: the two CSV column names (unconfirmed; default ``ImgName,GC_Pred``).
        glaucoma_value: ``"probability"`` (default; the likelihood, as AUC needs) or ``"label"``
            (0/1 at ``threshold``).
        threshold: the glaucoma threshold for ``glaucoma_value="label"``.
        case_ids: the images to include (default: every case found).
        shape: the required ``(H, W)`` of the layer PNGs (default 800x1100).
        overwrite: replace an existing ``out``.

    Returns:
        The path written.

    Raises:
        DataError: no predictions, the two parts cover different images, a case is missing, or a
            layer PNG has the wrong size or values. The message names the file.
    """
    layers_pred, glaucoma_pred = _prediction_parts(pred, layers_pred, glaucoma_pred)
    if len(header) != 2 or not all(str(h).strip() for h in header):
        raise DataError(f"the CSV header must be two non-empty column names; got {list(header)}")
    if glaucoma_value not in ("probability", "label"):
        raise DataError(f"glaucoma_value must be 'probability' or 'label'; got {glaucoma_value!r}")

    ids = _submission_case_ids(layers_pred, glaucoma_pred, case_ids)
    # Read and check everything before anything is written.
    layer_maps: list[bytes] = []
    if layers_pred is not None:
        maps = read_goals_layer_predictions(layers_pred, ids, shape)
        for case_map in tqdm(maps, desc="check layer predictions", unit="case", leave=False):
            layer_maps.append(_png_bytes(encode_layers(case_map)))
    csv_text = None
    if glaucoma_pred is not None:
        likelihoods = _glaucoma_likelihoods(Path(glaucoma_pred), ids)
        if glaucoma_value == "label":
            likelihoods = (likelihoods >= threshold).astype(np.float64)
        csv_text = _csv_text(ids, likelihoods, header)

    with atomic_output_file(out, overwrite=overwrite) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        if csv_text is not None:
            _add(archive, CLASSIFICATION_CSV, csv_text.encode("utf-8"))
        for case_id, data in zip(ids if layer_maps else [], layer_maps, strict=True):
            _add(archive, f"{LAYER_DIR}/{case_id}.png", data)
    return Path(out)


# -- reading a submission back ----------------------------------------------------------------------


def _parse_classification_csv(text: str, where: str) -> dict[str, float]:
    rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"{where} is empty")
    header = rows[0]
    if len(header) < 2:
        raise DataError(f"{where}: the header {header} needs two columns (image name, glaucoma likelihood)")
    values: dict[str, float] = {}
    for n, row in enumerate(rows[1:], start=2):
        if len(row) < 2:
            raise DataError(f"{where}, row {n}: expected 'name,likelihood', got {row}")
        key = name_key(row[0])
        try:
            value = float(row[1])
        except ValueError:
            raise DataError(f"{where}, row {n}: {row[1]!r} is not a number") from None
        if not 0.0 <= value <= 1.0:
            raise DataError(f"{where}, row {n}: glaucoma likelihood {value} is outside [0, 1]")
        if key in values:
            raise DataError(f"{where}, row {n}: image {row[0]} is listed twice")
        values[key] = value
    return values


def read_goals_classification_csv(path: Path, case_ids: Sequence[str]) -> np.ndarray:
    """Glaucoma probabilities ``(N, 1, 2)`` float32 (``[1 - p, p]``) for ``case_ids`` from a results CSV.

    ``path`` is a ``Classification_Results.csv`` or a submission zip holding one. The first column
    is the image name (with or without ``.png``), the second the likelihood; the header's names
    are not checked (unconfirmed).

    Raises:
        DataError: unreadable file, a value outside [0, 1], a duplicate, or a case without a row.
    """
    path = Path(path)
    if path.suffix.lower() == ".zip":
        with _open_zip(path) as archive:
            members = _zip_members(archive, path)
            if CLASSIFICATION_CSV not in members:
                raise DataError(f"{path} has no {CLASSIFICATION_CSV}")
            where = f"{CLASSIFICATION_CSV} in {path}"
            text = decode_table_text(archive.read(members[CLASSIFICATION_CSV]), where)
    else:
        if not path.is_file():
            raise DataError(f"classification results not found: {path}")
        where = str(path)
        text = decode_table_text(path.read_bytes(), where)
    values = _parse_classification_csv(text, where)
    missing = [c for c in case_ids if name_key(c) not in values]
    if missing:
        raise DataError(f"{where} has no row for case(s) {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    p = np.array([values[name_key(c)] for c in case_ids], dtype=np.float32)
    return np.stack([1.0 - p, p], axis=1)[:, None, :]


def read_goals_glaucoma_submission(
    path: Path, case_ids: Sequence[str], threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Grades ``(N, 1)`` int64 (likelihood >= ``threshold``) and probabilities ``(N, 1, 2)`` from a CSV or zip."""
    probabilities = read_goals_classification_csv(path, case_ids)
    grades = (probabilities[:, :, 1] >= threshold).astype(np.int64)
    return grades, probabilities
