"""Building the algorithm image: bundles staged and verified, an offline wheelhouse, the base image's
torch, ``docker build``."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eyegc.common.backend import NeedsExtra
from eyegc.common.bundle import CHECKSUMS_NAME, CONFIG_NAME, SPLITS_NAME, load_bundle, read_checksums, read_config
from eyegc.common.bundle_config import BundleConfig
from eyegc.common.crf import CRF_EXTRA
from eyegc.common.deploy.steps import SubmitError, link_tree, run_command, safe_name, say, source_root, step
from eyegc.common.invoke import API_METHOD_LABEL
from eyegc.common.registry import get_backend
from eyegc.common.smp_networks import SMP_EXTRA, SMP_PREFIX
from eyegc.common.sockets import (
    SOCKETS_LABEL,
    Interface,
    interfaces_json,
)
from packaging.requirements import Requirement
from packaging.version import Version

#: The official template's base (a CUDA runtime with torch); needs a registry to pull it.
DEFAULT_BASE_IMAGE = "pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime"
#: Base images whose torch meets MONAI 1.6's minimum (torch>=2.8), named when a base's torch does not.
GPU_BASE_EXAMPLES = ("pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime", "pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime")
#: Written into the wheelhouse: pins torch to the base image's own when it has one, so pip never adds
#: a second torch beside it (empty when the base has none: the wheelhouse's CPU torch goes in).
BASE_CONSTRAINTS = "base-constraints.txt"
# The dependency stage of containers/Dockerfile carries this label, valued by _deps_key.
DEPS_STAGE_LABEL = "org.eyegc.deps-stage"
#: Bundle files that make up a bundle (the rest of a run folder is training artefacts).
BUNDLE_FILES = (CONFIG_NAME, SPLITS_NAME, CHECKSUMS_NAME)


@dataclass
class StagedBundle:
    """A verified bundle copied (checksummed files only) to ``path`` as ``NN-<name>``."""

    source: Path
    path: Path
    checksums: dict[str, str]
    folds: int
    network: dict[str, Any]
    data_root: str | None


def stage_bundles(task: str, models: Sequence[Path], dest: Path) -> list[StagedBundle]:
    """Verify each bundle with ``load_bundle`` and copy its files to ``dest/NN-name``.

    The ``NN-`` prefix keeps the user's order: the first bundle's postprocessing is the
    ensemble's, and the container sorts the bundle folders it finds.
    """
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    staged = []
    for index, model in enumerate(models):
        bundle = load_bundle(model, task=task)
        checksums = read_checksums(Path(model))
        target = dest / f"{index:02d}-{safe_name(Path(model).resolve().name)}"
        for name in sorted({*BUNDLE_FILES, *checksums}):
            if (Path(model) / name).is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(model) / name, target / name)
        load_bundle(target, task=task)  # the copy verifies too
        staged.append(
            StagedBundle(
                source=Path(model).resolve(),
                path=target,
                checksums=checksums,
                folds=len(bundle.folds),
                network=bundle.config.network.model_dump(),
                data_root=bundle.config.training.data_root,
            )
        )
        say(f"bundle {model}: {len(bundle.folds)} fold(s), {bundle.config.network.name}, verified")
    return staged


def backend_extras(backends: set[str]) -> dict[str, str]:
    """``backend -> extra`` for the bundles' backends that need an optional dependency in the image."""
    found = {name: get_backend(name) for name in sorted(backends)}
    return {name: backend.extra for name, backend in found.items() if isinstance(backend, NeedsExtra)}


def bundle_extras(configs: Sequence[BundleConfig]) -> dict[str, str]:
    """``what needs it -> extra`` for every optional dependency the bundles need in the image:
    their backends' (paddle, nnunet), smp networks' and dense CRF post-processing's."""
    extras = {f"the {name} backend": extra for name, extra in backend_extras({c.backend for c in configs}).items()}
    for config in configs:
        if config.network.name.startswith(SMP_PREFIX):
            extras[f"the network {config.network.name}"] = SMP_EXTRA
        if config.postprocessing.crf:
            extras["dense CRF post-processing"] = CRF_EXTRA
    return extras


