"""``bundle.json`` as a typed, versioned model: its keys, defaults and file names in one place.

Every reader and writer of a bundle goes through :class:`BundleConfig`; nothing else indexes
``bundle.json`` by string. A bundle written by an earlier format is upgraded in memory when read
(:func:`config_from_json`), one registered step per version, and written in the current format the
next time it is saved (re-tuning re-signs it). ``docs/bundle.schema.json`` is this model's JSON
schema (``python -m eyegc.common.bundle_config`` prints it; a test keeps the file current).

Format history:

- ``eyegc-bundle/1``: the first format; ``backend`` absent meant torch.
- ``eyegc-bundle/2``: ``backend`` always written; a task's own postprocessing settings under
  ``postprocessing.task_options``; ``training.augmentation``; every key validated on load.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, Literal

from eyegc.common.errors import BundleError
from eyegc.common.options import AUGMENTATIONS
from eyegc.common.plugin import TaskKind
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

__all__ = [
    "BUNDLE_FORMAT",
    "CHECKSUMS_NAME",
    "CONFIG_NAME",
    "DEFAULT_THRESHOLD",
    "HISTORY_NAME",
    "SCHEMA_VERSION",
    "SPLITS_NAME",
    "WEIGHTS_NAME",
    "BundleConfig",
    "CrfSettings",
    "CrossValidation",
    "DataFingerprint",
    "FoldRecord",
    "NetworkSpec",
    "Postprocessing",
    "Preprocessing",
    "SuperResolution",
    "TrainingSettings",
    "config_from_json",
]

SCHEMA_VERSION = 3
BUNDLE_FORMAT = f"eyegc-bundle/{SCHEMA_VERSION}"
CONFIG_NAME = "bundle.json"
SPLITS_NAME = "splits.json"
CHECKSUMS_NAME = "checksums.sha256"
WEIGHTS_NAME = "model.pt"
#: a fold's loss and validation metric per epoch, beside its weights.
HISTORY_NAME = "history.json"
#: a class's probability threshold until tuning chooses one.
DEFAULT_THRESHOLD = 0.5
#: how an error about a setting out of its range ends.
SETTING_EDITED = "the bundle was edited: retrain it, or re-tune it with `eyegc tune`"


#: the error type of a value out of its range, reported as "<key> must be ..." (not pydantic's wording).
_SETTING_ERROR = "bundle_setting"


def _number_rule(allowed: str, in_range: Callable[[float], bool]) -> Callable[[Any], Any]:
    """A before-validator refusing anything but a number (no bool, no string) for which ``in_range`` holds."""

    def check(value: Any) -> Any:
        try:
            allowed_number = not isinstance(value, bool) and isinstance(value, (int, float)) and in_range(float(value))
        except OverflowError:  # an integer beyond any float
            allowed_number = False
        if not allowed_number:
            shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:37]}..."
            raise PydanticCustomError(
                _SETTING_ERROR, "must be {allowed}, got {value}", {"allowed": allowed, "value": shown}
            )
        return value

    return check


#: a class's threshold: a probability.
Threshold = Annotated[float, BeforeValidator(_number_rule("a number from 0 to 1", lambda v: 0.0 <= v <= 1.0))]
#: a class's minimum component size in pixels: 2.0 is 2, 2.5 is refused.
MinSize = Annotated[
    int, BeforeValidator(_number_rule("a whole number of at least 0", lambda v: v.is_integer() and v >= 0))
]


class _Section(BaseModel):
    # A key this model does not know is refused: a typo in an edited bundle.json ("tresholds")
    # must not fall back to a default silently.
    model_config = ConfigDict(extra="forbid")


class SuperResolution(_Section):
    """Super-resolution-aided segmentation (``eyegc.common.super_resolution``): the network runs at
    ``1 / factor`` of the input's resolution, with a reconstruction branch used in training only."""

    factor: Annotated[int, Field(ge=2, le=4)] = 2
    #: the registered network's output channels, the two branches' width.
    features: Annotated[int, Field(ge=4, le=256)] = 16
    sr_weight: Annotated[float, Field(ge=0)] = 0.1
    fa_weight: Annotated[float, Field(ge=0)] = 1.0
    fa_stride: Annotated[int, Field(ge=1)] = 8


class NetworkSpec(_Section):
    """The network by registry name (``eyegc.common.networks``), its constructor arguments, and
    whether it is super-resolution-aided."""

    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    super_resolution: SuperResolution | None = None


class Preprocessing(_Section):
    """How an image becomes the network's input (``eyegc.common.preprocessing.prepare_image``)."""

    working_scale: float = 1.0
    normalize: str = "zscore"
    #: ``apply_clahe``'s keyword arguments (``space``, ``clip_limit``, ``kernel_size``); ``None`` = off.
    clahe: dict[str, Any] | None = None
    fov_mask: bool = False
    #: classification: every image resized to this ``(height, width)``; ``None`` for segmentation.
    input_size: tuple[int, int] | None = None


