"""What a training backend provides: the part of training that depends on the deep-learning library.

Everything else about a run (settings, splits, resume, data, tuning, the bundle) is written once in
:mod:`eyegc.common.training`; the types the two exchange (the user's settings, the prepared data,
the folds to train) are defined here, below the run, so neither module imports the other's. A
backend is an object with these members, published under the
``eyegc.backends`` entry-point group and found by name with
:func:`eyegc.common.registry.get_backend`, the way nnU-Net finds trainer classes: the core never
tests a backend's name. eyegc has two: ``torch`` (:mod:`eyegc.common.torch_backend`) and
``paddle`` (:mod:`eyegc.common.paddle_backend`); nnU-Net's is ``nnunet`` (:mod:`eyegc.common.nnunet.backend`).

Two capabilities are optional, each a protocol of its own that a backend has or has not (as a
plugin's :class:`~eyegc.common.plugin.OwnPostprocessing`): :class:`OwnInference`, a backend whose
bundles predict through the library's own predictor rather than eyegc's sliding window and TTA;
:class:`OwnPreprocessing`, a backend that prepares its training images itself; and
:class:`NeedsExtra`, a backend whose bundles need an optional dependency in the algorithm image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from eyegc.common.bundle_config import BundleConfig, FoldRecord
from eyegc.common.plugin import Case, TaskPlugin
from eyegc.common.ranks import SINGLE_PROCESS, Ranks

if TYPE_CHECKING:  # annotations only: the registry imports this module, and `eyegc --help` needs no torch
    import numpy as np
    import torch

__all__ = [
    "EpochCallback",
    "FoldFinished",
    "FoldJob",
    "NeedsExtra",
    "OwnInference",
    "OwnPreprocessing",
    "TrainConfig",
    "TrainingBackend",
    "TrainingData",
]

#: called after each epoch's checkpoint is saved: (fold, epoch, history). May raise to stop.
EpochCallback = Callable[[int, int, dict[str, list[float]]], None]
#: called by a backend when a fold ends: (fold, its bundle.json record, seconds it took).
FoldFinished = Callable[[int, FoldRecord, float], None]


@dataclass
class TrainConfig:
    """Everything ``eyegc train`` lets the user choose; ``None`` means the task's default."""

    model: str | None = None
    network_kwargs: dict[str, Any] | None = None
    #: super-resolution-aided segmentation: the network runs at 1 / this factor (``None``: not aided).
    super_resolution: int | None = None
    #: its reconstruction and feature-affinity loss weights (``None``: DSRL's 0.1 and 1.0).
    sr_weights: list[float] | None = None
    folds: int | None = None
    fold: str = "all"
    epochs: int | None = None
    batch_size: int | None = None
    patch_size: int | None = None
    working_scale: float | None = None
    loss: str | None = None
    class_weights: list[float] | None = None
    #: weight of the RMI loss added to ``loss`` (0: none).
    rmi_weight: float | None = None
    learning_rate: float | None = None
    patches_per_image: int | None = None
    pretrained: str | None = None
    device: str = "auto"
    seed: int = 0
    tune: bool = True
    #: also try a dense CRF per class when the thresholds are tuned (``eyegc tune --crf``).
    crf: bool = False
    #: "torch" (MONAI networks), "paddle" (classification tasks) or "nnunet" (nnU-Net v2, segmentation).
    backend: str = "torch"
    #: CLAHE before normalising: "none", "channels" or "lab"; ``clahe_clip`` its clip limit.
    clahe: str | None = None
    clahe_clip: float | None = None
    fov_mask: bool | None = None
    validate_every: int | None = None
    #: folds trained at once, each in its own process with ``torch threads / jobs`` threads (CPU).
    jobs: int = 1
    #: a missing ground-truth class folder, or a class no training case shows, is no error (``--allow-missing-class``).
    allow_missing_class: bool = False
    #: where augmentation runs: "batched" (on the device) or "per-sample" (CPU); ``None``: batched.
    augmentation: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainingData:
    """The training cases as the backends take them: prepared images, labels, targets, fields of view."""

    cases: list[Case]
    images: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    targets: dict[str, np.ndarray]
    #: field of view at the original size (metric) and at the working size (loss); absent: whole image.
    rois: dict[str, np.ndarray] = field(default_factory=dict)
    roi_tensors: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class FoldJob:
    """What a backend's ``train_folds`` gets from the run: the folds ``todo`` of ``splits`` to train
    on ``data``, the run folder and its ``bundle.json`` config, the user's settings, the epoch
    callbacks, and ``finished`` to call as each fold ends."""

    plugin: TaskPlugin
    run: Path
    config: BundleConfig
    data: TrainingData
    splits: list[dict[str, list[str]]]
    todo: list[int]
    cfg: TrainConfig
    callbacks: Sequence[EpochCallback]
    finished: FoldFinished
    #: this process among the torchrun processes (one process: rank 0 of 1).
    ranks: Ranks = SINGLE_PROCESS


