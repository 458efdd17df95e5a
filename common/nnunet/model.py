"""A trained nnU-Net fold inside an eyegc bundle, and prediction through nnunetv2's own predictor.

A fold of an nnU-Net bundle is one file, ``fold_<k>/nnunet_fold.pt``, written by
:func:`fold_file_contents` from nnU-Net's ``checkpoint_final.pth``: the network weights, and as
text the ``plans.json``, ``dataset.json``, configuration and trainer name the predictor needs. It
holds tensors, strings and lists only, so it loads with ``torch.load(weights_only=True)`` and is
covered by the bundle's checksums like any weights file. nnU-Net's own checkpoints hold numpy
scalars in their training log; :func:`read_nnunet_checkpoint` reads them with torch's safe
unpickler, allowing those numpy types and nothing else.

Prediction (:class:`NnunetPredictor`) hands each image to ``nnUNetPredictor.predict_single_npy_array``
exactly as nnU-Net's ``NaturalImage2DIO`` would have read the exported PNG (``(C, 1, H, W)``
float32, spacing ``(999, 1, 1)``): nnU-Net normalises, walks the image with its Gaussian-weighted
sliding window, mirrors (its test-time augmentation) and averages the folds' logits itself.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from eyegc.common.errors import BundleError, EyegcError
from eyegc.common.nnunet.dataset import class_probabilities, nnunet_image
from eyegc.common.plugin import TaskPlugin
from eyegc.common.preprocessing import resize_probabilities
from torch import nn

__all__ = [
    "FOLD_FORMAT",
    "MISSING_NNUNET",
    "NNUNET_FOLD_NAME",
    "NnunetNetwork",
    "NnunetPredictor",
    "check_plans",
    "fold_file_contents",
    "load_nnunet_fold",
    "read_nnunet_checkpoint",
    "require_nnunet",
]

NNUNET_FOLD_NAME = "nnunet_fold.pt"
FOLD_FORMAT = "eyegc-nnunet-fold/1"
MISSING_NNUNET = (
    "nnU-Net v2 is not installed: pip install -c constraints.txt 'eyegc[nnunet]' "
    "(the constraints keep the CPU torch; without them pip fetches a multi-GB CUDA build)"
)
#: How NaturalImage2DIO describes a 2D image: a slice of spacing 999 on top of 1×1 pixels.
NATURAL_IMAGE_SPACING = [999.0, 1.0, 1.0]


@contextlib.contextmanager
def _quiet() -> Any:
    """nnU-Net prints notes on import and set-up (unset paths, CPU devices) to stdout, which the
    container's stdout and eyegc's one-line messages must not carry."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def require_nnunet() -> ModuleType:
    """Import nnunetv2, or raise one clear :class:`EyegcError` naming the extra."""
    try:
        with _quiet():
            import nnunetv2
            import nnunetv2.inference.predict_from_raw_data  # what the predictor needs
    except ImportError:
        raise EyegcError(MISSING_NNUNET) from None
    return nnunetv2


def read_nnunet_checkpoint(path: Path) -> dict[str, Any]:
    """An nnU-Net ``checkpoint_*.pth``, read with torch's safe unpickler (numpy scalars and dtypes
    allowed, as its training log holds them; nothing that can run code).

    Raises:
        BundleError: not a readable nnU-Net checkpoint.
    """
    scalar = np._core.multiarray.scalar
    # numpy 1.x pickled its scalars as numpy.core.multiarray.scalar: most nnU-Net models were saved so.
    allowed = [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype]
    allowed += [type(np.dtype(t)) for t in ("f2", "f4", "f8", "i4", "i8", "u1", "b1")]
    try:
        with torch.serialization.safe_globals(allowed), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's note on a foreign pickle protocol: the error below says enough
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise BundleError(
            f"{path} is not a readable nnU-Net checkpoint, or holds objects that could run code when loaded "
            f"({_first_line(exc)}); use the checkpoint nnU-Net wrote, as it wrote it"
        ) from None
    if not isinstance(checkpoint, dict):
        raise BundleError(f"{path} is not an nnU-Net v2 checkpoint (not a dictionary)")
    missing = {"network_weights", "trainer_name", "init_args"} - set(checkpoint)
    if missing:
        raise BundleError(f"{path} is not an nnU-Net v2 checkpoint: it lacks {', '.join(sorted(missing))}")
    weights, init_args = checkpoint["network_weights"], checkpoint["init_args"]
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise BundleError(f"{path}: network_weights is not a state dict of tensors; the checkpoint is damaged")
    if not isinstance(init_args, dict) or not isinstance(init_args.get("configuration"), str):
        raise BundleError(f"{path}: init_args.configuration is missing; the checkpoint is damaged")
    return checkpoint


