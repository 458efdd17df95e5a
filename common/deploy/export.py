"""Exporting: the image and model tarballs and the manifest in ``--out``, then the upload steps."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from eyegc.common.bundle import eyegc_version, sha256_file
from eyegc.common.deploy.build import StagedBundle
from eyegc.common.deploy.steps import SubmitError, safe_name, say, step, tar_model
from eyegc.common.sockets import (
    Interface,
    interfaces_json,
)

# A gzip -1 archive of an image measured 0.35 to 0.37 of the image's size (2.08 GB -> 766 MB,
# 2.23 GB -> 770 MB); half its size, plus a margin, is asked to be free before the export starts.
EXPORT_SIZE_RATIO = 0.5
EXPORT_MARGIN_BYTES = 200_000_000


def check_export_space(out_dir: Path, image_bytes: int) -> None:
    """Refuse, before writing anything, an export that would fill the disk of ``out_dir``."""
    need = int(image_bytes * EXPORT_SIZE_RATIO) + EXPORT_MARGIN_BYTES
    free = shutil.disk_usage(out_dir).free
    if free < need:
        raise SubmitError(
            f"{out_dir} has {free / 1e9:.1f} GB free; the image's archive needs about {need / 1e9:.1f} GB: "
            "free some space there or pass --out DIR on a disk with room (the image itself is built and kept)"
        )


def _save_image(tag: str, target: Path) -> float:
    """``docker save TAG | gzip -1 > target`` (written beside, then renamed; removed on failure)."""
    started = time.perf_counter()
    partial = target.with_name(target.name + ".partial")
    with open(partial, "wb") as handle:
        save = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE)
        gzip = subprocess.Popen(["gzip", "-1"], stdin=save.stdout, stdout=handle, stderr=subprocess.PIPE)
        assert save.stdout is not None
        save.stdout.close()  # gzip owns the pipe now: docker save sees SIGPIPE if gzip dies
        try:
            _, gzip_err = gzip.communicate()
            gzip_rc, save_rc = gzip.returncode, save.wait()
        except BaseException:  # Ctrl-C: no half archive, no orphaned docker save
            for process in (save, gzip):
                process.kill()
                process.wait()
            partial.unlink(missing_ok=True)
            raise
    if save_rc or gzip_rc:
        partial.unlink(missing_ok=True)
        said = gzip_err.decode(errors="replace").strip().splitlines()
        why = f": {said[-1]}" if said else ""
        raise SubmitError(
            f"docker save {tag} | gzip failed (exit {save_rc}/{gzip_rc}){why}; nothing was left in {target.parent}"
        )
    os.replace(partial, target)
    return time.perf_counter() - started


def _artifact(path: Path) -> dict[str, Any]:
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def export_artifacts(
    args: argparse.Namespace,
    plugin: Any,
    interfaces: Sequence[Interface],
    staged: Sequence[StagedBundle],
    image: dict[str, Any],
    test_rows: list[dict[str, Any]],
    scores: dict | None,
    work: Path,
    tag: str,
    stamp: str,
    timings: dict[str, float],
    total_started: float,
) -> dict[str, Any]:
    """The image (when one was built) and model tarballs and the manifest in ``--out``; returns the artifacts."""
    use_docker = bool(image)

    step("artifacts")
    name = safe_name(tag)
    out_dir = args.out.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    artifacts: dict[str, Any] = {}
    if use_docker:
        image_tar = out_dir / f"{name}-{stamp}.tar.gz"
        check_export_space(out_dir, image["size_bytes"])
        timings["save"] = round(_save_image(tag, image_tar), 1)
        artifacts["image"] = _artifact(image_tar)
        say(f"{image_tar} ({image_tar.stat().st_size / 1e6:.0f} MB) in {timings['save']:.0f} s")
    model_tar = out_dir / f"{name}-model.tar.gz"
    tar_model(work / "bundles", model_tar)
    artifacts["model"] = _artifact(model_tar)
    say(f"{model_tar} ({model_tar.stat().st_size / 1e6:.1f} MB)")
    timings["total"] = round(time.perf_counter() - total_started, 1)
    bundles = [
        {"name": b.path.name, "source": str(b.source), "folds": b.folds, "network": b.network, "checksums": b.checksums}
        for b in staged
    ]
    manifest = {
        "task": plugin.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "eyegc_version": eyegc_version(),
        "image": image or None,
        "artifacts": artifacts,
        "bundles": bundles,
        "sockets": interfaces_json(plugin, interfaces),
        "test_run": {
            "mode": "docker" if use_docker else "in-process",
            "memory": args.memory,
            "gpus": args.gpus,
            "cases": test_rows,
        },
        "local_scores": scores,
        "seconds": timings,
    }
    manifest_path = out_dir / f"{name}-manifest.json"
    partial = manifest_path.with_name(manifest_path.name + ".partial")
    partial.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(partial, manifest_path)
    say(f"{manifest_path} (sha256 {sha256_file(manifest_path)[:16]}…)")
    return artifacts


def print_upload_steps(
    args: argparse.Namespace,
    plugin: Any,
    interfaces: Sequence[Interface],
    use_docker: bool,
    artifacts: dict[str, Any],
    test_root: Path,
    timings: dict[str, float],
) -> None:
    step("upload to grand-challenge.org")
    sets = "; or ".join(
        "inputs: "
        + ", ".join(f"{s.slug} ({s.relative_path}, {s.kind})" for s in i.inputs)
        + " → outputs: "
        + ", ".join(f"{s.slug} ({s.relative_path}, {s.kind})" for s in i.outputs)
        for i in interfaces
    )
    if use_docker:
        say(
            f"1. Your algorithm → Containers → Upload a container image: {artifacts['image']['path']}\n"
            f"   (settings: GPU {'T4 or better' if args.gpus else 'none is needed (CPU works; a T4 is faster)'}, "
            f"memory ≥ {args.memory}; wait until the image is 'Ready' and set it active)"
        )
    else:
        say("1. Build the image on a machine with Docker: ./submit.sh " + plugin.name + " --model ... --base-image ...")
    say(
        f"2. Optional: Models → Upload a model: {artifacts['model']['path']} — extracted to /opt/ml/model, it takes "
        "precedence\n   over the bundles baked into the image (swap weights without re-uploading the image)\n"
        f"3. The algorithm's sockets must be — {sets}\n"
        f"4. Try it on one case ('Try-out algorithm') and compare with this run's outputs under {test_root}\n"
        f"total {timings['total']:.0f} s"
    )
