"""The plugin contract: what one challenge task declares so the shared core can serve it.

A plugin is a :class:`TaskPlugin`: a small declarative object (classes, model defaults, allowed
test-time augmentation, grand-challenge sockets) plus the few functions only the challenge knows
(its official layout reader, label encoding, metric, submission writer and sample-data maker).
Everything else — training, tuning, inference, ensembling, bundles, the container — is shared.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "DIHEDRAL_OPS",
    "SOCKET_CONTENTS",
    "Case",
    "ClassSpec",
    "EvaluationResult",
    "Metric",
    "ModelDefaults",
    "OwnPostprocessing",
    "Socket",
    "TaskKind",
    "TaskPlugin",
]


class TaskKind(str, enum.Enum):
    """How a task's network output is read."""

    #: one sigmoid channel per class; classes may overlap (DRAC22, IDRiD lesions, DRIVE).
    MULTILABEL_SEGMENTATION = "multilabel_segmentation"
    #: one softmax channel per class, one class per pixel, stored as an encoded label map (GOALS layers).
    MULTICLASS_SEGMENTATION = "multiclass_segmentation"
    #: one or more classification heads per image (GOALS glaucoma, IDRiD grading, DRAC22 tasks 2/3).
    CLASSIFICATION = "classification"


#: The eight symmetries of the square, by name; inference.py knows how to apply and invert each.
DIHEDRAL_OPS: tuple[str, ...] = (
    "identity",
    "flip_lr",
    "flip_ud",
    "rot180",
    "rot90",
    "rot270",
    "transpose",
    "antitranspose",
)


@dataclass(frozen=True)
class ClassSpec:
    """One output class (segmentation) or one head (classification).

    Attributes:
        key: short lowercase name used in configs, JSON and CSV (``"irma"``).
        name: the organisers' full name.
        folder: the official ground-truth folder name, when the layout has one per class.
        value: the pixel value in an encoded label map (GOALS: 0/80/160/255), if any.
        num_classes: for a classification head, how many grades it predicts.
    """

    key: str
    name: str
    folder: str | None = None
    value: int | None = None
    num_classes: int | None = None


#: What an output socket carries; the container writes each from the prediction of one case.
SOCKET_CONTENTS: dict[str, str] = {
    "mask": "Image: the class's 0/1 mask, uint8",
    "probability": "Image: the class's probability map, float32 in [0, 1]",
    "label_map": "Image: the class-index map encoded with each class's ClassSpec.value, uint8",
    "grade": "Value: the head's predicted grade, a JSON integer",
    "likelihood": "Value: the head's probability of grade 1, a JSON number (binary heads)",
    "probabilities": "Value: the head's probability of each grade, a JSON list of numbers that sums to 1",
}


@dataclass(frozen=True)
class Socket:
    """A grand-challenge algorithm input or output (docs/REFERENCE.md §1).

    ``relative_path`` is below ``/input`` or ``/output``; image sockets start with ``images/``
    (one ``.mha`` file inside), value sockets name their JSON file (``dr-grade.json``).
    ``class_key`` ties an output socket to the class or head it carries and ``content`` says
    what of it (a key of :data:`SOCKET_CONTENTS`).
    """

    slug: str
    relative_path: str
    super_kind: str = "Image"
    kind: str = "Image"
    class_key: str | None = None
    content: str = "mask"


@dataclass(frozen=True)
class ModelDefaults:
    """What ``eyegc train`` uses when the user does not say otherwise."""

    network: str = "UNet"
    network_kwargs: Mapping[str, Any] = field(default_factory=dict)
    patch_size: int = 256
    working_scale: float = 1.0
    batch_size: int = 4
    epochs: int = 50
    learning_rate: float = 1e-3
    loss: str = "dice_bce"
    folds: int = 5
    patches_per_image: int = 2
    normalize: str = "zscore"
    #: contrast-limited adaptive histogram equalisation before normalising: ``apply_clahe``'s
    #: arguments (``{"clip_limit": 0.01, "space": "channels"}``), or ``None`` for none.
    clahe: Mapping[str, Any] | None = None
    #: chance that a training patch is elastically deformed (MONAI Rand2DElasticd); 0 skips it, which
    #: saves about a fifth of a CPU epoch on DRIVE (the grid is drawn for every patch).
    elastic_probability: float = 0.15
    #: validate (and consider for the best epoch) every N epochs and at the last one; validation
    #: is about a fifth of a CPU epoch on DRIVE.
    validate_every: int = 1
    #: estimate the field of view of RGB fundus images, normalise inside it, zero outside.
    fov_mask: bool = False
    #: classification: the ``(H, W)`` every image is resized to (``patch_size`` is then unused).
    input_size: tuple[int, int] | None = None