def _first_line(exc: BaseException) -> str:
    """An exception's first line without terminal colour codes, at most 200 characters."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


#: What the plans may name for nnU-Net to import: its network classes, and torch's layers.
_NETWORK_CLASS = re.compile(r"dynamic_network_architectures\.architectures(\.[A-Za-z_][A-Za-z0-9_]*)+")
_LAYER_CLASS = re.compile(r"torch\.nn(\.[A-Za-z_][A-Za-z0-9_]*)+")


def check_plans(plans: Any, dataset_json: Any, configuration: str, source: str) -> None:
    """Refuse plans that would make nnU-Net import anything but its own networks and torch's layers
    (it imports what they name, with ``pydoc.locate``), or that lack what prediction reads.

    Raises:
        BundleError: naming ``source`` and what is wrong.
    """
    require_nnunet()
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    if not isinstance(plans, dict) or not isinstance(dataset_json, dict):
        raise BundleError(f"{source}: plans.json and dataset.json must each be a JSON object")
    try:
        config = PlansManager(plans).get_configuration(configuration)
        network_class = config.network_arch_class_name
        kwargs = config.network_arch_init_kwargs
        imported = [kwargs[k] for k in config.network_arch_init_kwargs_req_import]
    except Exception as exc:  # missing keys or configurations in a hand-edited file
        raise BundleError(
            f"{source}: the plans have no usable {configuration!r} configuration ({_first_line(exc)})"
        ) from None
    if not isinstance(network_class, str) or not _NETWORK_CLASS.fullmatch(network_class):
        raise BundleError(
            f"{source}: network class {network_class!r} is not one of nnU-Net's (dynamic_network_architectures)"
        )
    for name in imported:
        if name is not None and (not isinstance(name, str) or not _LAYER_CLASS.fullmatch(name)):
            raise BundleError(f"{source}: the plans name {name!r} for import; only torch.nn layers are allowed")


def fold_file_contents(
    checkpoint: dict[str, Any], plans: dict[str, Any], dataset_json: dict[str, Any]
) -> dict[str, Any]:
    """What ``fold_<k>/nnunet_fold.pt`` holds: the weights of ``checkpoint`` and, as JSON text, the
    plans and dataset description it was trained with."""
    axes = checkpoint.get("inference_allowed_mirroring_axes")
    return {
        "format": FOLD_FORMAT,
        "network_weights": {k: v.detach().clone() for k, v in checkpoint["network_weights"].items()},
        "trainer_name": str(checkpoint["trainer_name"]),
        "configuration": str(checkpoint["init_args"]["configuration"]),
        "plans": json.dumps(plans),
        "dataset_json": json.dumps(dataset_json),
        "mirror_axes": [int(a) for a in axes] if axes is not None else None,
    }


class NnunetNetwork(nn.Module):
    """One fold: nnU-Net's network (weights loaded) and the plans it predicts with."""

    def __init__(self, network: nn.Module, contents: dict[str, Any]) -> None:
        super().__init__()
        self.network = network
        self.plans: dict[str, Any] = json.loads(contents["plans"])
        self.dataset_json: dict[str, Any] = json.loads(contents["dataset_json"])
        self.configuration: str = contents["configuration"]
        self.trainer_name: str = contents["trainer_name"]
        axes = contents.get("mirror_axes")
        self.mirror_axes: tuple[int, ...] | None = tuple(axes) if axes is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


