"""The GOALS plugin's own verb, ``eyegc thickness-model fit|predict``: glaucoma from RNFL/GCIPL thickness.

It reaches the ``eyegc`` command line through the ``eyegc.cli`` entry-point group (see
:func:`eyegc.common.registry.plugin_verbs`), so the core CLI knows nothing of GOALS.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from eyegc.challenges.goals.options import THICKNESS_OPTIONS
from eyegc.common.errors import EyegcError
from eyegc.common.outputs import OutputKind, check_outputs

__all__ = ["THICKNESS_OPTIONS", "add_thickness_model_verb"]


def _cmd_thickness_model(args: argparse.Namespace) -> int:
    # Loaded when the verb runs, not when any `eyegc` command builds its parser (it pulls in torch).
    from eyegc.challenges.goals import thickness_model

    layer_models = [("--layers-model", m) for m in args.layers_model or []]
    inputs = [("--data", args.data), ("--model", args.model), ("--images", args.images), *layer_models]
    check_outputs([("--out", args.out, OutputKind.FOLDER)], inputs)
    if args.action == "fit":
        if args.data is None:
            raise EyegcError("thickness-model fit needs --data (the GOALS root)")
        summary = thickness_model.fit_thickness_model(
            args.layers_model or [],
            args.data,
            args.out,
            source=args.source,
            sectors=args.sectors,
            C=args.C,
            folds=args.folds,
            seed=args.seed,
            tta=args.tta or "none",
            device=args.device,
            overwrite=args.overwrite,
        )
        print(thickness_model.describe_thickness_model(summary))
        print(f"thickness model written to {args.out}")
        return 0
    if args.model is None or args.images is None:
        raise EyegcError("thickness-model predict needs --model MODEL and --images DIR")
    summary = thickness_model.predict_thickness_model(
        args.model,
        args.images,
        args.out,
        tta=args.tta,
        device=args.device,
        layers_models=args.layers_model,
        overwrite=args.overwrite,
    )
    print(f"{summary['cases']} case(s) predicted into {args.out} ({summary['positives']} glaucoma)")
    return 0


def add_thickness_model_verb(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    """``thickness-model fit|predict`` (GOALS glaucoma from layer thickness)."""
    p = add_parser(
        "thickness-model",
        help="GOALS glaucoma: logistic regression on RNFL/GCIPL thickness profiles from a goals-layers model",
    )
    p.add_argument("action", choices=["fit", "predict"])
    p.add_argument("--data", type=Path, help="fit: GOALS data root (Train/ with the label sheet)")
    p.add_argument("--out", type=Path, required=True, help="fit: the model folder; predict: the prediction folder")
    p.add_argument("--layers-model", type=Path, action="append", help="goals-layers bundle (repeatable)")
    p.add_argument("--source", choices=["predicted", "truth"], default="predicted", help="fit: layer maps to use")
    p.add_argument(
        "--sectors", type=THICKNESS_OPTIONS["sectors"].argparse_type(), default=12, help="fit: column sectors per layer"
    )
    p.add_argument("--C", type=THICKNESS_OPTIONS["C"].argparse_type(), default=1.0, help="fit: inverse regularisation")
    p.add_argument("--folds", type=THICKNESS_OPTIONS["folds"].argparse_type(), default=5, help="fit: CV folds")
    p.add_argument("--seed", type=THICKNESS_OPTIONS["seed"].argparse_type(), default=0)
    p.add_argument("--model", type=Path, help="predict: the fitted model folder")
    p.add_argument("--images", type=Path, help="predict: a folder of B-scans")
    p.add_argument("--tta", help="TTA of the layer model (fit default none; predict default: as fitted)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_thickness_model)