def _project_requirements(wheel: Path, extras: Sequence[str] = ()) -> list[str]:
    """The project's runtime requirements (plus those of ``extras``), read from the built wheel's METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(name).decode()
    requirements = []
    for line in metadata.splitlines():
        if line.startswith("Requires-Dist:"):
            spec = line.split(":", 1)[1].strip()
            if "extra ==" not in spec:
                requirements.append(spec)
            elif any(f'extra == "{e}"' in spec for e in extras):
                requirements.append(spec.split(";", 1)[0].strip())
    return requirements


def _wheelhouse(python: str, work: Path, refresh: bool, extras: Sequence[str] = ()) -> tuple[Path, Path, list[str]]:
    """Build the project wheel (always) and the pinned dependency wheels (cached by a stamp).

    ``extras`` adds optional dependencies a bundle needs (``paddle`` for a PaddlePaddle bundle).

    Returns:
        The project wheel, the dependency folder and the requirements written beside it.
    """
    project_dir = work / "wheelhouse" / "project"
    shutil.rmtree(project_dir, ignore_errors=True)
    project_dir.mkdir(parents=True)
    # A fixed timestamp makes the wheel byte-identical for unchanged code, so Docker's layer
    # cache keeps the project layer too.
    env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800"}
    with tempfile.TemporaryDirectory(prefix="eyegc-wheel-") as build_tmp:
        # Build from a copy: setuptools writes build/ and *.egg-info into the source tree.
        source = Path(build_tmp) / "src"
        shutil.copytree(
            source_root(),
            source,
            ignore=shutil.ignore_patterns(
                ".git", ".venv", "build", "dist", "demo", "runs", "__pycache__", "*.egg-info", ".*cache"
            ),
        )
        run_command(
            [python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(project_dir), str(source)],
            "building the eyegc wheel",
            env=env,
        )
    wheel = next(project_dir.glob("eyegc-*.whl"))
    requirements = _project_requirements(wheel, extras)

    deps_dir = work / "wheelhouse" / "deps"
    constraints = source_root() / "constraints.txt"
    key = hashlib.sha256(
        "\n".join([constraints.read_text(), *requirements, sys.version.split()[0], sys.platform]).encode()
    ).hexdigest()
    stamp = deps_dir / ".stamp"
    if not refresh and stamp.is_file() and stamp.read_text().strip() == key:
        say(f"wheelhouse: cached {deps_dir} ({len(list(deps_dir.glob('*.whl')))} wheels)")
    else:
        started = time.perf_counter()
        tmp = deps_dir.with_name("deps.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        requirements_txt = tmp / "requirements.txt"
        requirements_txt.write_text("\n".join(requirements) + "\n")
        run_command(
            [
                python,
                "-m",
                "pip",
                "wheel",
                "-q",
                "-w",
                str(tmp),
                "-c",
                str(constraints),
                "-r",
                str(tmp / "requirements.txt"),
            ],
            "pip wheel of the pinned dependencies",
        )
        (tmp / ".stamp").write_text(key + "\n")
        shutil.rmtree(deps_dir, ignore_errors=True)
        os.replace(tmp, deps_dir)
        say(f"wheelhouse: {len(list(deps_dir.glob('*.whl')))} wheels in {time.perf_counter() - started:.0f} s")
    (deps_dir / "requirements.txt").write_text("\n".join(requirements) + "\n")
    return wheel, deps_dir, requirements


def _torch_requirements(deps_dir: Path, requirements: Sequence[str]) -> list[str]:
    """Every requirement on torch: the project's and those of the wheels in the wheelhouse (MONAI's)."""
    found = [r for r in requirements if re.match(r"torch\b", r)]
    for wheel in sorted(deps_dir.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            name = next((n for n in archive.namelist() if n.endswith(".dist-info/METADATA")), None)
            metadata = archive.read(name).decode() if name else ""
        found += [
            f"{line.split(':', 1)[1].strip()} ({wheel.name.split('-')[0]})"
            for line in metadata.splitlines()
            if re.match(r"Requires-Dist:\s*torch\b(?!\w)", line) and "extra ==" not in line
        ]
    return found


def base_torch_constraint(base_torch: str | None, deps_dir: Path, requirements: Sequence[str]) -> str:
    """The base-constraints.txt text: ``torch==<base's>`` when the base's torch meets every requirement.

    Raises:
        SubmitError: the base has a torch that some requirement excludes: pip would install a second
            torch (the wheelhouse's CPU build) that shadows the base's GPU one.
    """
    if base_torch is None:
        return ""
    version = Version(base_torch).public  # 2.8.0+cu128 -> 2.8.0
    unmet = [
        r
        for r in _torch_requirements(deps_dir, requirements)
        if Version(version) not in Requirement(r.split(" (")[0]).specifier
    ]
    if unmet:
        raise SubmitError(
            f"the base image's torch {base_torch} does not meet {', '.join(unmet)}: pip would add a second "
            f"torch beside it; use a base whose torch does, e.g. {' or '.join(GPU_BASE_EXAMPLES)}, or a base "
            "without torch for a CPU image"
        )
    return f"torch=={version}\n"


def _assemble_context(
    work: Path, wheel: Path, deps_dir: Path, bundles_dir: Path, sockets: Path, base_constraints: str
) -> Path:
    """``work/context``: Dockerfile, .dockerignore, wheelhouse/{deps,project}, bundles, sockets.json."""
    context = work / "context"
    shutil.rmtree(context, ignore_errors=True)
    (context / "wheelhouse" / "project").mkdir(parents=True)
    shutil.copy2(source_root() / "containers" / "Dockerfile", context / "Dockerfile")
    shutil.copy2(source_root() / "containers" / ".dockerignore", context / ".dockerignore")
    link_tree(deps_dir, context / "wheelhouse" / "deps")
    (context / "wheelhouse" / "deps" / ".stamp").unlink(missing_ok=True)
    (context / "wheelhouse" / "deps" / BASE_CONSTRAINTS).write_text(base_constraints)
    shutil.copy2(wheel, context / "wheelhouse" / "project" / wheel.name)
    link_tree(bundles_dir, context / "bundles")
    shutil.copy2(sockets, context / "sockets.json")
    return context


def docker_available() -> str | None:
    """None when an engine answers, else why not (one line)."""
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    try:
        proc = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return "`docker info` timed out"
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        return lines[-1] if lines else "`docker info` failed"
    return None


def _ensure_base_image(base: str) -> None:
    if subprocess.run(["docker", "image", "inspect", base], capture_output=True, check=False).returncode == 0:
        return
    say(f"base image {base} is not local; trying docker pull")
    if subprocess.run(["docker", "pull", base], capture_output=True, check=False).returncode == 0:
        return
    raise SubmitError(
        f"base image {base} is not present locally and cannot be pulled (no registry reachable): pass "
        "--base-image with a local image, e.g. make one with `containers/make_base_image.sh eyegc-base:bookworm` "
        "(debootstrap + docker import, see shared/docs/DOCKER.md) and use --base-image eyegc-base:bookworm"
    )


def _probe_base(base: str) -> dict[str, Any]:
    """The base image's Python version and torch, if any (runs it once, offline)."""
    code = (
        "import json,sys\ntry:\n import torch; t=[torch.__version__, torch.version.cuda]\nexcept Exception: t=None\n"
        "print(json.dumps({'python': '%d.%d' % sys.version_info[:2], 'torch': t}))"
    )
    proc = run_command(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "python3", base, "-c", code],
        f"probing {base} (it needs python3)",
        timeout=300,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _deps_key(context: Path, base: str) -> str:
    """What the image's dependency stage is built from: the base image and the wheelhouse's files."""
    deps = context / "wheelhouse" / "deps"
    listing = [base, *(f"{p.name} {p.stat().st_size}" for p in sorted(deps.iterdir()) if p.is_file())]
    listing.append((deps / BASE_CONSTRAINTS).read_text())
    return hashlib.sha256("\n".join(listing).encode()).hexdigest()[:16]


def _docker_build(context: Path, tag: str, base: str, task: str, log: Path, api: str) -> float:
    started = time.perf_counter()
    # The base's image id, not its tag: a base rebuilt under the same tag makes a new dependency stage.
    deps_key = _deps_key(context, (_docker_quiet("image", "inspect", "-f", "{{.Id}}", base) or base).strip())
    cmd = ["docker", "build", "--platform=linux/amd64", "--build-arg", f"BASE_IMAGE={base}"]
    cmd += ["--build-arg", f"DEPS_KEY={deps_key}"]
    # The platform reads this label at import to run the image in exec or invoke mode; the image
    # itself reads EYEGC_API_METHOD, since the runner hides its own variables from it.
    cmd += ["--label", f"{API_METHOD_LABEL}={api}", "--build-arg", f"API_METHOD={api}"]
    # The socket mapping as an image label too, so the image says what it serves without running it.
    sockets = json.dumps(json.loads((context / "sockets.json").read_text()), separators=(",", ":"))
    cmd += ["--label", f"{SOCKETS_LABEL}={sockets}"]
    cmd += ["--build-arg", f"TASK={task}", "-t", tag, str(context)]
    logged_build(cmd, log, deps_key)
    return time.perf_counter() - started


def logged_build(cmd: Sequence[str], log: Path, deps_key: str | None = None) -> None:
    """Run ``docker build`` into ``log``, then remove the builds it replaced (``remove_untagged_builds``).

    A failure is one error with the log's tail. ``deps_key``: the build's dependency stage, if it has one.
    """
    with open(log, "w") as handle:
        proc = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().strip().splitlines()[-20:])
        raise SubmitError(f"docker build failed (exit {proc.returncode}); full log {log}:\n{tail}")
    remove_untagged_builds(deps_key)


