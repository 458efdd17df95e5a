"""A task's data in nnU-Net v2's raw format, and the label encoding both directions share.

``eyegc nnunet dataset TASK --data ROOT --out DIR`` writes ``DIR/DatasetNNN_<task>/``: ``imagesTr``,
``labelsTr``, ``imagesTs`` (the test split's images, when there is one) and ``dataset.json``. The
choices, each documented in ``dataset.json`` under ``"eyegc"`` so an import can undo them:

- Images are 2D PNGs read by nnU-Net's ``NaturalImage2DIO``: a colour image is one RGB file
  ``<case>_0000.png`` holding three channels (R, G, B), as nnU-Net's natural-image examples do; a
  grey image is one grey file. Pixels are exactly what the task's reader returns (DRIVE's green-
  channel variant exports the green channel).
- Labels: a softmax task (GOALS layers) keeps its class indices, its class 0 named ``background``
  as nnU-Net requires. A multi-label task with one class (DRIVE) is ``background``/class (0/1). A
  multi-label task with overlapping classes (DRAC22 IRMA/NPA/NV, IDRiD lesions) uses nnU-Net's
  region-based training: each pixel's set of classes is one label, bit ``i`` for class ``i``
  (DRAC22: 0..7), and each class is a region, the union of the labels that contain it (IRMA =
  {1, 3, 5, 7}, NPA = {2, 3, 6, 7}, NV = {4, 5, 6, 7}); ``regions_class_order`` lists each class's
  own bit. nnU-Net then trains one sigmoid per class, which is what eyegc's thresholds take.
- DRIVE's field of view is not exported: outside it the manual annotation is background, so
  nnU-Net learns the black border as such, and eyegc's metric counts only the field of view, as
  the leaderboard does.
- Size: the original resolution by default, as nnU-Net expects (its planner picks patch sizes; an
  IDRiD photograph of 4288×2848 is trained in patches, and microaneurysms a few pixels wide survive).
  ``--working-scale 0.5`` halves both sides (images bilinear with antialiasing as eyegc's own
  preprocessing, labels nearest); the import records the scale and prediction resizes back.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from eyegc.common.errors import DataError, EyegcError
from eyegc.common.imageio import atomic_output_dir, write_png
from eyegc.common.outputs import OutputKind, check_output_path
from eyegc.common.plugin import Case, TaskKind, TaskPlugin
from eyegc.common.preprocessing import working_shape
from PIL import Image
from tqdm import tqdm

__all__ = [
    "DATASET_FORMAT",
    "FILE_ENDING",
    "LabelScheme",
    "class_probabilities",
    "dataset_folder_name",
    "dataset_json",
    "decode_label_map",
    "encode_label_map",
    "export_dataset",
    "label_scheme",
    "nnunet_image",
    "resize_label_map",
    "write_dataset",
]

#: ``dataset.json["eyegc"]["format"]``: what an import expects to find there.
DATASET_FORMAT = "eyegc-nnunet/1"
FILE_ENDING = ".png"
#: nnU-Net dataset ids 001-499 are taken by its own and public datasets; ours start above.
DEFAULT_DATASET_ID = 500
#: a label map is one uint8 per pixel: 8 overlapping classes at most.
MAX_REGION_CLASSES = 8


@dataclass(frozen=True)
class LabelScheme:
    """How a task's classes are nnU-Net labels: ``labels`` as ``dataset.json`` declares them, and
    ``regions_class_order`` for region-based training (``None``: plain labels)."""

    labels: dict[str, int | list[int]]
    regions_class_order: list[int] | None = None

    @property
    def region_based(self) -> bool:
        return self.regions_class_order is not None


def label_scheme(plugin: TaskPlugin) -> LabelScheme:
    """The nnU-Net labels of a segmentation task (module docstring).

    Raises:
        EyegcError: a classification task, or more overlapping classes than a uint8 label holds.
    """
    keys = [c.key for c in plugin.classes]
    if plugin.kind == TaskKind.CLASSIFICATION:
        raise EyegcError(f"{plugin.name} is a classification task; nnU-Net segments: choose a segmentation task")
    if plugin.kind == TaskKind.MULTICLASS_SEGMENTATION:
        return LabelScheme({"background": 0, **{k: i for i, k in enumerate(keys[1:], start=1)}})
    if len(keys) == 1:
        return LabelScheme({"background": 0, keys[0]: 1})
    if len(keys) > MAX_REGION_CLASSES:
        raise EyegcError(f"{plugin.name} has {len(keys)} overlapping classes; a label map holds {MAX_REGION_CLASSES}")
    combinations = range(1, 2 ** len(keys))
    regions = {k: [v for v in combinations if v >> i & 1] for i, k in enumerate(keys)}
    return LabelScheme({"background": 0, **regions}, regions_class_order=[1 << i for i in range(len(keys))])


def encode_label_map(plugin: TaskPlugin, target: np.ndarray) -> np.ndarray:
    """A case's ground truth (``plugin.read_target``) as one ``(H, W)`` uint8 nnU-Net label map."""
    if plugin.kind == TaskKind.MULTICLASS_SEGMENTATION:
        return target[0].astype(np.uint8)
    bits = np.zeros(target.shape[-2:], dtype=np.uint8)
    for i, mask in enumerate(target):
        bits |= (mask > 0).astype(np.uint8) << i
    return bits


