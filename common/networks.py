"""2D networks from MONAI and segmentation_models_pytorch, by name, rebuilt from a bundle's config."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from eyegc.common.errors import EyegcError
from eyegc.common.registry import look_up_option
from eyegc.common.smp_networks import SMP_ARCHITECTURES, SMP_PREFIX, build_smp_network, smp_arguments
from eyegc.common.super_resolution import SuperResolutionAided
from monai.networks.nets import AttentionUnet, BasicUNetPlusPlus, DenseNet, DenseNet121, FlexibleUNet, ResNet, UNet
from torch import nn

__all__ = ["CLASSIFIERS", "NETWORKS", "build_network", "check_network_kwargs", "load_pretrained", "network_arguments"]


class FirstOutput(nn.Module):
    """Return a tensor from networks that return a list (UNet++ deep supervision heads)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out[0] if isinstance(out, (list, tuple)) else out


def _unet(in_channels: int, out_channels: int, **kw: Any) -> nn.Module:
    kw = {"channels": (16, 32, 64, 128, 256), "strides": (2, 2, 2, 2), "num_res_units": 2, **kw}
    kw["channels"], kw["strides"] = tuple(kw["channels"]), tuple(kw["strides"])
    return UNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels, **kw)


def _unetpp(in_channels: int, out_channels: int, **kw: Any) -> nn.Module:
    kw = {"features": (16, 16, 32, 64, 128, 16), **kw}
    kw["features"] = tuple(kw["features"])
    return BasicUNetPlusPlus(spatial_dims=2, in_channels=in_channels, out_channels=out_channels, **kw)


def _attention_unet(in_channels: int, out_channels: int, **kw: Any) -> nn.Module:
    kw = {"channels": (16, 32, 64, 128, 256), "strides": (2, 2, 2, 2), **kw}
    kw["channels"], kw["strides"] = tuple(kw["channels"]), tuple(kw["strides"])
    return AttentionUnet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels, **kw)


def _flexible_unet(in_channels: int, out_channels: int, **kw: Any) -> nn.Module:
    if kw.pop("pretrained", False):
        raise EyegcError("FlexibleUNet never downloads weights: pass --pretrained PATH with a state dict file instead")
    kw = {"backbone": "resnet18", **kw}
    return FlexibleUNet(in_channels=in_channels, out_channels=out_channels, spatial_dims=2, pretrained=False, **kw)


def _resnet(in_channels: int, out_channels: int, **kw: Any) -> nn.Module:
    # MONAI's ResNet: "depth" 10/18/34/50 picks the block and layer counts of the torchvision family.
    depth = int(kw.pop("depth", 18))
    layouts = {10: ("basic", (1, 1, 1, 1)), 18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3))}
    layouts[50] = ("bottleneck", (3, 4, 6, 3))
    if depth not in layouts:
        raise EyegcError(f"ResNet depth {depth} is not one of {sorted(layouts)}")
    block, layers = layouts[depth]
    kw = {"block_inplanes": (64, 128, 256, 512), **kw}
    kw["block_inplanes"] = list(kw["block_inplanes"])
    return ResNet(
        block=block,
        layers=list(layers),
        spatial_dims=2,
        n_input_channels=in_channels,
        num_classes=out_channels,
        **kw,
    )


def _densenet121(in_channels: int, out_channels: int, **kw: Any) -> nn.Module:
    if kw.pop("pretrained", False):
        raise EyegcError("DenseNet121 never downloads weights: pass --pretrained PATH with a state dict file instead")
    return DenseNet121(spatial_dims=2, in_channels=in_channels, out_channels=out_channels, **kw)


#: network name -> builder(in_channels, out_channels, **kwargs). All 2D: MONAI's, then smp's (``smp:<architecture>``,
#: the optional ``smp`` extra).
NETWORKS: dict[str, Callable[..., nn.Module]] = {
    "UNet": _unet,
    "BasicUNetPlusPlus": _unetpp,
    "AttentionUnet": _attention_unet,
    "FlexibleUNet": _flexible_unet,
    "ResNet": _resnet,
    "DenseNet121": _densenet121,
    **{f"{SMP_PREFIX}{name}": partial(build_smp_network, name) for name in SMP_ARCHITECTURES},
}
#: the networks that map an image to one logits vector (classification tasks use only these).
CLASSIFIERS: frozenset[str] = frozenset({"ResNet", "DenseNet121"})

_IO = frozenset({"spatial_dims", "in_channels", "out_channels"})
#: network name -> (the MONAI classes whose arguments its builder passes on, the arguments the builder
#: sets itself from eyegc's settings, the builder's own arguments). DenseNet121 passes **kwargs to DenseNet.
_ARGUMENTS: dict[str, tuple[tuple[type, ...], frozenset[str], frozenset[str]]] = {
    "UNet": ((UNet,), _IO, frozenset()),
    "BasicUNetPlusPlus": ((BasicUNetPlusPlus,), _IO, frozenset()),
    "AttentionUnet": ((AttentionUnet,), _IO, frozenset()),
    "FlexibleUNet": ((FlexibleUNet,), _IO, frozenset()),
    "ResNet": (
        (ResNet,),
        frozenset({"block", "layers", "spatial_dims", "n_input_channels", "num_classes"}),
        frozenset({"depth"}),
    ),
    "DenseNet121": ((DenseNet121, DenseNet), _IO | {"progress"}, frozenset()),
}


