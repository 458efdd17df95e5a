"""The ``eyegc`` command line: one thin verb per pipeline stage over importable functions."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from eyegc.common.errors import EyegcError, user_error_message
from eyegc.common.interrupts import Terminated, exit_status, stop_signals_unwind
from eyegc.common.options import (
    AUGMENTATIONS,
    DEMO_OPTIONS,
    GC_TRY_OPTIONS,
    LAUNCH_OPTIONS,
    REPORT_OPTIONS,
    SAMPLE_DATA_OPTIONS,
    TRAIN_OPTIONS,
)
from eyegc.common.outputs import OutputKind, check_output_path, check_outputs
from eyegc.common.ranks import LaunchOptions, Ranks, ranks_from_environment
from eyegc.common.registry import available_backends, plugin_verbs

__all__ = ["build_parser", "main"]


def _json_object(text: str, option: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EyegcError(f"{option} is not valid JSON ({exc.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise EyegcError(f"{option} must be a JSON object like '{{\"channels\": [16, 32, 64]}}'")
    return value


def _cmd_list(args: argparse.Namespace) -> int:
    from eyegc.common.registry import available_tasks, get_task

    names = available_tasks()
    width = max(map(len, names), default=0)
    for name in names:
        plugin = get_task(name)
        classes = ", ".join(c.key for c in plugin.classes)
        tta = ", ".join(plugin.allowed_tta)
        print(f"{plugin.challenge:<10} {name:<{width}} {plugin.title}  [classes: {classes}; TTA: {tta}]")
    return 0


def _cmd_sample_data(args: argparse.Namespace) -> int:
    from eyegc.common.registry import get_task
    from eyegc.common.sample_data import write_sample_data

    out = write_sample_data(get_task(args.task), args.out, args.cases, args.test_cases, args.seed, args.overwrite)
    print(f"sample data for {args.task} written to {out}")
    return 0


def _train_config(args: argparse.Namespace) -> Any:
    from eyegc.common.training import TrainConfig

    return TrainConfig(
        model=args.model,
        network_kwargs=_json_object(args.network_kwargs, "--network-kwargs") if args.network_kwargs else None,
        super_resolution=args.super_resolution,
        sr_weights=args.sr_weights,
        folds=args.folds,
        fold=args.fold,
        epochs=args.epochs,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        working_scale=args.working_scale,
        loss=args.loss,
        class_weights=args.class_weights,
        rmi_weight=args.rmi_weight,
        learning_rate=args.lr,
        patches_per_image=args.patches_per_image,
        pretrained=str(args.pretrained) if args.pretrained else None,
        device=args.device,
        seed=args.seed,
        tune=not args.no_tune,
        crf=args.crf,
        backend=args.backend,
        clahe=args.clahe,
        clahe_clip=args.clahe_clip,
        fov_mask=args.fov_mask,
        validate_every=args.validate_every,
        jobs=args.jobs,
        allow_missing_class=args.allow_missing_class,
        augmentation=args.augmentation,
        extra={"input_size": args.input_size} if args.input_size else {},
    )


#: ``eyegc train``'s options that go to torchrun, not to each training process.
_LAUNCH_FLAGS = tuple(f"--{field.name.replace('_', '-')}" for field in dataclasses.fields(LaunchOptions))


def _launch_flag(token: str) -> str | None:
    """The torchrun option ``token`` names, in full or abbreviated as argparse allows (``--nproc 2``)."""
    name = token.partition("=")[0]
    if len(name) < 3 or not name.startswith("--"):
        return None
    matches = [flag for flag in _LAUNCH_FLAGS if flag.startswith(name)]
    return matches[0] if len(matches) == 1 else None


def _without_launch_options(argv: Sequence[str]) -> list[str]:
    """``argv`` less the torchrun options (each process runs the rest)."""
    kept: list[str] = []
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif _launch_flag(token) is None:
            kept.append(token)
        else:
            skip = "=" not in token  # "--nnodes 2" takes the next token, "--nnodes=2" does not
    return kept


def _interrupted_hint(args: argparse.Namespace) -> str:
    from eyegc.common.training import has_checkpoint

    # train() deletes a fresh run stopped before its first checkpoint: only a checkpoint can be resumed.
    if has_checkpoint(args.out):
        return f"continue with: eyegc train {args.task} --data {args.data} --out {args.out} --resume"
    return "nothing was written before the first checkpoint; run the same command again to start over"


def _check_launch(options: LaunchOptions, device: str) -> None:
    """What torchrun would hang on or fail at with a traceback, as one line."""
    import torch

    if options.node_rank >= options.nnodes:
        raise EyegcError(f"--node-rank {options.node_rank} must be below --nnodes {options.nnodes} (0 to nnodes - 1)")
    if options.nnodes > 1 and options.master_addr in ("127.0.0.1", "localhost"):
        raise EyegcError("with --nnodes above 1, give --master-addr: the address of node 0 that every node reaches")
    on_gpus = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if on_gpus and options.nproc_per_node > torch.cuda.device_count():
        raise EyegcError(
            f"--nproc-per-node {options.nproc_per_node} exceeds the {torch.cuda.device_count()} GPU(s) here: "
            "one process per GPU"
        )


def _launch_training(args: argparse.Namespace, options: LaunchOptions) -> int:
    """``eyegc train`` once per process under torchrun, after the checks a bad request fails."""
    from eyegc.common.distributed import TrainingProcessFailed, launch
    from eyegc.common.registry import get_task
    from eyegc.common.training import check_train_request

    _check_launch(options, args.device)
    world = options.nproc_per_node * options.nnodes
    ranks = Ranks(rank=options.node_rank * options.nproc_per_node, world=world)
    check_train_request(get_task(args.task), args.out, args.data, _train_config(args), args.resume, ranks)
    try:
        launch(options, _without_launch_options(args.argv))
    except TrainingProcessFailed as failed:
        raise EyegcError(f"{failed}; {_interrupted_hint(args)}") from None
    except KeyboardInterrupt as interrupt:
        print(f"\ninterrupted; {_interrupted_hint(args)}", file=sys.stderr)
        return exit_status(interrupt)
    if options.node_rank == 0:
        _print_run_summary(args.out)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from eyegc.common.registry import get_task
    from eyegc.common.training import train

    options = LaunchOptions(
        args.nproc_per_node, args.nnodes, args.node_rank, args.master_addr or "127.0.0.1", args.master_port
    )
    under_torchrun = ranks_from_environment().distributed
    if options.wanted and under_torchrun:
        raise EyegcError("this process already runs under torchrun: drop --nproc-per-node and --nnodes")
    if options.wanted:
        return _launch_training(args, options)
    try:
        run = train(get_task(args.task), args.data, args.out, _train_config(args), resume=args.resume)
    except KeyboardInterrupt as interrupt:
        print(f"\ninterrupted; {_interrupted_hint(args)}", file=sys.stderr)
        return exit_status(interrupt)
    if not under_torchrun:  # under torchrun the launching command prints it, once
        _print_run_summary(run)
    return 0


def _print_run_summary(run: Path) -> None:
    from eyegc.common.bundle import read_config
    from eyegc.common.bundle_config import DEFAULT_THRESHOLD

    config = read_config(run)
    metric = config.training.metric
    for fold, record in config.folds.items():
        best, done, score = record.best_epoch, record.epochs_done, record.best_score
        print(f"fold {fold}: best epoch {best}/{done}, validation {metric} {score:.4f}")
    cv = config.cross_validation
    if cv:
        default = cv.default_postprocessing["leaderboard"]
        tuned = cv.tuned_postprocessing["leaderboard"]
        print(f"cross-validation ({cv.cases} cases): threshold {DEFAULT_THRESHOLD} {default} -> tuned {tuned}")
        post = config.postprocessing
        sizes = post.min_component_size or None  # segmentation only
        print(f"thresholds {post.thresholds}" + (f", min component size {sizes}" if sizes is not None else ""))
        if post.grade_offsets:
            print(f"grade offsets (added to the log-probabilities) {post.grade_offsets}")
    print(f"model bundle: {run}")


def _cmd_tune(args: argparse.Namespace) -> int:
    from eyegc.common.registry import get_task
    from eyegc.common.tuning import tune

    tune(get_task(args.task), args.model, args.data, grade_offsets=args.grade_offsets, crf=args.crf)
    _print_run_summary(args.model)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from eyegc.common.inference import predict_folder
    from eyegc.common.registry import get_task

    summary = predict_folder(
        get_task(args.task),
        args.model,
        args.images,
        args.out,
        args.tta,
        args.save_probabilities,
        args.device,
        args.overwrite,
    )
    print(
        f"{summary['cases']} cases predicted into {args.out} "
        f"({summary['members']} ensemble member(s), TTA {'+'.join(summary['tta'])}, "
        f"{summary['seconds_per_case']:.2f} s/case)"
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from eyegc.common.evaluation import evaluate_predictions, format_leaderboard, write_per_case_csv, write_result_json
    from eyegc.common.registry import get_task

    check_outputs(
        [("--json", args.json, OutputKind.FILE), ("--csv", args.csv, OutputKind.FILE)],
        [("--pred", args.pred), ("--gt", args.gt)],
    )
    result = evaluate_predictions(
        get_task(args.task), args.pred, args.gt, args.split, allow_missing_class=args.allow_missing_class
    )
    print(format_leaderboard(result))
    if args.json:
        write_result_json(result, args.json)
    if args.csv:
        write_per_case_csv(result.per_case, args.csv)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from eyegc.common.registry import get_task
    from eyegc.common.report import REPORT_FILES, write_report

    out = write_report(
        get_task(args.task),
        args.pred,
        args.gt,
        args.out,
        models=args.model or (),
        split=args.split,
        shown=args.cases,
        pdf=args.pdf,
        allow_missing_class=args.allow_missing_class,
        overwrite=args.overwrite,
    )
    print(f"report written to {out / REPORT_FILES['html']}" + (f" and {out / REPORT_FILES['pdf']}" if args.pdf else ""))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from eyegc.common.serve import serve

    serve(args.model, args.host, args.port, args.device, args.max_upload_mb)
    return 0


def _cmd_submission(args: argparse.Namespace) -> int:
    from eyegc.common.registry import get_task

    options: dict[str, object] = {"overwrite": args.overwrite}
    if args.team:
        options["team"] = args.team
    for item in args.option or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise EyegcError(f"--option {item!r}: use KEY=VALUE, e.g. --option header=ImgName,GC_Pred")
        options[key.replace("-", "_")] = _option_value(value)
    # Any --option naming an existing path (layers_pred, ...) is an input; --team is a name, not a path.
    paths = [
        (f"--option {k}", Path(v))
        for k, v in options.items()
        if k != "team" and isinstance(v, str) and Path(v).exists()
    ]
    check_outputs([("--out", args.out, OutputKind.FILE)], [("--pred", args.pred), *paths])
    try:
        out = get_task(args.task).write_submission(args.pred, args.out, **options)
    except TypeError as exc:
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        if unknown is None:
            raise  # not an option's fault: a bug
        raise EyegcError(f"--option {unknown.group(1)} is not an option of {args.task} submissions") from None
    print(f"submission written to {out}")
    return 0


def _option_value(text: str) -> object:
    """``--option`` values: JSON when it parses (numbers, true/false), comma lists as tuples, else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return tuple(text.split(",")) if "," in text else text