def decode_label_map(plugin: TaskPlugin, label_map: np.ndarray) -> np.ndarray:
    """:func:`encode_label_map` undone: each class is the union of its region's labels."""
    if plugin.kind == TaskKind.MULTICLASS_SEGMENTATION:
        return label_map[None].astype(np.uint8)
    scheme = label_scheme(plugin)
    masks = []
    for spec in plugin.classes:
        region = scheme.labels[spec.key]
        masks.append(np.isin(label_map, region if isinstance(region, list) else [region]).astype(np.uint8))
    return np.stack(masks)


def class_probabilities(plugin: TaskPlugin, nnunet_probabilities: np.ndarray) -> np.ndarray:
    """nnU-Net's ``(channels, H, W)`` probabilities as eyegc's ``(classes, H, W)``: one sigmoid per
    region, or the softmax (without its background channel for a one-class multi-label task)."""
    if plugin.kind == TaskKind.MULTILABEL_SEGMENTATION and len(plugin.classes) == 1:
        return nnunet_probabilities[1:2]
    return nnunet_probabilities


def nnunet_image(image: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """A task's ``(C, H, W)`` image as it is exported (and so as nnU-Net must see it at prediction):
    uint8, resized by ``scale`` (bilinear, antialiased when shrinking, as eyegc's preprocessing)."""
    if image.dtype != np.uint8:
        raise DataError(f"nnU-Net export takes 8-bit images; this task's reader returned {image.dtype}")
    if scale == 1.0:
        return image
    size = working_shape(image.shape[-2:], scale)
    tensor = torch.from_numpy(np.ascontiguousarray(image)).float()[None]
    resized = F.interpolate(tensor, size=size, mode="bilinear", antialias=scale < 1, align_corners=False)[0]
    return resized.round().clamp(0, 255).to(torch.uint8).numpy()


def resize_label_map(label_map: np.ndarray, scale: float) -> np.ndarray:
    """An ``(H, W)`` label map at ``scale``, each output pixel the label under its centre."""
    if scale == 1.0:
        return label_map
    size = working_shape(label_map.shape, scale)
    tensor = torch.from_numpy(np.ascontiguousarray(label_map)).float()[None, None]
    # nearest-exact samples each output pixel's centre, as the bilinear image resize is centre-aligned;
    # plain "nearest" takes each block's top-left pixel and shifts labels against images by (1/s - 1)/2 px.
    return F.interpolate(tensor, size=size, mode="nearest-exact")[0, 0].to(torch.uint8).numpy()


def _write_image(path: Path, image: np.ndarray) -> None:
    if image.shape[0] == 1:
        write_png(path, np.ascontiguousarray(image[0]))
    elif image.shape[0] == 3:
        Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0))).save(path)
    else:
        raise DataError(
            f"nnU-Net's natural-image reader takes grey or RGB images; these have {image.shape[0]} channels"
        )


def dataset_folder_name(plugin: TaskPlugin, dataset_id: int) -> str:
    """``Dataset<NNN>_<task>``, the task's name with nnU-Net-safe characters."""
    return f"Dataset{dataset_id:03d}_{re.sub(r'[^A-Za-z0-9]+', '_', plugin.name)}"


