"""segmentation_models_pytorch (smp) architectures and encoders as eyegc networks (``--model smp:UnetPlusPlus``).

smp is an optional extra (``pip install -c constraints.txt 'eyegc[smp]'``), imported when an smp
network is first built. Its encoders are built without weights: ``encoder_weights`` other than
``None`` is refused, because eyegc never downloads; ``--pretrained PATH`` loads a state dict of the
whole network or of its encoder alone (:func:`eyegc.common.networks.load_pretrained`).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from types import ModuleType
from typing import Any

import torch
from eyegc.common.errors import EyegcError
from torch import nn

__all__ = [
    "SMP_ARCHITECTURES",
    "SMP_EXTRA",
    "SMP_FIXED_ARGUMENTS",
    "SMP_PREFIX",
    "build_smp_network",
    "import_smp",
    "smp_arguments",
]

#: the registry names of smp networks start with this.
SMP_PREFIX = "smp:"
#: the optional dependency group an smp network needs (the image gets it too).
SMP_EXTRA = "smp"
#: smp's 2D segmentation architectures (smp 0.5 and 0.6; DPT needs a ViT encoder from timm's hub and is left out).
SMP_ARCHITECTURES: tuple[str, ...] = (
    "Unet",
    "UnetPlusPlus",
    "MAnet",
    "Linknet",
    "FPN",
    "PSPNet",
    "DeepLabV3",
    "DeepLabV3Plus",
    "PAN",
    "UPerNet",
    "Segformer",
)
#: constructor arguments eyegc sets itself: the channels, logits out (no activation), one output (no aux head).
SMP_FIXED_ARGUMENTS = frozenset({"in_channels", "classes", "activation", "aux_params"})
MISSING_SMP = "segmentation_models_pytorch is not installed: pip install -c constraints.txt 'eyegc[smp]'"

#: kept alive: torch drops an operator definition when its Library object is collected.
_OPERATOR_LIBRARIES: list[torch.library.Library] = []


def _torchvision_without_its_operators() -> None:
    """Let torchvision's Python models import when its compiled operators cannot load.

    PyPI's torchvision wheels are linked against CUDA torch; beside a CPU torch their operator
    library does not load, and ``import torchvision`` then fails registering a fake kernel for
    ``torchvision::nms`` (and ``qnms``), the two it registers unconditionally. Defining those two
    schemas (with no kernel) lets it import; smp uses torchvision's model classes only, never its
    detection operators, which would then raise "no kernel" if called. Nothing is changed where
    torchvision imports by itself.
    """
    try:
        importlib.import_module("torchvision")
        return
    except ModuleNotFoundError as error:  # torchvision, or a module it needs
        raise EyegcError(f"{MISSING_SMP} (missing: {error.name})") from None
    except RuntimeError as error:
        if "torchvision::nms" not in str(error):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    library = torch.library.Library("torchvision", "DEF")
    for operator in ("nms", "qnms"):
        library.define(f"{operator}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _OPERATOR_LIBRARIES.append(library)
    importlib.import_module("torchvision")


def import_smp() -> ModuleType:
    """segmentation_models_pytorch, importable beside a CPU torch.

    Raises:
        EyegcError: it is not installed.
    """
    if "segmentation_models_pytorch" in sys.modules:
        return sys.modules["segmentation_models_pytorch"]
    if importlib.util.find_spec("segmentation_models_pytorch") is None:
        raise EyegcError(MISSING_SMP)
    _torchvision_without_its_operators()
    return importlib.import_module("segmentation_models_pytorch")


def _architecture(name: str) -> type[nn.Module]:
    return getattr(import_smp(), name)


def smp_arguments(architecture: str) -> list[str]:
    """The ``--network-kwargs`` names an smp architecture takes (those eyegc sets itself left out)."""
    parameters = inspect.signature(_architecture(architecture)).parameters.values()
    names = {p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return sorted(names - SMP_FIXED_ARGUMENTS)


def build_smp_network(architecture: str, in_channels: int, out_channels: int, **kwargs: Any) -> nn.Module:
    """An smp network returning logits, with a randomly initialised encoder.

    Raises:
        EyegcError: ``encoder_weights`` names weights to download.
    """
    weights = kwargs.pop("encoder_weights", None)
    if weights is not None:
        raise EyegcError(
            f"smp:{architecture} never downloads encoder weights ({weights!r}): drop encoder_weights and pass "
            "--pretrained PATH with a state dict of the network or of its encoder"
        )
    cls = _architecture(architecture)
    return cls(in_channels=in_channels, classes=out_channels, encoder_weights=None, activation=None, **kwargs)