def _cmd_demo(args: argparse.Namespace) -> int:
    from eyegc.common.demo import run_demo
    from eyegc.common.registry import get_task

    training = {"epochs": args.epochs} if args.epochs is not None else None
    out = check_output_path(args.out or Path("demo") / args.task, "--out", OutputKind.FOLDER)
    demo = run_demo(get_task(args.task), out, args.cases, args.test_cases, training, args.tta, device=args.device)
    primary = get_task(args.task).metric.primary
    print(
        f"model {primary} {demo.result.leaderboard[primary]:.4f} vs trivial predictors: "
        + ", ".join(f"{k} {v:.4f}" for k, v in demo.baselines.items())
    )
    print(f"stage seconds: {demo.seconds}")
    print(f"data {demo.data}\nmodel bundle {demo.run}\npredictions {demo.predictions}\nsubmission {demo.submission}")
    return 0


def _add_allow_missing_class(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--allow-missing-class", action="store_true", help=help_text)


def _train_type(field: str) -> Callable[[str], Any]:
    """The argparse type of a ``TrainConfig`` field's option: its rule, shared with :func:`train`."""
    return TRAIN_OPTIONS[field].argparse_type()


def _add_setup_verbs(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    """``list``, ``demo`` and ``sample-data``."""
    p = add_parser("list", help="registered challenges and their tasks")
    p.set_defaults(func=_cmd_list)

    p = add_parser("demo", help="sample data -> train -> predict -> evaluate -> submission, in a few CPU minutes")
    p.add_argument("task")
    p.add_argument("--out", type=Path, help="work folder (default ./demo/TASK); reruns reuse it")
    p.add_argument("--cases", type=DEMO_OPTIONS["cases"].argparse_type(), default=16)
    p.add_argument("--test-cases", type=DEMO_OPTIONS["test_cases"].argparse_type(), default=6)
    p.add_argument("--epochs", type=DEMO_OPTIONS["epochs"].argparse_type(), help="training epochs (default 20)")
    p.add_argument("--tta", default="flip")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_demo)

    p = add_parser("sample-data", help="a synthetic data set in the task's official layout")
    p.add_argument("task")
    p.add_argument("out", type=Path)
    p.add_argument("--cases", type=SAMPLE_DATA_OPTIONS["cases"].argparse_type(), default=24, help="training cases")
    p.add_argument(
        "--test-cases",
        type=SAMPLE_DATA_OPTIONS["test_cases"].argparse_type(),
        default=None,
        help="testing cases with ground truth (default cases//3, at least 3)",
    )
    p.add_argument("--seed", type=SAMPLE_DATA_OPTIONS["seed"].argparse_type(), default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_sample_data)


_CRF_HELP = (
    "multi-label tasks: also try a dense CRF on each class's probabilities (pip install 'eyegc[crf]'), kept per "
    "class where it raises the out-of-fold score"
)


def _add_seed_method_options(p: argparse.ArgumentParser) -> None:
    """``train``'s loss options and those of the seeds' methods: CBCE, RMI, super-resolution, dense CRF."""
    p.add_argument(
        "--loss",
        help="dice_bce (default), dice_focal, bce (multi-label), or cbce (class-balanced cross-entropy)",
    )
    p.add_argument("--class-weights", type=_train_type("class_weights"), help="one weight per class, comma-separated")
    p.add_argument(
        "--rmi-weight",
        type=_train_type("rmi_weight"),
        help="add the region mutual information loss (3x3 regions) times this weight (default 0: none; the "
        "authors' 0.5 BCE + 0.5 RMI is 1)",
    )
    p.add_argument(
        "--super-resolution",
        type=_train_type("super_resolution"),
        metavar="FACTOR",
        help="super-resolution-aided segmentation: the network runs at 1/FACTOR of the working scale, an SR "
        "branch (training only) reconstructs the input (2-4)",
    )
    p.add_argument(
        "--sr-weights",
        type=_train_type("sr_weights"),
        metavar="SR,FA",
        help="--super-resolution's reconstruction and feature-affinity loss weights (default 0.1,1.0)",
    )
    p.add_argument("--crf", action="store_true", help=_CRF_HELP)


def _add_train_verb(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    """``train`` and its options, typed by the rules of :data:`TRAIN_OPTIONS`."""
    p = add_parser("train", help="k-fold training on the official layout; writes a model bundle")
    p.add_argument("task")
    p.add_argument("--data", type=Path, required=True, help="data root in the official layout")
    p.add_argument("--out", type=Path, required=True, help="run folder (the model bundle)")
    p.add_argument(
        "--model",
        help="network: UNet, BasicUNetPlusPlus, AttentionUnet, FlexibleUNet, or smp:<architecture> such as "
        "smp:UnetPlusPlus (pip install 'eyegc[smp]') (default: the task's)",
    )
    p.add_argument("--network-kwargs", help="JSON of network arguments, e.g. '{\"channels\": [8, 16, 32, 64]}'")
    p.add_argument("--folds", type=_train_type("folds"), help="cross-validation folds (default: the task's, 5)")
    p.add_argument("--fold", type=_train_type("fold"), default="all", help="fold index to train, or 'all' (default)")
    p.add_argument("--epochs", type=_train_type("epochs"))
    p.add_argument("--batch-size", type=_train_type("batch_size"))
    p.add_argument(
        "--patch-size",
        type=_train_type("patch_size"),
        help="square training/inference patch at working resolution; 0 = whole image",
    )
    p.add_argument(
        "--working-scale", type=_train_type("working_scale"), help="resize factor before the network (DRAC22: 0.5)"
    )
    p.add_argument("--lr", type=_train_type("learning_rate"), help="learning rate")
    p.add_argument("--patches-per-image", type=_train_type("patches_per_image"), help="patches per image per epoch")
    p.add_argument("--pretrained", type=Path, help="a state dict file to start from (never downloaded)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--seed", type=_train_type("seed"), default=0)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--no-tune", action="store_true", help="skip threshold tuning at the end")
    _add_seed_method_options(p)
    p.add_argument(
        "--validate-every",
        type=_train_type("validate_every"),
        help="validate every N epochs and at the last (default: the task's)",
    )
    p.add_argument(
        "--jobs",
        type=_train_type("jobs"),
        default=1,
        help="folds trained at once, one process each with threads/N torch threads (a 2-core CPU: 2, ~1.25x faster)",
    )
    p.add_argument(
        "--backend",
        default="torch",
        choices=available_backends(),
        help="classification tasks: paddle trains a PaddlePaddle ResNet (pip install '.[paddle]')",
    )
    p.add_argument("--input-size", type=_train_type("input_size"), help="classification: the H,W images are resized to")
    p.add_argument(
        "--clahe",
        choices=["none", "channels", "lab"],
        help="contrast-limited adaptive histogram equalisation: per channel, or on L*a*b* lightness (RGB)",
    )
    p.add_argument(
        "--clahe-clip", type=_train_type("clahe_clip"), help="CLAHE clip limit, scikit-image's scale (default 0.01)"
    )
    p.add_argument(
        "--fov-mask",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="RGB fundus: normalise inside the estimated field of view and zero the border",
    )
    _add_allow_missing_class(
        p,
        "a missing ground-truth class folder, or a class no training case shows, is no error: train anyway "
        "(recorded in bundle.json)",
    )
    p.add_argument(
        "--augmentation",
        choices=AUGMENTATIONS,
        help="batched: flips, rotations, elastic and intensity on whole batches on the device (default); "
        "per-sample: every transform per patch on the CPU",
    )
    _add_launch_options(p)
    p.set_defaults(func=_cmd_train)


def _add_launch_options(p: argparse.ArgumentParser) -> None:
    """torchrun's options: several processes (GPUs, nodes) train each fold with DistributedDataParallel."""
    group = p.add_argument_group("several processes (torchrun, DistributedDataParallel)")
    rule = LAUNCH_OPTIONS
    group.add_argument(
        "--nproc-per-node",
        type=rule["nproc_per_node"].argparse_type(),
        default=1,
        help="training processes on this machine, one per GPU (CPU: gloo)",
    )
    group.add_argument("--nnodes", type=rule["nnodes"].argparse_type(), default=1, help="machines (default 1)")
    group.add_argument("--node-rank", type=rule["node_rank"].argparse_type(), default=0, help="this machine's index")
    group.add_argument("--master-addr", help="address of node 0 (default 127.0.0.1)")
    group.add_argument(
        "--master-port", type=rule["master_port"].argparse_type(), default=29500, help="port on node 0 (29500)"
    )


def _add_scoring_verbs(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    """``tune``, ``predict``, ``evaluate`` and ``submission``."""
    p = add_parser("tune", help="choose per-class thresholds and minimum component sizes on out-of-fold predictions")
    p.add_argument("task")
    p.add_argument("--model", type=Path, required=True, help="run folder")
    p.add_argument("--data", type=Path, help="training data root (default: the one recorded in the run)")
    p.add_argument(
        "--grade-offsets",
        action="store_true",
        help="classification heads of 3+ grades: also tune per-grade decision offsets for the leaderboard figure",
    )
    p.add_argument("--crf", action="store_true", help=_CRF_HELP)
    p.set_defaults(func=_cmd_tune)

    p = add_parser("predict", help="predict a folder of images with TTA and fold/model ensembling")
    p.add_argument("task")
    p.add_argument("--model", type=Path, nargs="+", required=True, help="one or more model bundles")
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tta", default="flip", help="none, flip (default) or dihedral, as the task allows")
    p.add_argument("--save-probabilities", action="store_true", help="also write OUT/probabilities/<case>.npz")
    p.add_argument("--device", default="auto")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_predict)

    p = add_parser("evaluate", help="the local leaderboard, computed as the organisers do")
    p.add_argument("task")
    p.add_argument("--pred", type=Path, required=True, help="prediction folder or official submission file")
    p.add_argument("--gt", type=Path, required=True, help="data root holding the ground truth")
    p.add_argument("--split", default="test", choices=["test", "train"])
    p.add_argument("--json", type=Path)
    p.add_argument("--csv", type=Path, help="per-case values")
    _add_allow_missing_class(p, "a missing ground-truth class folder is no error: report its class as n/a")
    p.set_defaults(func=_cmd_evaluate)

    p = add_parser("report", help="error analysis: an offline HTML page (and PDF) with the worst and best cases drawn")
    p.add_argument("task")
    p.add_argument("--pred", type=Path, required=True, help="prediction folder or official submission file")
    p.add_argument("--gt", type=Path, required=True, help="data root holding the ground truth")
    p.add_argument(
        "--model", type=Path, nargs="+", help="the bundle(s) behind the prediction: curves, tuning, settings"
    )
    p.add_argument("--out", type=Path, required=True, help="a new folder for report.html, per_case.csv, ...")
    p.add_argument("--split", default="test", choices=["test", "train"])
    p.add_argument(
        "--cases", type=REPORT_OPTIONS["cases"].argparse_type(), default=4, help="worst and best cases drawn (4 each)"
    )
    p.add_argument("--pdf", action="store_true", help="also write report.pdf with the same content")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    _add_allow_missing_class(p, "a missing ground-truth class folder is no error: report its class as n/a")
    p.set_defaults(func=_cmd_report)

    p = add_parser("serve", help="a local web page: upload an image, see and download what the bundles predict")
    p.add_argument("--model", type=Path, nargs="+", required=True, help="model bundles, of one task or several")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=REPORT_OPTIONS["port"].argparse_type(), default=8000)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--max-upload-mb", type=REPORT_OPTIONS["max_upload_mb"].argparse_type(), default=64.0, help="(default 64)"
    )
    p.set_defaults(func=_cmd_serve)

    p = add_parser("submission", help="the official submission file, validated first")
    p.add_argument("task")
    p.add_argument("--pred", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--team", help="team name (DRAC22: required, names the folder inside the zip)")
    p.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="a task-specific submission option, repeatable: GOALS layers_pred=DIR, glaucoma_pred=DIR, "
        "header=ImgName,GC_Pred, glaucoma_value=probability|label; DRIVE include_masks=true; IDRiD grading "
        "columns=A,B,C",
    )
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_submission)