@runtime_checkable
class TrainingBackend(Protocol):
    """Train and load the networks of one fold with one deep-learning library."""

    #: The name a bundle records (:attr:`BundleConfig.backend`) and ``--backend`` takes.
    name: str
    #: Each fold's checkpoint file (``fold_<k>/<name>``): a run holding one can be resumed.
    checkpoint_name: str
    #: Trains under torchrun, one fold at a time across the ranks (``FoldJob.ranks``).
    distributed: bool

    def check_settings(self, plugin: TaskPlugin, cfg: TrainConfig) -> None:
        """Refuse settings or tasks this backend cannot train, before anything is read (EyegcError)."""
        ...

    def configure(self, plugin: TaskPlugin, cfg: TrainConfig) -> BundleConfig:
        """A new run's ``bundle.json`` config (:func:`eyegc.common.training.resolve_config` plus the backend's own)."""
        ...

    def check_network(self, config: BundleConfig, data: TrainingData, device: str) -> None:
        """Build the network and run one input through it, so bad settings fail before training."""
        ...

    def train_folds(self, job: FoldJob) -> None:
        """Train the folds ``job.todo`` (checkpoint every epoch, resume from it, keep the best epoch by
        the task's metric with :class:`~eyegc.common.training.FoldLog`, save out-of-fold
        probabilities) and call ``job.finished`` as each ends."""
        ...

    def load_fold(self, config: BundleConfig, weights: Path) -> Any:
        """One trained fold for inference: on the CPU, eval mode, callable on a torch batch (BundleError)."""
        ...


@runtime_checkable
class OwnInference(Protocol):
    """A backend whose bundles predict with the library's own predictor (nnU-Net: its sliding
    window, mirroring and fold averaging), not with eyegc's sliding window and TTA ops."""

    def bundle_predictor(
        self, plugin: TaskPlugin, config: BundleConfig, folds: Sequence[Any], tta: str, device: torch.device
    ) -> Callable[[np.ndarray], np.ndarray]:
        """A bundle's predictor: ``(C, H, W)`` image -> ``(classes, H, W)`` probabilities at its size, the mean
        over ``folds`` (what :meth:`TrainingBackend.load_fold` returned for each)."""
        ...


@runtime_checkable
class NeedsExtra(Protocol):
    """A backend whose bundles need an optional dependency (``pip install 'eyegc[<extra>]'``) in the image."""

    #: the ``pyproject.toml`` extra: ``paddle``, ``nnunet``.
    extra: str


@runtime_checkable
class OwnPreprocessing(Protocol):
    """A backend that reads and prepares the training images itself (nnU-Net: its own export and
    preprocessing): the run gives it :attr:`TrainingData.targets` and ``rois`` only, not
    ``images``, ``labels`` or ``roi_tensors``."""

    #: always True; the attribute's presence is the capability.
    own_preprocessing: bool