def _docker_quiet(*args: str) -> str | None:
    """A docker command's output, or None when it failed (clean-up is best effort)."""
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    return proc.stdout if proc.returncode == 0 else None


def remove_untagged_builds(deps_key: str | None = None) -> None:
    """Remove the eyegc images that no tag names any more, as a rebuild of their tag leaves them.

    Each rebuild otherwise leaves its predecessor behind, about 2 GB apiece (53 of them, 27 GB,
    were found on a development machine), and every change of the wheelhouse or the base leaves a
    dependency stage of about 2 GB. Touched are only images with eyegc's sockets label (the
    shim-wrapped test images inherit it) and dependency stages (``DEPS_STAGE_LABEL``) other than
    ``deps_key``'s, which the next build of the same wheelhouse and base reuses as its cache.
    Docker keeps any image that a tag or a container still uses. Dependency stages are images only
    under the classic builder (what the Dockerfile is written for); BuildKit keeps them as its cache.
    One build at a time: a concurrent build of another wheelhouse could lose its stage mid-build.
    """
    removed: list[str] = []
    # A pass removes only images without children: an old build whose old shim-wrapped image was just
    # replaced goes in the next pass.
    for _ in range(3):
        said = _docker_quiet("image", "prune", "--force", "--filter", f"label={SOCKETS_LABEL}") or ""
        reclaimed = re.search(r"Total reclaimed space:\s*(\S+)", said)
        if not reclaimed or reclaimed.group(1) in ("0B", "0"):
            break
        removed.append(reclaimed.group(1))
    if removed:
        say(f"removed the earlier eyegc builds that no tag names any more ({' + '.join(removed)})")
    if deps_key is None:
        return
    dangling = (
        _docker_quiet("images", "-q", "--filter", "dangling=true", "--filter", f"label={DEPS_STAGE_LABEL}") or ""
    ).split()
    if not dangling:
        return
    labels = _docker_quiet("image", "inspect", "-f", f'{{{{index .Config.Labels "{DEPS_STAGE_LABEL}"}}}}', *dangling)
    keys = (labels or "").splitlines()
    if len(keys) != len(dangling):
        return
    stale = [image for image, key in zip(dangling, keys, strict=True) if key.strip() != deps_key]
    if stale and _docker_quiet("image", "rm", *stale) is not None:
        say(f"removed {len(stale)} dependency stage(s) of earlier wheelhouses or bases")