def _cmd_gc_check(args: argparse.Namespace) -> int:
    from eyegc.common.platform import (
        API_URL,
        algorithm_interfaces,
        compare_interfaces,
        mapping_to_check,
        platform_client,
    )

    task, interfaces, source = mapping_to_check(args.image, args.sockets, args.task)
    client = platform_client(args.api_url or API_URL, verify=not args.insecure)
    comparison = compare_interfaces(interfaces, algorithm_interfaces(client, args.algorithm))
    for problem in comparison.problems:
        print(f"mismatch: {problem}")
    if comparison.problems:
        raise EyegcError(
            f"{len(comparison.problems)} socket mismatch(es) between {source} and algorithm {args.algorithm}: "
            "map the sockets with ./submit.sh --sockets, or change the algorithm's sockets on the platform"
        )
    print(f"ok: {source} ({task}) serves algorithm {args.algorithm}'s socket set(s) {list(comparison.matched)}")
    return 0


def _cmd_gc_try(args: argparse.Namespace) -> int:
    from eyegc.common.bundle import load_bundle, read_config
    from eyegc.common.inference import Predictor, resolve_device
    from eyegc.common.platform import API_URL, TRY_TOLERANCE, mapping_to_check, platform_client, try_case
    from eyegc.common.registry import get_task

    out = args.out or Path(f"gc-try-{args.algorithm}-{time.strftime('%Y%m%d-%H%M%S')}")
    check_outputs([("--out", out, OutputKind.FOLDER)], [("IMAGE", args.image), *(("--model", m) for m in args.model)])
    if not args.image.is_file():
        raise EyegcError(f"IMAGE {args.image} is not a file: give the case's image (e.g. a .png of the test set)")
    plugin = get_task(args.task or read_config(args.model[0]).task)
    plugin.read_image(args.image)  # a case the task cannot read fails here, before the platform is asked
    _, interfaces, source = mapping_to_check(None, args.sockets, plugin.name)
    device = resolve_device(args.device)
    predictor = Predictor(plugin, [load_bundle(m, task=plugin.name) for m in args.model], args.tta, device)
    client = platform_client(args.api_url or API_URL, verify=not args.insecure)
    job, differences = try_case(client, args.algorithm, predictor, interfaces, args.image, out, args.timeout, args.poll)
    for slug, (differing, total) in differences.items():
        print(f"{slug}: " + ("equal" if not differing else f"{differing} of {total} values differ"))
    worst = max((d / n for d, n in differences.values()), default=0.0)
    if worst > TRY_TOLERANCE:
        raise EyegcError(
            f"job {job}: the platform's outputs differ from eyegc's here (up to {worst:.2%} of values; "
            f"{TRY_TOLERANCE:.1%} allowed): is the active image the one built from these bundles? ({out})"
        )
    print(f"ok: job {job} of {args.algorithm} ({source}) gives the outputs eyegc gives here; both under {out}")
    return 0


