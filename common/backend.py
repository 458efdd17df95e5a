"""What a training backend provides: the part of training that depends on the deep-learning library.

Everything else about a run (settings, splits, resume, data, tuning, the bundle) is written once in
:mod:`eyegc.common.training`. A backend is an object with these members, published under the
``eyegc.backends`` entry-point group and found by name with
:func:`eyegc.common.registry.get_backend`, the way nnU-Net finds trainer classes: the core never
tests a backend's name. eyegc has two: ``torch`` (:mod:`eyegc.common.torch_backend`) and
``paddle`` (:mod:`eyegc.common.paddle_backend`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from eyegc.common.plugin import TaskPlugin

if TYPE_CHECKING:  # the run module imports this one; these are for the signatures only
    from eyegc.common.training import FoldJob, TrainConfig, TrainingData

__all__ = ["EpochCallback", "FoldFinished", "TrainingBackend"]

#: called after each epoch's checkpoint is saved: (fold, epoch, history). May raise to stop.
EpochCallback = Callable[[int, int, dict[str, list[float]]], None]
#: called by a backend when a fold ends: (fold, its bundle.json record, seconds it took).
FoldFinished = Callable[[int, dict[str, Any], float], None]


@runtime_checkable
class TrainingBackend(Protocol):
    """Train and load the networks of one fold with one deep-learning library."""

    #: The name a bundle records (``bundle.json`` ``"backend"``) and ``--backend`` takes.
    name: str
    #: Each fold's checkpoint file (``fold_<k>/<name>``): a run holding one can be resumed.
    checkpoint_name: str

    def check_settings(self, plugin: TaskPlugin, cfg: TrainConfig) -> None:
        """Refuse settings or tasks this backend cannot train, before anything is read (EyegcError)."""
        ...

    def configure(self, plugin: TaskPlugin, cfg: TrainConfig) -> dict[str, Any]:
        """A new run's ``bundle.json`` config (:func:`eyegc.common.training.resolve_config` plus the backend's own)."""
        ...

    def check_network(self, config: dict[str, Any], data: TrainingData, device: str) -> None:
        """Build the network and run one input through it, so bad settings fail before training."""
        ...

    def train_folds(self, job: FoldJob) -> None:
        """Train the folds ``job.todo`` (checkpoint every epoch, resume from it, keep the best epoch by
        the task's metric with :class:`~eyegc.common.training.FoldLog`, save out-of-fold
        probabilities) and call ``job.finished`` as each ends."""
        ...

    def load_fold(self, config: dict[str, Any], weights: Path) -> Any:
        """One trained fold for inference: on the CPU, eval mode, callable on a torch batch (BundleError)."""
        ...
