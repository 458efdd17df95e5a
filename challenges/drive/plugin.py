"""The DRIVE plugin: retinal vessel segmentation, scored inside the field of view (docs/REFERENCE.md §5)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from eyegc.challenges.drive.layout import (
    IMAGE_SIZE,
    list_drive_cases,
    read_drive_fov,
    read_drive_image,
    read_drive_mask,
)
from eyegc.challenges.drive.metric import DriveVesselMetric
from eyegc.challenges.drive.submission import (
    read_drive_masks,
    read_drive_probabilities,
    read_drive_submission,
    write_drive_prediction,
    write_drive_submission,
)
from eyegc.common.errors import DataError
from eyegc.common.plugin import Case, ClassSpec, ModelDefaults, Socket
from eyegc.common.task_kinds import SegmentationTask

__all__ = ["DriveVessels", "drive_vessels", "drive_vessels_rgb"]


@dataclass(frozen=True)
class DriveVessels(SegmentationTask):
    """DRIVE vessels: one sigmoid channel on 565×584 colour fundus images, scored inside the FOV.

    ``channels`` ``"green"`` (default) feeds the green channel only (where vessel contrast is
    highest), ``"rgb"`` all three colours; ``fov_missing`` says what a case without its FOV mask gets.
    The container sockets are this project's choice (DRIVE on grand-challenge took result images).
    """

    report_plots: ClassVar[tuple[str, ...]] = ("roc",)
    name: str = "drive-vessels"
    challenge: str = "drive"
    title: str = "DRIVE — retinal vessel segmentation (F1 and AUC inside the field of view)"
    classes: tuple[ClassSpec, ...] = (ClassSpec(key="vessel", name="Retinal vessels", folder="1st_manual"),)
    channels: Literal["rgb", "green"] = "green"
    fov_missing: Literal["estimate", "error"] = "estimate"
    image_size: tuple[int, int] | None = IMAGE_SIZE
    defaults: ModelDefaults = field(
        default_factory=lambda: ModelDefaults(
            network="UNet",
            # Sized for a 2-core CPU (benchmarks/README.md): one 3x3 convolution per level (strided
            # down, transposed up; no residual units) on 128-pixel patches, 32 per image per epoch,
            # green channel after CLAHE; no elastic deformation and validation every 5 epochs buy ~15%
            # more epochs. At ~6 CPU minutes per fold, wider, deeper or full-resolution variants lose.
            network_kwargs={"channels": (16, 32, 64, 128), "strides": (2, 2, 2), "num_res_units": 0},
            patch_size=128,
            working_scale=1.0,
            batch_size=16,
            epochs=60,
            learning_rate=1e-2,
            loss="dice_bce",
            folds=5,
            patches_per_image=32,
            clahe={"clip_limit": 0.01, "space": "channels"},
            elastic_probability=0.0,
            validate_every=5,
        )
    )
    metric: DriveVesselMetric = field(default_factory=DriveVesselMetric)
    input_sockets: tuple[Socket, ...] = (Socket(slug="color-fundus-image", relative_path="images/color-fundus"),)
    output_sockets: tuple[Socket, ...] = (
        # The platform's own socket for this output (its algorithm documentation's example).
        Socket(
            "binary-vessel-segmentation",
            "images/binary-vessel-segmentation",
            kind="Segmentation",
            class_key="vessel",
        ),
        Socket(
            "vessel-probability",
            "images/vessel-probability",
            kind="Heat Map",
            class_key="vessel",
            content="probability",
        ),
    )

    @property
    def in_channels(self) -> int:
        """3 for RGB input, 1 for the green channel."""
        return 3 if self.channels == "rgb" else 1

    def list_cases(
        self, root: Path, split: str = "train", require_labels: bool = True, *, allow_missing_class: bool = False
    ) -> list[Case]:
        """Cases of ``training/`` or ``test/`` (the root, or the split folder itself).

        DRIVE has one ground-truth folder, not one per class: ``allow_missing_class`` is ignored.
        """
        return list_drive_cases(root, split, require_labels=require_labels)

    def read_image(self, path: Path) -> np.ndarray:
        """A 565×584 8-bit RGB image as ``(3, 584, 565)``, or its green channel ``(1, 584, 565)``."""
        return read_drive_image(path, channels=self.channels)

    def read_target(self, case: Case) -> np.ndarray:
        """The manual vessel mask as ``(1, 584, 565)`` uint8 0/1."""
        if case.labels is None or case.labels.get("vessel") is None:
            raise DataError(f"case {case.case_id} has no manual vessel annotation (1st_manual/*.gif)")
        return read_drive_mask(case.labels["vessel"])[None]

    def read_roi(self, case: Case) -> np.ndarray:
        """The field-of-view mask (``mask/*_mask.gif``; estimated from the image when absent, by default)."""
        return read_drive_fov(case, fov_missing=self.fov_missing)

    def write_prediction(self, out: Path, case_id: str, masks: np.ndarray, probabilities: np.ndarray) -> None:
        """``out/<case>.png`` (8-bit probability) and ``out/masks/<case>.png`` (0/255)."""
        write_drive_prediction(out, case_id, masks, probabilities)

    def read_predictions(self, pred: Path, case_ids: Sequence[str]) -> Sequence[np.ndarray]:
        """Masks from a prediction folder or a submission zip (read lazily)."""
        pred = Path(pred)
        if pred.is_file() and pred.suffix.lower() == ".zip":
            return read_drive_submission(pred, case_ids)[0]
        return read_drive_masks(pred, case_ids)

    def read_probabilities(self, pred: Path, case_ids: Sequence[str]) -> Sequence[np.ndarray]:
        """Probability maps (AUC needs them) from a prediction folder or a submission zip."""
        pred = Path(pred)
        if pred.is_file() and pred.suffix.lower() == ".zip":
            return read_drive_submission(pred, case_ids)[1]
        return read_drive_probabilities(pred, case_ids)

    def write_submission(self, pred: Path, out: Path, **options: Any) -> Path:
        """A zip of the probability maps named as the images (``01_test.png`` …)."""
        options.pop("team", None)  # the format has no team field
        return write_drive_submission(pred, out, **options)

    def make_sample_data(self, out: Path, cases: int, test_cases: int, seed: int) -> None:
        """Synthetic fundus images with vessel trees in the official layout (20 per split at most)."""
        from eyegc.challenges.drive.sample_data import make_drive_sample_data

        make_drive_sample_data(out, cases=cases, test_cases=test_cases, seed=seed)


#: The registered instances (entry points ``drive-vessels`` and ``drive-vessels-rgb``). The colour
#: variant is its own task so that its bundles, which record the task's name, are read back in colour
#: by predict and the container.
drive_vessels = DriveVessels()
drive_vessels_rgb = DriveVessels(
    name="drive-vessels-rgb",
    channels="rgb",
    title="DRIVE — retinal vessel segmentation from RGB input (F1 and AUC inside the field of view)",
)