def _add_platform_verb(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    """``gc check`` and ``gc try``: an image against its algorithm on grand-challenge.org (gcapi)."""
    gc = add_parser("gc", help="grand-challenge.org: check an image's sockets; try one case on the platform")
    actions = gc.add_subparsers(dest="action", required=True)
    p = actions.add_parser("check", help="compare sockets (token from GRAND_CHALLENGE_TOKEN)")
    p.add_argument("algorithm", help="the algorithm's slug on grand-challenge.org")
    p.add_argument("--image", type=Path, help="an exported image (dist/*.tar.gz): its sockets and size")
    p.add_argument("--task", help="without --image: the task whose sockets to check")
    p.add_argument("--sockets", type=Path, help="with --task: a socket mapping file (./submit.sh --sockets)")
    p.add_argument("--api-url", help="the platform's API (default https://grand-challenge.org/api/v1/)")
    p.add_argument("--insecure", action="store_true", help="do not verify TLS certificates (a local test server)")
    p.set_defaults(func=_cmd_gc_check)
    p = actions.add_parser("try", help="run one case on the platform and compare with eyegc here")
    p.add_argument("algorithm", help="the algorithm's slug; its active image must be built from --model")
    p.add_argument("image", type=Path, help="the case's image (as in the task's data)")
    p.add_argument("--model", type=Path, nargs="+", required=True, help="the bundle(s) baked into the image")
    p.add_argument("--task", help="default: the first bundle's task")
    p.add_argument("--sockets", type=Path, help="the socket mapping the image was built with (./submit.sh --sockets)")
    p.add_argument("--out", type=Path, help="a new folder for input/, platform/, local/ (default gc-try-SLUG-TIME)")
    p.add_argument("--tta", default="flip", help="the image's TTA (default flip, as the image's default)")
    p.add_argument("--device", default="cpu", help="for the local run (default cpu)")
    p.add_argument("--timeout", type=GC_TRY_OPTIONS["timeout"].argparse_type(), default=3600.0, help="seconds to wait")
    p.add_argument("--poll", type=GC_TRY_OPTIONS["poll"].argparse_type(), default=10.0, help="seconds between reads")
    p.add_argument("--api-url", help="the platform's API (default https://grand-challenge.org/api/v1/)")
    p.add_argument("--insecure", action="store_true", help="do not verify TLS certificates (a local test server)")
    p.set_defaults(func=_cmd_gc_try)


def _cmd_nnunet_dataset(args: argparse.Namespace) -> int:
    from eyegc.common.nnunet.dataset import export_dataset
    from eyegc.common.registry import get_task

    plugin = get_task(args.task)
    folder = export_dataset(plugin, args.data, args.out, args.id, args.working_scale, args.overwrite, not args.no_test)
    print(f"nnU-Net raw dataset: {folder}")
    base = folder.parent.resolve()
    print(
        f"next: export nnUNet_raw={base} nnUNet_preprocessed={base.parent / 'nnUNet_preprocessed'} "
        f"nnUNet_results={base.parent / 'nnUNet_results'}; nnUNetv2_plan_and_preprocess -d {args.id} -c 2d"
    )
    return 0


def _cmd_nnunet_import(args: argparse.Namespace) -> int:
    from eyegc.common.nnunet.importer import import_model
    from eyegc.common.registry import get_task

    out = import_model(get_task(args.task), args.results, args.out, args.folds, args.checkpoint, args.overwrite)
    print(f"model bundle (backend nnunet): {out}")
    print(f"next: eyegc predict {args.task} --model {out} --images IMAGES --out PRED")
    return 0


def _add_nnunet_verb(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    """``nnunet dataset`` and ``nnunet import``: to and from nnU-Net v2 (training: ``train --backend nnunet``)."""
    nnunet = add_parser("nnunet", help="nnU-Net v2: export a task's data in its raw format; import a trained model")
    actions = nnunet.add_subparsers(dest="action", required=True)
    p = actions.add_parser("dataset", help="write DatasetNNN_<task>/ (imagesTr, labelsTr, imagesTs, dataset.json)")
    p.add_argument("task")
    p.add_argument("--data", type=Path, required=True, help="data root in the official layout")
    p.add_argument("--out", type=Path, required=True, help="the nnUNet_raw folder to write the dataset into")
    # 500: nnunet.dataset.DEFAULT_DATASET_ID (not imported here: it brings torch into `eyegc --help`)
    p.add_argument("--id", type=int, default=500, help="nnU-Net dataset id (default 500; 1..999)")
    p.add_argument(
        "--working-scale", type=float, default=1.0, help="resize images and labels by this (default 1: original size)"
    )
    p.add_argument("--no-test", action="store_true", help="export the training cases alone (no imagesTs)")
    p.add_argument("--overwrite", action="store_true", help="replace this dataset's folder if it exists")
    p.set_defaults(func=_cmd_nnunet_dataset)
    p = actions.add_parser("import", help="a trained nnU-Net model folder as an eyegc bundle")
    p.add_argument("task")
    p.add_argument(
        "--results", type=Path, required=True, help="nnUNet_results/DatasetNNN_<name>/<trainer>__<plans>__2d"
    )
    p.add_argument("--folds", type=int, nargs="+", help="the folds to import (default: every trained one)")
    p.add_argument(
        "--checkpoint", default="checkpoint_final.pth", help="which checkpoint (default checkpoint_final.pth)"
    )
    p.add_argument("--out", type=Path, required=True, help="the bundle folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_cmd_nnunet_import)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every verb."""
    parser = argparse.ArgumentParser(prog="eyegc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    verbs = (
        _add_setup_verbs,
        _add_train_verb,
        _add_scoring_verbs,
        _add_nnunet_verb,
        _add_platform_verb,
        *plugin_verbs(),
    )
    for add_verbs in verbs:
        add_verbs(sub.add_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb; user errors print one line and exit 2."""
    try:
        parser = build_parser()
    except EyegcError as exc:  # a plugin's verb that cannot be loaded
        print(f"eyegc: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with stop_signals_unwind():
            return int(args.func(args))
    except KeyboardInterrupt as interrupt:
        # Outputs appear only when complete (atomic folders and files), so nothing partial is left.
        how = f"stopped by {interrupt.args[0]}" if isinstance(interrupt, Terminated) else "interrupted"
        print(f"\neyegc {args.command}: {how}; no partial output was left", file=sys.stderr)
        return exit_status(interrupt)
    except (EyegcError, OSError) as exc:
        message = user_error_message(exc)
        if message is None or os.environ.get("EYEGC_DEBUG"):
            raise  # a bug, not the user's doing: the traceback is what a report needs
        print(f"eyegc: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
