"""Self-describing model bundles: config + per-fold weights + checksums.

Layout of a training run folder (the bundle is the checksummed part)::

    RUN/bundle.json            network, preprocessing, classes, TTA, postprocessing, scores, ...
    RUN/splits.json            the deterministic k-fold split
    RUN/fold_<k>/model.pt      best-epoch weights (a plain state dict)
    RUN/checksums.sha256       sha256 of each of the files above, verified at load
    RUN/fold_<k>/checkpoint.pt training state for --resume (not part of the bundle)
    RUN/fold_<k>/history.json, training_curve.png, RUN/oof/*.npz   training artefacts

Predict, evaluate and the container rebuild everything from ``bundle.json``, read and written as
a typed :class:`~eyegc.common.bundle_config.BundleConfig` (older formats upgraded when read);
weights are always loaded with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eyegc.common.bundle_config import (
    BUNDLE_FORMAT,
    CHECKSUMS_NAME,
    CONFIG_NAME,
    SETTING_EDITED,
    SPLITS_NAME,
    WEIGHTS_NAME,
    BundleConfig,
    DataFingerprint,
    config_from_json,
)
from eyegc.common.errors import BundleError, EyegcError
from eyegc.common.interrupts import interrupts_deferred
from eyegc.common.networks import build_network
from eyegc.common.options import TRAIN_OPTIONS
from eyegc.common.plugin import DIHEDRAL_OPS
from eyegc.common.registry import get_backend
from torch import nn

if TYPE_CHECKING:
    from eyegc.common.plugin import Case, TaskPlugin

__all__ = [
    "BUNDLE_FORMAT",
    "CHECKSUMS_NAME",
    "CONFIG_NAME",
    "SPLITS_NAME",
    "WEIGHTS_NAME",
    "Bundle",
    "BundleConfig",
    "FoldModel",
    "cases_fingerprint",
    "check_bundle_settings",
    "check_input_channels",
    "check_same_data",
    "data_fingerprint",
    "eyegc_version",
    "load_bundle",
    "read_checksums",
    "read_config",
    "save_config_keeping_signature",
    "save_signed_config",
    "sha256_file",
    "write_checksums",
    "write_config",
]


def eyegc_version() -> str:
    """The installed eyegc version (``"0+unknown"`` when running from an uninstalled tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("eyegc")
    except PackageNotFoundError:
        return "0+unknown"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_fingerprint(files: Iterable[Path], root: Path) -> DataFingerprint:
    """A sha256 over the relative names and contents of the training files."""
    digest = hashlib.sha256()
    count = 0
    for path in sorted(Path(p) for p in files):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(sha256_file(path).encode())
        count += 1
    return DataFingerprint(sha256=digest.hexdigest(), files=count)


def cases_fingerprint(cases: Iterable[Case], root: Path) -> DataFingerprint:
    """:func:`data_fingerprint` of the cases' images and label files, with the number of cases."""
    cases = list(cases)
    files = [c.image for c in cases] + [p for c in cases for p in (c.labels or {}).values() if isinstance(p, Path)]
    return data_fingerprint(files, root).model_copy(update={"cases": len(cases)})


def check_same_data(config: BundleConfig, fingerprint: DataFingerprint, data_root: Path, verb: str) -> None:
    """Refuse data other than the data a run was trained on (its recorded fingerprint).

    Raises:
        EyegcError: the fingerprints differ; the message says to ``verb`` with the same data.
    """
    previous = config.data_fingerprint
    if previous and previous.sha256 != fingerprint.sha256:
        raise EyegcError(
            f"the data in {data_root} differs from the data this run was trained on (fingerprint); "
            f"{verb} with the same --data, or start a new run"
        )


def _read_json(run: Path) -> Any:
    path = Path(run) / CONFIG_NAME
    if not path.is_file():
        raise BundleError(f"{run} is not an eyegc model bundle: {path} is missing (train one with `eyegc train`)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}); the bundle is damaged") from None


def read_config(run: Path) -> BundleConfig:
    """``RUN/bundle.json``, upgraded to the current format and validated (no checksum verification:
    use :func:`load_bundle` for that)."""
    return config_from_json(_read_json(run), str(Path(run) / CONFIG_NAME))


def _named_weights(run: Path) -> list[str]:
    """The weights files ``bundle.json`` names, read before its schema is checked.

    The checksums come first: a changed or truncated bundle.json is reported as such, not as
    whatever key the damage happened to break.
    """
    data = _read_json(run)
    folds = data.get("folds") if isinstance(data, dict) else None
    try:
        return sorted(str(record["weights"]) for record in (folds or {}).values())
    except (AttributeError, KeyError, TypeError):
        raise BundleError(f"{Path(run) / CONFIG_NAME}: folds.*.weights is missing; the bundle is damaged") from None


def write_config(run: Path, config: BundleConfig) -> None:
    """Write ``RUN/bundle.json`` atomically, in the current format."""
    path = Path(run) / CONFIG_NAME
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(config.to_json())
    os.replace(tmp, path)


def read_checksums(run: Path) -> dict[str, str]:
    """``name -> sha256`` from ``RUN/checksums.sha256``; a malformed line is a BundleError."""
    listing = run / CHECKSUMS_NAME
    if not listing.is_file():
        raise BundleError(f"{listing} is missing: the bundle is incomplete (did training finish a fold?)")
    entries: dict[str, str] = {}
    for number, line in enumerate(listing.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        expected, sep, name = line.partition("  ")
        if not sep or len(expected) != 64:
            raise BundleError(f"{listing} line {number} is not '<sha256>  <file>': the bundle is damaged")
        entries[name] = expected
    return entries


def write_checksums(run: Path, fresh: Iterable[str] = ()) -> list[str]:
    """Record the sha256 of bundle.json, splits.json and the weights of every fold in the config.

    Weights already listed are first checked against their old checksum (unless named in
    ``fresh``, the folds just trained), so re-tuning cannot bless a changed or truncated file.
    """
    run = Path(run)
    old = read_checksums(run) if (run / CHECKSUMS_NAME).is_file() else {}
    files = [CONFIG_NAME, SPLITS_NAME, *_named_weights(run)]
    for name in files[2:]:
        if name in old and name not in set(fresh) and sha256_file(run / name) != old[name]:
            raise BundleError(f"{run / name} changed since it was trained; retrain that fold")
    lines = [f"{sha256_file(run / name)}  {name}" for name in files]
    tmp = run / f".{CHECKSUMS_NAME}.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, run / CHECKSUMS_NAME)
    return files


def save_signed_config(run: Path, config: BundleConfig, fresh: Iterable[str] = ()) -> None:
    """Write ``bundle.json`` and re-sign the bundle as one step that Ctrl-C cannot split.

    Interrupted between the two writes, a bundle would hold a new bundle.json under the old
    checksum and be refused as tampered with; the interrupt is held back until both are written.
    """
    with interrupts_deferred():
        write_config(run, config)
        write_checksums(run, fresh=fresh)


def save_config_keeping_signature(run: Path, config: BundleConfig) -> None:
    """Write ``bundle.json``; re-sign it too when the run is already signed (a resumed run).

    A signed run whose bundle.json changed without its checksum would be refused as tampered
    with, should the resumed training then fail or be interrupted.
    """
    if (Path(run) / CHECKSUMS_NAME).is_file():
        save_signed_config(run, config)
    else:
        write_config(run, config)


def verify_checksums(run: Path) -> list[str]:
    """Check every bundle file against ``RUN/checksums.sha256``; return the weights files.

    The listing must cover bundle.json, splits.json and exactly the weights the config names.

    Raises:
        BundleError: the list is missing or malformed, or a file is missing, truncated, changed
            or not covered by the list.
    """
    run = Path(run)
    entries = read_checksums(run)
    for name in (CONFIG_NAME, SPLITS_NAME):
        if name not in entries:
            raise BundleError(f"{run / CHECKSUMS_NAME} does not cover {name}: the bundle is damaged")
    for name, expected in entries.items():
        path = run / name
        if not path.is_file():
            raise BundleError(f"bundle file {path} is missing; copy the whole bundle folder")
        if sha256_file(path) != expected:
            raise BundleError(
                f"bundle file {path} does not match its checksum: it was changed or truncated. "
                "Copy the bundle again, or retrain"
            )
    weights = _named_weights(run)
    listed = sorted(n for n in entries if n not in (CONFIG_NAME, SPLITS_NAME))
    if listed != weights:
        raise BundleError(
            f"{run / CHECKSUMS_NAME} lists weights {listed} but bundle.json names {weights}: the bundle is damaged"
        )
    return weights


@dataclass
class FoldModel:
    """One fold's network, ready for inference."""

    fold: int
    network: nn.Module


@dataclass
class Bundle:
    """A verified model bundle: its config and its fold networks (on CPU until moved)."""

    path: Path
    config: BundleConfig
    folds: list[FoldModel] = field(default_factory=list)

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def classes(self) -> list[str]:
        return list(self.config.classes)


def build_from_config(config: BundleConfig, source: Path | None = None) -> nn.Module:
    """The untrained network a bundle config describes.

    Args:
        config: a bundle config (``bundle.json``).
        source: the ``bundle.json`` it was read from, named in errors (``None``: a config being trained).

    Raises:
        EyegcError: an unknown network, argument or unusable argument value; a :class:`BundleError`
            naming ``source`` when given.
    """
    net = config.network
    try:
        sr = net.super_resolution.model_dump() if net.super_resolution else None
        return build_network(net.name, config.in_channels, config.output_channels, net.kwargs, sr)
    except EyegcError as exc:
        if source is None:
            raise
        raise BundleError(f"{source}: {exc}") from None


def check_input_channels(config: BundleConfig, plugin: TaskPlugin, run: Path) -> None:
    """Refuse a run trained on other input channels than ``plugin`` reads (a plugin built in Python).

    Raises:
        BundleError: naming both channel counts and the way out.
    """
    trained_on = config.in_channels
    if trained_on != plugin.in_channels:
        raise BundleError(
            f"{run} was trained on {trained_on}-channel input; {plugin.name} as configured reads "
            f"{plugin.in_channels} channel(s): use the plugin with the input options it was trained with "
            "(a registered variant of the task, if there is one), or train a new run"
        )


def _setting_error(path: Path, where: str, problem: str) -> BundleError:
    return BundleError(f"{path}: {where} {problem}; {SETTING_EDITED}")


def check_bundle_settings(config: BundleConfig, path: Path) -> None:
    """Check the settings predict reads from ``bundle.json`` against each other and against the
    ranges of ``eyegc train``'s options (each threshold and component size on its own is checked
    when the file is read: :class:`~eyegc.common.bundle_config.Postprocessing`).

    checksums.sha256 catches an edited bundle.json only until it is re-signed; a re-signed file
    with a working scale of 0 or a threshold for no class would otherwise predict nonsense, silently.

    Raises:
        BundleError: a value out of its range, or a class key the bundle does not have.
    """
    for where, rule, value in (
        ("preprocessing.working_scale", TRAIN_OPTIONS["working_scale"], config.preprocessing.working_scale),
        ("patch_size", TRAIN_OPTIONS["patch_size"], config.patch_size),
    ):
        try:
            rule.check(value)
        except EyegcError as error:
            raise _setting_error(path, where, str(error).replace(f"{rule.option} ", "", 1)) from None
    post = config.postprocessing
    for name, section in (("thresholds", post.thresholds), ("min_component_size", post.min_component_size)):
        for key in sorted(set(section) - set(config.classes)):
            where = f"postprocessing.{name}.{key}"
            raise _setting_error(path, where, f"names no class of this bundle ({', '.join(config.classes)})")
    for mode, ops in config.allowed_tta.items():
        unknown = sorted(set(ops) - set(DIHEDRAL_OPS))
        if unknown:
            raise _setting_error(path, f"allowed_tta.{mode}", f"holds unknown operations {', '.join(unknown)}")


def load_bundle(run: Path, task: str | None = None, folds: Iterable[int] | None = None) -> Bundle:
    """Verify checksums and load a bundle's fold networks (eval mode, CPU).

    Args:
        run: the bundle (training run) folder.
        task: when given, refuse a bundle trained for another task.
        folds: load only these folds (default: every finished fold).

    Raises:
        BundleError: missing, tampered or truncated files; a bundle for another task; no fold.
    """
    run = Path(run)
    listed = verify_checksums(run)
    config = read_config(run)
    if task is not None and config.task != task:
        raise BundleError(f"{run} was trained for {config.task!r}, not {task!r}")
    check_bundle_settings(config, run / CONFIG_NAME)
    wanted = set(folds) if folds is not None else None
    bundle = Bundle(path=run, config=config)
    try:
        backend = get_backend(config.backend)
    except EyegcError as exc:
        raise BundleError(f"{run / CONFIG_NAME}: {exc}") from None
    for name in listed:
        fold = int(Path(name).parent.name.split("_")[1])
        if wanted is not None and fold not in wanted:
            continue
        bundle.folds.append(FoldModel(fold=fold, network=backend.load_fold(config, run / name)))
    if not bundle.folds:
        raise BundleError(f"{run} holds no finished fold (train one with `eyegc train`)")
    return bundle