def dataset_json(plugin: TaskPlugin, training_cases: int, scale: float) -> dict[str, Any]:
    """``dataset.json`` for a task's export (nnU-Net's keys, and eyegc's own under ``"eyegc"``)."""
    scheme = label_scheme(plugin)
    names = {"0": "R", "1": "G", "2": "B"} if plugin.in_channels == 3 else {"0": "grey"}
    data: dict[str, Any] = {
        "name": plugin.name,
        "description": f"{plugin.title}, exported by eyegc",
        "channel_names": names,
        "labels": scheme.labels,
        "numTraining": training_cases,
        "file_ending": FILE_ENDING,
        "overwrite_image_reader_writer": "NaturalImage2DIO",
        "eyegc": {"format": DATASET_FORMAT, "task": plugin.name, "working_scale": scale},
    }
    if scheme.region_based:
        data["regions_class_order"] = scheme.regions_class_order
    return data


def _test_cases(plugin: TaskPlugin, data_root: Path, with_test: bool) -> list[Case]:
    if not with_test:
        return []
    try:
        return plugin.list_cases(data_root, "test", require_labels=False)
    except DataError as error:
        raise DataError(f"{error} (or pass --no-test to export the training cases alone)") from None


def write_dataset(
    plugin: TaskPlugin, folder: Path, train: Sequence[Case], test: Sequence[Case], scale: float = 1.0
) -> None:
    """Write the raw dataset of ``train`` (images and labels) and ``test`` (images) into ``folder``."""
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for case in tqdm(train, desc=f"nnU-Net export {plugin.name}", unit="case"):
        _write_image(
            folder / "imagesTr" / f"{case.case_id}_0000{FILE_ENDING}",
            nnunet_image(plugin.read_image(case.image), scale),
        )
        labels = resize_label_map(encode_label_map(plugin, plugin.read_target(case)), scale)
        write_png(folder / "labelsTr" / f"{case.case_id}{FILE_ENDING}", labels)
    for case in tqdm(test, desc="test images", unit="case", leave=False):
        _write_image(
            folder / "imagesTs" / f"{case.case_id}_0000{FILE_ENDING}",
            nnunet_image(plugin.read_image(case.image), scale),
        )
    text = json.dumps(dataset_json(plugin, len(train), scale), indent=1)
    (folder / "dataset.json").write_text(text + "\n")


def export_dataset(
    plugin: TaskPlugin,
    data_root: Path,
    out: Path,
    dataset_id: int = DEFAULT_DATASET_ID,
    scale: float = 1.0,
    overwrite: bool = False,
    with_test: bool = True,
) -> Path:
    """``eyegc nnunet dataset``: write ``out/Dataset<NNN>_<task>`` (module docstring), the test split's
    images in ``imagesTs`` unless ``with_test`` is False; nothing is left behind if a case fails.

    Returns:
        The dataset folder.

    Raises:
        EyegcError: a bad id or scale, another dataset with this id in ``out``, bad data.
    """
    if not 1 <= dataset_id <= 999:
        raise EyegcError(f"--id {dataset_id} is not an nnU-Net dataset id (1..999; 500 and above are free)")
    if not 0 < scale <= 1:
        raise EyegcError(f"--working-scale {scale} is not in (0, 1]")
    label_scheme(plugin)  # a classification task is refused before anything is read
    out = Path(out)
    check_output_path(out, "--out", OutputKind.FOLDER, [("--data", data_root)])
    folder = out / dataset_folder_name(plugin, dataset_id)
    taken = [p for p in sorted(out.glob(f"Dataset{dataset_id:03d}_*")) if p != folder] if out.is_dir() else []
    if taken:
        raise EyegcError(f"{taken[0]} already has id {dataset_id}; nnU-Net needs one folder per id: pass another --id")
    train = plugin.list_cases(data_root, "train")
    test = _test_cases(plugin, data_root, with_test)
    created = [p for p in (out, *out.parents) if not p.exists()]
    out.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_output_dir(folder, overwrite=overwrite) as tmp:
            write_dataset(plugin, tmp, train, test, scale)
    except BaseException:
        for made in created:  # innermost first: the folders this call made, now empty again
            with contextlib.suppress(OSError):
                made.rmdir()
        raise
    return folder