class TrainingSettings(_Section):
    """The resolved ``eyegc train`` settings a run was trained (and is resumed) with."""

    folds: Annotated[int, Field(ge=2)]
    epochs: Annotated[int, Field(ge=1)]
    batch_size: Annotated[int, Field(ge=1)]
    learning_rate: Annotated[float, Field(gt=0)]
    loss: str
    class_weights: list[float] | None = None
    #: weight of the region mutual information loss added to ``loss`` (0: none).
    rmi_weight: Annotated[float, Field(ge=0)] = 0.0
    #: a dense CRF per class is tried when the thresholds are tuned at the end (``--crf``; kept on resume).
    crf: bool = False
    patches_per_image: Annotated[int, Field(ge=1)]
    elastic_probability: Annotated[float, Field(ge=0, le=1)] = 0.15
    #: ``batched`` (on the training device) or ``per-sample`` (on the CPU): eyegc.common.augmentation.
    augmentation: Literal[AUGMENTATIONS] = AUGMENTATIONS[0]  # type: ignore[valid-type]
    validate_every: Annotated[int, Field(ge=1)] = 1
    seed: int = 0
    pretrained: str | None = None
    #: the leaderboard metric that picks each fold's best epoch.
    metric: str
    allow_missing_class: bool = False
    #: classes no training label holds (trained anyway with ``--allow-missing-class``).
    classes_without_ground_truth: list[str] | None = None
    #: the training data's folder (absolute), where ``eyegc tune`` finds the labels again.
    data_root: str | None = None


class CrfSettings(_Section):
    """A fully connected CRF's parameters (Krähenbühl and Koltun, 2011), as pydensecrf names them.

    The smoothness kernel has width ``gaussian_sxy`` pixels and weight ``gaussian_compat``; the
    appearance kernel ``bilateral_sxy`` pixels and ``bilateral_srgb`` grey levels, weight ``bilateral_compat``.
    """

    iterations: Annotated[int, Field(ge=1, le=50)] = 5
    gaussian_sxy: Annotated[float, Field(gt=0)] = 3.0
    gaussian_compat: Annotated[float, Field(ge=0)] = 3.0
    bilateral_sxy: Annotated[float, Field(gt=0)] = 50.0
    bilateral_srgb: Annotated[float, Field(gt=0)] = 13.0
    bilateral_compat: Annotated[float, Field(ge=0)] = 5.0
    #: the resolution the CRF runs at, as a fraction of the image's (``eyegc tune`` uses the working scale,
    #: where the network saw the image): its cost grows with the pixels, 12 MP IDRiD images take ~15 s a class.
    scale: Annotated[float, Field(gt=0, le=1)] = 1.0


class Postprocessing(_Section):
    """Per-class thresholds and minimum component sizes (``eyegc tune`` chooses them)."""

    thresholds: dict[str, Threshold] = Field(default_factory=dict)
    min_component_size: dict[str, MinSize] = Field(default_factory=dict)
    tuned: bool = False
    #: each class's out-of-fold score at its chosen settings (tuned bundles only).
    class_scores: dict[str, float] | None = None
    #: the task's own settings, read by its ``postprocess`` hook (GOALS layers: ``anatomical``).
    task_options: dict[str, Any] = Field(default_factory=dict)
    #: classification heads of three or more grades: per grade, an offset added to the log-probability before
    #: the argmax (``eyegc tune --grade-offsets``); a head without one takes the plain argmax.
    grade_offsets: dict[str, list[float]] = Field(default_factory=dict)
    #: multi-label segmentation: the classes whose probabilities a dense CRF refines before their threshold
    #: (``eyegc tune --crf`` chooses them and the parameters); absent classes are not refined.
    crf: dict[str, CrfSettings] = Field(default_factory=dict)

    def threshold(self, key: str) -> float:
        """The class's threshold (:data:`DEFAULT_THRESHOLD` when none is set)."""
        return float(self.thresholds.get(key, DEFAULT_THRESHOLD))

    def min_size(self, key: str) -> int:
        """The class's minimum component size in pixels (0, none removed, when none is set)."""
        return int(self.min_component_size.get(key, 0))


class FoldRecord(_Section):
    """One finished fold: its best epoch and where its weights are."""

    best_epoch: int
    best_score: float
    epochs_done: int
    #: the weights file, relative to the bundle folder (``fold_<k>/model.pt``).
    weights: str
    validation_cases: list[str]
    seconds: float | None = None


class CrossValidation(_Section):
    """Out-of-fold leaderboard reports (``eyegc evaluate``'s JSON) before and after tuning."""

    cases: int
    default_postprocessing: dict[str, Any]
    tuned_postprocessing: dict[str, Any]


class DataFingerprint(_Section):
    """A sha256 over the training files' relative names and contents."""

    sha256: str
    files: int
    cases: int | None = None