def check_host_architecture(machine: str) -> None:
    """The platform runs linux/amd64 images: refuse to build one on another architecture without emulation."""
    if machine.lower() in ("x86_64", "amd64"):
        return
    raise SubmitError(
        f"this host is {machine}; grand-challenge.org runs linux/amd64 images: build on an amd64 machine "
        "(an arm64 image would not start there, and emulating amd64 needs QEMU binfmt set up for Docker)"
    )


def build_image(
    args: argparse.Namespace,
    plugin: Any,
    interfaces: Sequence[Interface],
    staged: Sequence[StagedBundle],
    work: Path,
    tag: str,
    timings: dict[str, float],
) -> dict[str, Any]:
    """Wheelhouse, context and ``docker build``; checks the image's torch and labels. Returns its manifest entry."""
    check_host_architecture(os.uname().machine)
    step(f"image {tag} from {args.base_image}")
    _ensure_base_image(args.base_image)
    base = _probe_base(args.base_image)
    host_python = "{}.{}".format(*sys.version_info[:2])
    if base["python"] != host_python:
        raise SubmitError(
            f"{args.base_image} has Python {base['python']}; the wheelhouse is built for this machine's "
            f"Python {host_python}: use a base image with Python {host_python}"
        )
    started = time.perf_counter()
    extras = bundle_extras([read_config(b.path) for b in staged])
    for need, extra in sorted(extras.items()):
        say(f"a bundle uses {need}: the image gets the {extra} extra (CPU builds)")
    extras = sorted(set(extras.values()))
    wheel, deps_dir, requirements = _wheelhouse(sys.executable, work, args.refresh_wheelhouse, extras)
    timings["wheelhouse"] = round(time.perf_counter() - started, 1)
    base_torch = base["torch"][0] if base["torch"] else None
    base_constraints = base_torch_constraint(base_torch, deps_dir, requirements)
    if base_torch:
        say(f"base image provides torch {base_torch} (CUDA {base['torch'][1]}): it is the image's only torch")
    sockets_file = work / "sockets.json"
    sockets_file.write_text(json.dumps(interfaces_json(plugin, interfaces), indent=2) + "\n")
    context = _assemble_context(work, wheel, deps_dir, work / "bundles", sockets_file, base_constraints)
    build_log = work / "docker-build.log"
    timings["build"] = round(_docker_build(context, tag, args.base_image, plugin.name, build_log, args.api), 1)
    inspect = json.loads(run_command(["docker", "image", "inspect", tag], "docker image inspect").stdout)[0]
    code = "import torch, eyegc.common.bundle as b; print(torch.__version__, b.eyegc_version(), torch.__file__)"
    probe = run_command(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "python", tag, "-c", code],
        "checking the image's python",
    ).stdout.split()
    if base_torch and probe[2].startswith("/opt/venv/"):
        raise SubmitError(f"the image imports torch from {probe[2]}, not the base image's torch {base_torch}")
    labels = inspect.get("Config", {}).get("Labels") or {}
    if labels.get(API_METHOD_LABEL) != args.api or SOCKETS_LABEL not in labels:
        raise SubmitError(f"the built image lacks its labels {API_METHOD_LABEL}={args.api} and {SOCKETS_LABEL}")
    say(
        f"built {tag} ({inspect['Id'][7:19]}, {inspect['Size'] / 1e9:.2f} GB, torch {probe[0]}, "
        f"eyegc {probe[1]}) in {timings['build']:.0f} s (build log {build_log})"
    )
    return {
        "tag": tag,
        "id": inspect["Id"],
        "api_method": args.api,
        "size_bytes": inspect["Size"],
        "base_image": args.base_image,
        "torch": probe[0],
        "eyegc_version": probe[1],
    }