def network_arguments(name: str) -> list[str]:
    """The ``--network-kwargs`` names a registered network accepts, read from its MONAI constructor.

    The arguments its builder sets itself (spatial dimensions, input and output channels) are left
    out; the builder's own (ResNet ``depth``) are added.
    """
    look_up_option(name, NETWORKS, what="network")
    if name.startswith(SMP_PREFIX):
        return smp_arguments(name[len(SMP_PREFIX) :])
    classes, fixed, own = _ARGUMENTS[name]
    names = set(own)
    for cls in classes:
        parameters = inspect.signature(cls).parameters.values()
        names |= {p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return sorted(names - fixed)


def check_network_kwargs(name: str, kwargs: Mapping[str, Any]) -> None:
    """Refuse argument names that the network does not take, before anything is built.

    Raises:
        EyegcError: naming the unknown argument(s), the network and the names it accepts.
    """
    accepted = network_arguments(name)
    unknown = sorted(str(k) for k in kwargs if k not in accepted)
    if unknown:
        raise EyegcError(
            f"network {name} takes no argument {', '.join(map(repr, unknown))}; it accepts {', '.join(accepted)}"
        )


def build_network(
    name: str,
    in_channels: int,
    out_channels: int,
    kwargs: Mapping[str, Any] | None = None,
    super_resolution: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build a registered network; it returns one logits tensor, ``(B, C, H, W)`` or ``(B, C)`` (classifiers).

    ``super_resolution`` (:class:`~eyegc.common.bundle_config.SuperResolution`'s fields) wraps it in
    :class:`~eyegc.common.super_resolution.SuperResolutionAided`, which in ``train()`` mode returns
    an :class:`~eyegc.common.super_resolution.AuxiliaryOutput`.
    """
    builder = look_up_option(name, NETWORKS, what="network")
    kwargs = dict(kwargs or {})
    check_network_kwargs(name, kwargs)
    try:
        if super_resolution:
            sr = dict(super_resolution)
            core = FirstOutput(builder(in_channels, int(sr["features"]), **kwargs))
            return SuperResolutionAided(core, in_channels, out_channels, **sr)
        return FirstOutput(builder(in_channels, out_channels, **kwargs))
    except EyegcError:
        raise
    except Exception as exc:  # a value MONAI cannot use ({"channels": "x"}): say which network and arguments
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        reason = reason if len(reason) <= 160 else reason[:157] + "..."
        raise EyegcError(f"network {name} cannot be built with arguments {kwargs}: {reason}") from None


#: where a state dict of part of a network may belong (:func:`load_pretrained`).
_PRETRAINED_PREFIXES = ("", "encoder.", "core.net.", "core.net.encoder.")


def load_pretrained(network: nn.Module, path: Path) -> tuple[list[str], list[str]]:
    """Load a user-supplied state dict (never downloaded) into ``network``; shapes that differ are skipped.

    Returns:
        The missing and the unexpected/skipped keys, for the user to check.
    """
    path = Path(path)
    if not path.is_file():
        raise EyegcError(f"pretrained weights not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a whole pickled model, or not a torch file at all
        raise EyegcError(
            f"cannot read a state dict from {path} ({str(exc).splitlines()[0][:100]}); "
            "save the weights with torch.save(model.state_dict(), PATH)"
        ) from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise EyegcError(f"{path} holds a {type(state).__name__}, not a state dict; save model.state_dict()")
    target = network.net if isinstance(network, FirstOutput) else network
    own = target.state_dict()
    # The whole network's weights, or a part's under its name: an smp encoder's own file lacks "encoder.",
    # a super-resolution-aided network's core is "core.net.". The reading that fits most tensors wins.
    given, usable, skipped = dict(state), {}, sorted(state)
    # eyegc's own model.pt holds the wrapper's names ("net."): read it as the network's too.
    readings = [given, {k[len("net.") :]: v for k, v in given.items() if k.startswith("net.")}]
    for reading in readings:
        for prefix in _PRETRAINED_PREFIXES:
            fitting = {f"{prefix}{k}": v for k, v in reading.items()}
            fitting = {k: v for k, v in fitting.items() if k in own and own[k].shape == v.shape}
            if len(fitting) > len(usable):
                usable = fitting
                skipped = sorted(k for k in reading if f"{prefix}{k}" not in fitting)
    missing, _ = target.load_state_dict(usable, strict=False)
    if not usable:
        raise EyegcError(f"no tensor in {path} matches the network's parameter names and shapes")
    return list(missing), skipped