def build_nnunet_network(plans: dict[str, Any], dataset_json: dict[str, Any], configuration: str) -> nn.Module:
    """The untrained network the plans describe (nnU-Net's ``get_network_from_plans``, no deep supervision)."""
    require_nnunet()
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(plans)
    config = manager.get_configuration(configuration)
    return get_network_from_plans(
        config.network_arch_class_name,
        config.network_arch_init_kwargs,
        config.network_arch_init_kwargs_req_import,
        determine_num_input_channels(manager, config, dataset_json),
        manager.get_label_manager(dataset_json).num_segmentation_heads,
        allow_init=True,
        deep_supervision=False,
    )


def load_nnunet_fold(weights: Path) -> NnunetNetwork:
    """``fold_<k>/nnunet_fold.pt`` as a network on the CPU in eval mode.

    Raises:
        BundleError: unreadable, not an eyegc nnU-Net fold, or weights that do not fit its plans.
    """
    try:
        contents = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BundleError(f"{weights} is not a readable nnU-Net fold ({type(exc).__name__})") from None
    if not isinstance(contents, dict) or contents.get("format") != FOLD_FORMAT:
        raise BundleError(f"{weights} is not an eyegc nnU-Net fold ({FOLD_FORMAT}); import the model again")
    try:
        plans, dataset_json = json.loads(contents["plans"]), json.loads(contents["dataset_json"])
    except (KeyError, TypeError, json.JSONDecodeError):
        raise BundleError(f"{weights}: its plans or dataset description is missing or damaged") from None
    check_plans(plans, dataset_json, str(contents.get("configuration")), str(weights))
    try:
        network = build_nnunet_network(plans, dataset_json, contents["configuration"])
        network.load_state_dict(contents["network_weights"])
    except EyegcError:
        raise
    except Exception as exc:
        raise BundleError(
            f"{weights}: the weights do not fit the network the plans describe ({_first_line(exc)}); a trainer "
            "that builds its own network is not supported: eyegc builds nnU-Net's from the plans"
        ) from None
    return NnunetNetwork(network, contents).eval()


class NnunetPredictor:
    """``(C, H, W)`` image -> eyegc's ``(classes, H, W)`` probabilities through nnU-Net's predictor,
    its folds' logits averaged by nnU-Net.

    Args:
        plugin: the task.
        folds: the bundle's folds (one set of plans: the first fold's).
        scale: the working scale the training data was exported at.
        mirroring: nnU-Net's mirroring over the axes its training allowed (its TTA).
        device: where the network runs.
    """

    def __init__(
        self, plugin: TaskPlugin, folds: Sequence[NnunetNetwork], scale: float, mirroring: bool, device: torch.device
    ) -> None:
        require_nnunet()
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        first = folds[0]
        manager = PlansManager(first.plans)
        with _quiet():
            self.predictor = nnUNetPredictor(
                tile_step_size=0.5,
                use_gaussian=True,
                use_mirroring=mirroring and bool(first.mirror_axes),
                perform_everything_on_device=device.type == "cuda",
                device=device,
                allow_tqdm=False,
            )
        # nnU-Net loads each fold's weights into this one network in turn: it gets a copy, and each
        # fold's weights are cloned, else the first fold's tensors (the network's own) would be
        # overwritten by the last fold's and every image after the first predicted with that fold twice.
        network = copy.deepcopy(first.network).to(device).eval()
        self.predictor.manual_initialization(
            network,
            manager,
            manager.get_configuration(first.configuration),
            [{k: v.detach().clone().to(device) for k, v in f.network.state_dict().items()} for f in folds],
            first.dataset_json,
            first.trainer_name,
            first.mirror_axes,
        )
        self.plugin = plugin
        self.scale = scale

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Probabilities at the image's own size, float32."""
        array = nnunet_image(image, self.scale).astype(np.float32)[:, None]
        with _quiet():
            _, probabilities = self.predictor.predict_single_npy_array(
                array, {"spacing": NATURAL_IMAGE_SPACING}, None, None, True
            )
        probs = class_probabilities(self.plugin, np.asarray(probabilities, dtype=np.float32)[:, 0])
        return resize_probabilities(torch.from_numpy(np.ascontiguousarray(probs)), tuple(image.shape[-2:])).numpy()