@dataclass
class Case:
    """One image of a split and, when known, its labels.

    ``labels`` maps a class key to its mask file (``None`` = absent file = empty mask) for
    segmentation, or to an integer grade for classification; it is ``None`` when the split has no
    ground truth.
    """

    case_id: str
    image: Path
    labels: dict[str, Any] | None = None


@dataclass
class EvaluationResult:
    """A local leaderboard: the ranked figures, per-class figures and per-case rows."""

    task: str
    leaderboard: dict[str, float]
    per_class: dict[str, dict[str, float]]
    per_case: list[dict[str, Any]] = field(default_factory=list)
    cases: int = 0

    def to_json_dict(self) -> dict[str, Any]:
        """The ``--json`` document: ``{"task", "leaderboard", "per_class", "cases"}``."""
        return {
            "task": self.task,
            "leaderboard": {k: _json_float(v) for k, v in self.leaderboard.items()},
            "per_class": {c: {k: _json_float(v) for k, v in vals.items()} for c, vals in self.per_class.items()},
            "cases": self.cases,
        }


def _json_float(value: float) -> float | None:
    value = float(value)
    return None if np.isnan(value) else value


@runtime_checkable
class Metric(Protocol):
    """A challenge's leaderboard metric, computed exactly as the organisers do.

    Attributes:
        primary: the leaderboard key the ranking uses (``"mean_dsc"``); also what training
            selects the best epoch on and tuning maximises.
        class_primary: the per-class key that ``primary`` averages (``"dsc"``), used by
            per-class threshold tuning.
        needs_probabilities: True when the metric ranks scores (AUPR, AUC) rather than masks.
        case_primary: the per-case row key that measures one case on the leaderboard's terms,
            higher is better, NaN where the case is not scored (no ground truth of any class);
            ``eyegc report`` lists cases worst first by it.
    """

    primary: str
    class_primary: str
    needs_probabilities: bool
    case_primary: str

    def __call__(
        self,
        task: str,
        predictions: Sequence[np.ndarray],
        targets: Sequence[np.ndarray],
        case_ids: Sequence[str],
        probabilities: Sequence[np.ndarray] | None = None,
        rois: Sequence[np.ndarray | None] | None = None,
    ) -> EvaluationResult:
        """Score predictions (each ``(C, H, W)``) against targets of the same shape.

        ``probabilities`` (same shape, float) are passed where the caller has them; a metric
        with ``needs_probabilities`` (AUPR, AUC) requires them, a mask metric ignores them.
        ``rois`` are per-case ``(H, W)`` bool fields of view (``None``: the whole image) that a
        metric counting only inside the field of view (DRIVE) uses. Every input may be a lazy
        sequence that loads a case on access: iterate once, in order, and keep only running sums.

        For a classification task a prediction and a target are ``(heads,)`` int64 grades and
        the probabilities ``(heads, max_num_classes)`` float (see ``eyegc.common.classification``).
        """
        ...

    def class_score(self, class_index: int, predictions: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> float:
        """The per-class figure ``class_primary`` for one class from ``(H, W)`` masks of each case.

        Tuning maximises this class by class, so it must be exactly what the leaderboard averages.
        Where the task has a field of view, tuning sets predictions and targets outside it to 0
        before calling this (exact for Dice/F1, which ignore true negatives).
        """
        ...


@runtime_checkable
class TaskPlugin(Protocol):
    """What one challenge task declares. Register it with :func:`eyegc.common.registry.register_task`.

    Images and targets cross this boundary as numpy arrays: an image is ``(channels, H, W)`` in
    its stored dtype; a multi-label target or prediction is ``(classes, H, W)`` uint8 0/1; a
    multi-class one is a ``(1, H, W)`` uint8 class-index map whose index 0 is the background
    class (padding and rotation fill with 0), the plugin translating its official encoding
    (e.g. GOALS 0/80/160/255) in ``read_target``/``write_prediction``.
    """

    name: str
    challenge: str
    title: str
    kind: TaskKind
    classes: tuple[ClassSpec, ...]
    in_channels: int
    image_size: tuple[int, int] | None
    defaults: ModelDefaults
    #: TTA mode name -> the ops it applies (a subset of DIHEDRAL_OPS); what the task allows.
    allowed_tta: Mapping[str, tuple[str, ...]]
    #: the plots ``eyegc report`` draws beside the leaderboard, by name (``eyegc.common.report.plots.PLOTS``:
    #: ``"pr"``, ``"roc"``, ``"confusion"``, ``"thickness"``).
    report_plots: tuple[str, ...]
    #: the official submission file's suffix (``".zip"``, ``".csv"``): what ``eyegc demo`` names it.
    submission_suffix: str
    metric: Metric
    input_sockets: tuple[Socket, ...]
    output_sockets: tuple[Socket, ...]

    def list_cases(
        self, root: Path, split: str = "train", require_labels: bool = True, *, allow_missing_class: bool = False
    ) -> list[Case]:
        """The cases of a split, read from the official layout under ``root``.

        A missing ground-truth class folder is an error unless ``allow_missing_class`` (the user's
        ``--allow-missing-class``): the class then has no mask in any case. A layout without
        per-class folders accepts and ignores it. Files are checked by
        :mod:`eyegc.common.datafiles`' rules (suffixes in any case, no duplicates, no foreign types).
        """
        ...

    def read_image(self, path: Path) -> np.ndarray:
        """One input image as ``(channels, H, W)``; bad files raise DataError naming the file."""
        ...

    def read_target(self, case: Case) -> np.ndarray:
        """A case's ground truth as ``(classes, H, W)`` uint8 0/1 (classification: ``(heads,)`` int64)."""
        ...

    def read_roi(self, case: Case) -> np.ndarray | None:
        """The case's field of view, ``(H, W)`` bool, where the task scores only inside it; else None."""
        ...

    def write_prediction(self, out: Path, case_id: str, masks: np.ndarray, probabilities: np.ndarray) -> None:
        """Write one case's final prediction in the task's prediction layout under ``out``.

        ``masks`` are the postprocessed masks (classification: ``(heads,)`` grades) and
        ``probabilities`` the ensemble's probabilities at the original size (classification:
        ``(heads, max_num_classes)``); a task scored on probabilities (AUPR) writes them too.
        """
        ...

    def read_predictions(self, pred: Path, case_ids: Sequence[str]) -> Sequence[np.ndarray]:
        """Read predictions for ``case_ids`` (a prediction folder or an official submission file)."""
        ...

    def read_probabilities(self, pred: Path, case_ids: Sequence[str]) -> Sequence[np.ndarray] | None:
        """Probabilities for ``case_ids`` where the metric needs them (may be lazy); else None."""
        ...

    def write_submission(self, pred: Path, out: Path, **options: Any) -> Path:
        """Validate predictions and write the official submission file; nothing is left on error."""
        ...

    def make_sample_data(self, out: Path, cases: int, test_cases: int, seed: int) -> None:
        """Write a synthetic data set in the official layout into the (empty) folder ``out``."""
        ...


@runtime_checkable
class OwnPostprocessing(Protocol):
    """The optional hook of a :class:`TaskPlugin`: its own final step from probabilities to the
    prediction (GOALS layers: the anatomical layer order), used instead of thresholds and component
    sizes by training's model selection, ``eyegc predict`` and the container alike. ``options`` is
    the bundle's ``postprocessing.task_options``: the task's own settings, empty unless set."""

    def postprocess(self, probabilities: np.ndarray, options: Mapping[str, Any]) -> np.ndarray:
        """The prediction (``(1, H, W)`` class indices, or ``(classes, H, W)`` masks) of one case."""
        ...