class BundleConfig(_Section):
    """``bundle.json``: everything predict, evaluate and the container rebuild a model from."""

    format: str = BUNDLE_FORMAT
    task: str
    eyegc_version: str = "0+unknown"
    kind: TaskKind
    #: class keys (segmentation) or head keys (classification), in output-channel order.
    classes: list[str]
    in_channels: int
    #: the training backend's registry name (``eyegc.backends`` entry points).
    backend: str = "torch"
    network: NetworkSpec
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    #: sliding-window patch side; 0 = the whole image (classification).
    patch_size: int
    #: classification: grades per head.
    head_classes: list[int] | None = None
    #: TTA mode -> the dihedral operations it may use.
    allowed_tta: dict[str, list[str]] = Field(default_factory=dict)
    training: TrainingSettings
    postprocessing: Postprocessing = Field(default_factory=Postprocessing)
    folds: dict[int, FoldRecord] = Field(default_factory=dict)
    cross_validation: CrossValidation | None = None
    created: str | None = None
    data_fingerprint: DataFingerprint | None = None

    @property
    def output_channels(self) -> int:
        """Logits per pixel (segmentation: one per class) or per image (classification: all heads' grades)."""
        if self.kind == TaskKind.CLASSIFICATION:
            return int(sum(self.head_classes or ()))
        return len(self.classes)

    def weights_files(self) -> list[str]:
        """Every finished fold's weights file, relative to the bundle folder, sorted."""
        return sorted(record.weights for record in self.folds.values())

    def record_fold(self, fold: int, record: FoldRecord) -> None:
        """Add or replace a fold's record, keeping the folds in order."""
        self.folds = dict(sorted({**self.folds, fold: record}.items()))

    def to_json(self) -> str:
        """The ``bundle.json`` text, in the current format."""
        data = self.model_dump(mode="python")
        data["format"] = BUNDLE_FORMAT
        return json.dumps(data, indent=2) + "\n"


def _from_format_1(data: dict[str, Any]) -> dict[str, Any]:
    """1 -> 2: the backend becomes explicit (a format-1 bundle without one was trained with torch),
    a task's own postprocessing keys (GOALS' ``anatomical``) move into ``postprocessing.task_options``,
    and the augmentation it trained with is named (``per-sample``)."""
    post = data.get("postprocessing")
    if not isinstance(post, dict):
        return {**data, "backend": data.get("backend", "torch")}  # the schema names what is wrong
    post = dict(post)
    shared = set(Postprocessing.model_fields) - {"task_options"}
    own = {key: post.pop(key) for key in sorted(set(post) - shared)}
    if own:
        post["task_options"] = {**post.get("task_options", {}), **own}
    upgraded = {**data, "backend": data.get("backend", "torch"), "postprocessing": post}
    if isinstance(data.get("training"), dict):  # format 1 augmented every patch on the CPU; a resumed run still does
        upgraded["training"] = {"augmentation": "per-sample", **data["training"]}
    return upgraded


def _from_format_2(data: dict[str, Any]) -> dict[str, Any]:
    """2 -> 3: nothing to move; format 3's new keys default to what format 2 did (no RMI, SR or CRF)."""
    return data


#: format N -> the step that turns its dict into format N + 1.
_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _from_format_1, 2: _from_format_2}


def _format_version(data: dict[str, Any], source: str) -> int:
    stated = data.get("format")
    prefix, _, number = str(stated).partition("/")
    if (
        prefix != "eyegc-bundle"
        or not (number.isascii() and number.isdigit())
        or not 1 <= int(number) <= SCHEMA_VERSION
    ):
        raise BundleError(
            f"{source} has format {stated!r}; this eyegc reads eyegc-bundle/1 to {BUNDLE_FORMAT} "
            "(a newer eyegc wrote it: upgrade eyegc)"
        )
    return int(number)


def _validation_message(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "the top level"
    if first["type"] == _SETTING_ERROR:
        return f"{source}: {where} {first['msg']}; {SETTING_EDITED}"
    problem = first["msg"] if first["type"] != "extra_forbidden" else "is not a bundle.json key"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{source}: {where}: {problem}{more}; the bundle was edited or damaged: copy it again, or retrain"


def config_from_json(data: Any, source: str) -> BundleConfig:
    """A parsed ``bundle.json`` of any known format, upgraded to the current one and validated.

    Args:
        data: the parsed JSON.
        source: the file it came from, named in errors.

    Raises:
        BundleError: an unknown format, a missing or unknown key, or a value of the wrong type.
    """
    if not isinstance(data, dict):
        raise BundleError(f"{source} is not a JSON object; the bundle is damaged")
    version = _format_version(data, source)
    while version < SCHEMA_VERSION:
        data = _UPGRADES[version](data)
        version += 1
    try:
        return BundleConfig.model_validate({**data, "format": BUNDLE_FORMAT})
    except ValidationError as error:
        raise BundleError(_validation_message(error, source)) from None


if __name__ == "__main__":
    print(json.dumps(BundleConfig.model_json_schema(), indent=2))
