"""The container entrypoint on temporary folders standing in for /input and /output."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from eyegc.common.bundle import load_bundle
from eyegc.common.container import (
    INPUTS_JSON,
    OUTPUT_NAME,
    default_model_dirs,
    entry_socket,
    layout_case,
    main,
    read_inputs_json,
    run_case,
)
from eyegc.common.deploy import build, export, steps, submit, testrun
from eyegc.common.errors import BundleError, DataError, EyegcError
from eyegc.common.inference import Predictor
from eyegc.common.plugin import TaskPlugin
from eyegc.common.registry import get_task

TASK = "drac22-task1"
IMAGE_SOCKET = "images/uw-octa-image"


@pytest.fixture(scope="module")
def plugin() -> TaskPlugin:
    return get_task(TASK)


@pytest.fixture(scope="module")
def predictor(plugin: TaskPlugin, drac22_run: Path) -> Predictor:
    return Predictor(plugin, [load_bundle(drac22_run, task=TASK)], tta="flip", device="cpu")


@pytest.fixture(scope="module")
def test_image(plugin: TaskPlugin, drac22_data: Path) -> Path:
    return plugin.list_cases(drac22_data, "test")[0].image


@pytest.fixture
def case_input(plugin: TaskPlugin, test_image: Path, tmp_path: Path) -> Path:
    """A case laid out as the platform does: inputs.json + images/<slug>/<uuid>.mha."""
    return layout_case(plugin, test_image, tmp_path / "input")


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _expected_outputs(plugin: TaskPlugin) -> list[str]:
    return sorted(f"{s.relative_path}/{OUTPUT_NAME}" for s in plugin.output_sockets)


def _assert_no_output(output: Path) -> None:
    assert _files(output) == [], f"a failed run left output files: {_files(output)}"


# -- layout -------------------------------------------------------------------------------------


def test_layout_case_matches_the_platform(plugin: TaskPlugin, case_input: Path, test_image: Path) -> None:
    entries = json.loads((case_input / INPUTS_JSON).read_text())
    assert len(entries) == 1
    entry = entries[0]
    # Both keys, one object, with the fields of the platform's socket serializer.
    assert (
        entry["socket"]
        == entry["interface"]
        == {
            "title": "Uw octa image",
            "description": "",
            "slug": "uw-octa-image",
            "kind": "Image",
            "pk": None,
            "default_value": None,
            "super_kind": "Image",
            "relative_path": IMAGE_SOCKET,
            "overlay_segments": [],
            "look_up_table": None,
        }
    )
    assert entry["image"]["name"] == test_image.name and entry["file"] is None and entry["value"] is None
    files = list((case_input / IMAGE_SOCKET).iterdir())
    assert len(files) == 1 and files[0].name == f"{entry['image']['pk']}.mha"
    converted = sitk.GetArrayFromImage(sitk.ReadImage(str(files[0])))
    original = sitk.GetArrayFromImage(sitk.ReadImage(str(test_image)))
    assert converted.dtype == np.uint8 and np.array_equal(converted, original)


# -- happy path -----------------------------------------------------------------------------------


def test_main_writes_one_mha_per_socket_equal_to_predictor(
    plugin: TaskPlugin,
    predictor: Predictor,
    case_input: Path,
    test_image: Path,
    drac22_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    output = tmp_path / "output"
    rc = main(["--task", TASK, "--input", str(case_input), "--output", str(output), "--model", str(drac22_run)])
    assert rc == 0
    assert _files(output) == _expected_outputs(plugin)  # nothing else: no staging folder left behind
    expected, _ = predictor.predict(plugin.read_image(test_image))
    keys = [c.key for c in plugin.classes]
    for socket_ in plugin.output_sockets:
        image = sitk.ReadImage(str(output / socket_.relative_path / OUTPUT_NAME))
        assert image.GetDimension() == 2
        assert image.GetSize() == (1024, 1024)
        assert image.GetPixelID() == sitk.sitkUInt8
        array = sitk.GetArrayFromImage(image)
        assert set(np.unique(array)) <= {0, 1}
        assert np.array_equal(array, expected[keys.index(socket_.class_key)])
    log = capsys.readouterr()
    assert log.err == ""  # the platform shows stderr as warnings: a healthy run writes none
    assert "device cpu" in log.out and "predict" in log.out and '"since_process_start"' in log.out


@pytest.mark.parametrize("keys", [("socket", "interface"), ("socket",), ("interface",)])
def test_inputs_json_socket_key_with_the_legacy_interface_fallback(
    keys: tuple[str, ...], plugin: TaskPlugin, predictor: Predictor, case_input: Path, tmp_path: Path
) -> None:
    """The platform writes both keys; current templates read ``socket``; older files have ``interface`` only."""
    path = case_input / INPUTS_JSON
    entries = json.loads(path.read_text())
    folder = case_input / IMAGE_SOCKET
    moved = case_input / "images" / "elsewhere"
    folder.rename(moved)  # the relative path must come from the entry, whichever key holds it
    for entry in entries:
        described = {**entry.pop("socket"), "relative_path": "images/elsewhere"}
        entry.pop("interface")
        entry.update({key: described for key in keys})
    path.write_text(json.dumps(entries))
    summary = run_case(plugin, predictor, case_input, tmp_path / "output")
    assert summary["input_source"] == "inputs.json" and summary["inputs"]["uw-octa-image"].startswith(str(moved))
    assert _files(tmp_path / "output") == _expected_outputs(plugin)


def test_the_socket_key_wins_over_the_legacy_one(case_input: Path) -> None:
    path = case_input / INPUTS_JSON
    entries = json.loads(path.read_text())
    entries[0]["interface"] = {**entries[0]["interface"], "slug": "stale-legacy-slug"}
    path.write_text(json.dumps(entries))
    assert [entry_socket(e)["slug"] for e in read_inputs_json(case_input)] == ["uw-octa-image"]


def test_run_case_without_inputs_json_uses_socket_folders(
    plugin: TaskPlugin, predictor: Predictor, test_image: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "input" / IMAGE_SOCKET
    folder.mkdir(parents=True)
    shutil.copy(test_image, folder / test_image.name)  # a png, as for local runs
    summary = run_case(plugin, predictor, tmp_path / "input", tmp_path / "output")
    assert summary["input_source"] == "socket folders"
    assert summary["case"] == test_image.name
    assert _files(tmp_path / "output") == _expected_outputs(plugin)


def test_run_case_reads_tif(plugin: TaskPlugin, predictor: Predictor, test_image: Path, tmp_path: Path) -> None:
    folder = tmp_path / "input" / IMAGE_SOCKET
    folder.mkdir(parents=True)
    sitk.WriteImage(sitk.ReadImage(str(test_image)), str(folder / "case.tif"))
    run_case(plugin, predictor, tmp_path / "input", tmp_path / "output")
    assert _files(tmp_path / "output") == _expected_outputs(plugin)


def test_run_case_opens_no_network_connection(
    plugin: TaskPlugin, predictor: Predictor, case_input: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the entrypoint opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    run_case(plugin, predictor, case_input, tmp_path / "output")
    assert _files(tmp_path / "output") == _expected_outputs(plugin)


# -- bad cases: one clear error naming the file, and no output -----------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[{not json", "is not valid JSON"),
        ('{"interface": {"slug": "uw-octa-image"}}', "must hold a JSON list"),
        ('[{"image": null}]', "entry 0 has no socket.slug (nor the legacy interface.slug)"),
        ('[{"socket": "uw-octa-image"}]', "entry 0 has no socket.slug (nor the legacy interface.slug)"),
        ('[{"interface": {"slug": "color-fundus-image", "relative_path": "images/color-fundus-image"}}]', "no handler"),
        ('[{"interface": {"slug": "uw-octa-image", "relative_path": "../etc"}}]', "invalid relative_path"),
    ],
    ids=["not-json", "not-a-list", "no-slug", "socket-not-an-object", "other-socket", "escaping-path"],
)
def test_malformed_inputs_json(
    case_input: Path, tmp_path: Path, content: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (case_input / INPUTS_JSON).write_text(content)
    output = tmp_path / "output"
    assert main(["--task", TASK, "--input", str(case_input), "--output", str(output), "--model", "unused"]) == 2
    err = capsys.readouterr().err
    assert message in err and str(case_input) in err
    assert err.count("error:") == 1
    _assert_no_output(output)


def test_two_files_in_a_socket_folder(case_input: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = case_input / IMAGE_SOCKET
    existing = next(folder.iterdir())
    shutil.copy(existing, folder / "second.mha")
    output = tmp_path / "output"
    assert main(["--task", TASK, "--input", str(case_input), "--output", str(output), "--model", "unused"]) == 2
    err = capsys.readouterr().err
    assert f"{folder} must hold exactly one image file" in err and "second.mha" in err
    _assert_no_output(output)


def test_empty_or_missing_socket_folder(case_input: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = case_input / IMAGE_SOCKET
    for path in folder.iterdir():
        path.unlink()
    output = tmp_path / "output"
    assert main(["--task", TASK, "--input", str(case_input), "--output", str(output), "--model", "unused"]) == 2
    assert f"{folder} must hold exactly one image file; it holds nothing" in capsys.readouterr().err
    folder.rmdir()
    assert main(["--task", TASK, "--input", str(case_input), "--output", str(output), "--model", "unused"]) == 2
    assert f"input socket folder {folder} is missing" in capsys.readouterr().err
    _assert_no_output(output)


def test_unsupported_extension(case_input: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = case_input / IMAGE_SOCKET
    existing = next(folder.iterdir())
    existing.rename(folder / "case.bmp")
    output = tmp_path / "output"
    assert main(["--task", TASK, "--input", str(case_input), "--output", str(output), "--model", "unused"]) == 2
    err = capsys.readouterr().err
    assert f"{folder / 'case.bmp'}: unsupported image format" in err
    _assert_no_output(output)


@pytest.mark.parametrize("suffix", [".mha", ".png"])
def test_truncated_image(
    plugin: TaskPlugin, predictor: Predictor, test_image: Path, case_input: Path, tmp_path: Path, suffix: str
) -> None:
    folder = case_input / IMAGE_SOCKET
    source = next(folder.iterdir()) if suffix == ".mha" else test_image
    data = source.read_bytes()
    for path in folder.iterdir():
        path.unlink()
    truncated = folder / f"truncated{suffix}"
    truncated.write_bytes(data[: len(data) // 2])
    output = tmp_path / "output"
    with pytest.raises(DataError, match=re.escape(f"cannot read {truncated}")):
        run_case(plugin, predictor, case_input, output)
    _assert_no_output(output)


def test_a_wrong_size_image_that_cannot_be_resampled_names_the_file(
    plugin: TaskPlugin, predictor: Predictor, case_input: Path, tmp_path: Path
) -> None:
    """An 8-bit image of another size is resampled (test_container_outputs); a 16-bit one is refused."""
    folder = case_input / IMAGE_SOCKET
    path = next(folder.iterdir())
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((512, 512), np.uint16)), str(path))
    with pytest.raises(DataError, match=re.escape(str(path))):
        run_case(plugin, predictor, case_input, tmp_path / "output")
    _assert_no_output(tmp_path / "output")


def test_refuses_to_add_to_a_non_empty_output_socket(
    plugin: TaskPlugin, predictor: Predictor, case_input: Path, tmp_path: Path
) -> None:
    stray = tmp_path / "output" / plugin.output_sockets[0].relative_path / "other.mha"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"x")
    with pytest.raises(EyegcError, match=re.escape("already holds other.mha")):
        run_case(plugin, predictor, case_input, tmp_path / "output")
    assert _files(tmp_path / "output") == [str(stray.relative_to(tmp_path / "output"))]


def test_no_task_is_a_clear_error(
    case_input: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("EYEGC_TASK", raising=False)
    assert main(["--input", str(case_input), "--output", str(tmp_path / "output")]) == 2
    assert "pass --task or set EYEGC_TASK" in capsys.readouterr().err


def test_bad_bundle_is_a_clear_error(case_input: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "output"
    assert main(["--task", TASK, "--input", str(case_input), "--output", str(output), "--model", str(tmp_path)]) == 2
    assert "checksums.sha256 is missing" in capsys.readouterr().err
    _assert_no_output(output)


# -- models -------------------------------------------------------------------------------------


def test_opt_ml_model_takes_precedence_over_baked_bundles(tmp_path: Path) -> None:
    model_dir, baked = tmp_path / "opt-ml-model", tmp_path / "bundles"
    for bundle in (baked / "00-a", baked / "01-b"):
        bundle.mkdir(parents=True)
        (bundle / "bundle.json").write_text("{}")
    assert default_model_dirs(model_dir, baked) == [baked / "00-a", baked / "01-b"]  # no /opt/ml/model
    model_dir.mkdir()
    assert default_model_dirs(model_dir, baked) == [baked / "00-a", baked / "01-b"]  # an empty one
    (model_dir / "run").mkdir()
    (model_dir / "run" / "bundle.json").write_text("{}")
    assert default_model_dirs(model_dir, baked) == [model_dir / "run"]  # bundle subfolders
    (model_dir / "bundle.json").write_text("{}")
    assert default_model_dirs(model_dir, baked) == [model_dir]  # a bundle extracted at the top
    with pytest.raises(BundleError, match="no model bundle found"):
        default_model_dirs(tmp_path / "none", tmp_path / "none-either")


def test_a_model_dir_without_a_recognisable_bundle_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    model_dir, baked = tmp_path / "opt-ml-model", tmp_path / "bundles"
    (baked / "00-a").mkdir(parents=True)
    (baked / "00-a" / "bundle.json").write_text("{}")
    nested = model_dir / "model" / "00-run"  # tar'ed one folder too deep
    nested.mkdir(parents=True)
    (nested / "bundle.json").write_text("{}")
    with pytest.raises(BundleError) as raised:
        default_model_dirs(model_dir, baked)
    assert str(raised.value).startswith(f"{model_dir} holds model but no model bundle at its top or one folder down")
    assert f"(bundle.json found deeper: {nested})" in str(raised.value)
    shutil.rmtree(model_dir / "model")
    (model_dir / "weights.pt").write_bytes(b"x")  # loose weights, no bundle
    with pytest.raises(BundleError, match=r"holds weights\.pt but no model bundle"):
        default_model_dirs(model_dir, baked)


def test_read_inputs_json_absent_is_none(tmp_path: Path) -> None:
    assert read_inputs_json(tmp_path) is None


# -- submit.sh without Docker: the same checks, in-process -----------------------------------------


@pytest.mark.slow
def test_submit_without_docker_runs_the_entrypoint_in_process(
    drac22_run: Path,
    drac22_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(submit, "docker_available", lambda: "no engine in this test")
    common = [TASK, "--model", str(drac22_run), "--data", str(drac22_data), "--work", str(tmp_path / "work")]
    # A mapping of the user's: the outputs go to other sockets, at other relative paths.
    assert submit.main([TASK, "--print-sockets"]) == 0
    mapping = json.loads(capsys.readouterr().out)
    for output in mapping["interfaces"][0]["outputs"]:
        output["slug"] = f"drac22-{output['slug']}"
        output["relative_path"] = f"images/drac22-{output['class_key']}-mask"
    sockets = tmp_path / "sockets.json"
    sockets.write_text(json.dumps(mapping))
    rc = submit.main([*common, "--max-cases", "2", "--out", str(tmp_path / "dist"), "--sockets", str(sockets)])
    out = capsys.readouterr().out
    assert rc == 1  # no engine and no --no-docker: the image was not built
    assert "docker: no Docker engine reachable (no engine in this test)" in out
    assert "Local leaderboard of the container" in out
    manifest = json.loads((tmp_path / "dist" / f"eyegc-{TASK}-manifest.json").read_text())
    assert manifest["test_run"]["mode"] == "in-process" and manifest["image"] is None
    assert manifest["sockets"] == mapping
    outputs = next((tmp_path / "work").glob("test-*/*/output"))
    written = sorted(str(p.relative_to(outputs)) for p in outputs.rglob("*") if p.is_file())
    assert written == [f"images/drac22-{k}-mask/{OUTPUT_NAME}" for k in ("irma", "npa", "nv")]
    assert [c["equal_to_eyegc_predict"] for c in manifest["test_run"]["cases"]] == [True, True]
    assert manifest["local_scores"]["leaderboard"]["mean_dsc"] is not None
    model_tar = Path(manifest["artifacts"]["model"]["path"])
    with tarfile.open(model_tar) as archive:
        names = archive.getnames()
    assert "./00-run/bundle.json" in names and "./00-run/checksums.sha256" in names
    assert submit.main([*common, "--no-docker", "--no-test", "--out", str(tmp_path / "dist2")]) == 0


def test_submit_prints_the_task_sockets_and_refuses_a_bad_mapping_before_building(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from eyegc.common.sockets import default_interfaces, interfaces_json

    assert submit.main(["goals-layers", "--print-sockets"]) == 0
    plugin = get_task("goals-layers")
    assert json.loads(capsys.readouterr().out) == interfaces_json(plugin, default_interfaces(plugin))
    mapping = interfaces_json(plugin, default_interfaces(plugin))
    mapping["interfaces"][0]["outputs"][0]["kind"] = "Heat Map"
    (tmp_path / "sockets.json").write_text(json.dumps(mapping))
    work = tmp_path / "work"
    args = ["goals-layers", "--demo", "--sockets", str(tmp_path / "sockets.json"), "--work", str(work)]
    assert submit.main([*args, "--out", str(tmp_path / "dist")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"submit: error: {tmp_path / 'sockets.json'}: interfaces[0]")
    assert "cannot go to a socket of kind Heat Map; use kind Segmentation or Image" in err
    assert not work.exists() and not (tmp_path / "dist").exists()  # nothing built, nothing trained


def test_submit_refuses_a_non_amd64_host_and_finds_a_gpu_by_nvidia_smi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build.check_host_architecture("x86_64")
    with pytest.raises(steps.SubmitError, match=r"this host is aarch64; grand-challenge\.org runs linux/amd64 images"):
        build.check_host_architecture("aarch64")
    monkeypatch.setattr(testrun.shutil, "which", lambda name: None)
    assert testrun.host_has_gpu() is False
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-1)'\n")
    fake.chmod(0o755)
    monkeypatch.setattr(testrun.shutil, "which", lambda name: str(fake))
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert testrun.host_has_gpu() is True


def test_a_base_torch_is_the_image_s_only_torch_or_the_build_stops(tmp_path: Path) -> None:
    wheel = tmp_path / "monai-1.6.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        metadata = 'Name: monai\nRequires-Dist: torch>=2.8.0\nRequires-Dist: torchio; extra == "all"\n'
        archive.writestr("monai-1.6.1.dist-info/METADATA", metadata)
    requirements = ["torch>=2.1", "monai<2,>=1.3"]
    assert build.base_torch_constraint(None, tmp_path, requirements) == ""  # no base torch: the wheelhouse's
    assert build.base_torch_constraint("2.13.0+cpu", tmp_path, requirements) == "torch==2.13.0\n"
    with pytest.raises(steps.SubmitError) as raised:
        build.base_torch_constraint("2.4.0", tmp_path, requirements)
    message = str(raised.value)
    assert "torch 2.4.0 does not meet torch>=2.8.0 (monai): pip would add a second torch" in message
    assert "pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime" in message


def _fake_tool(folder: Path, name: str, script: str) -> None:
    tool = folder / name
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(0o755)


def test_an_export_that_would_fill_the_disk_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    free = 1_000_000_000
    monkeypatch.setattr(export.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 * free, 9 * free, free))
    export.check_export_space(tmp_path, 1_500_000_000)  # needs 0.5 * 1.5 GB + 0.2 GB = 0.95 GB
    with pytest.raises(steps.SubmitError) as raised:
        export.check_export_space(tmp_path, 2_000_000_000)
    assert str(raised.value) == (
        f"{tmp_path} has 1.0 GB free; the image's archive needs about 1.2 GB: free some space there or pass "
        "--out DIR on a disk with room (the image itself is built and kept)"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_failed_image_export_names_gzip_s_reason_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_tool(bin_dir, "docker", "head -c 100000 /dev/zero\n")
    _fake_tool(bin_dir, "gzip", "cat > /dev/null\necho 'gzip: stdout: No space left on device' >&2\nexit 1\n")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    out = tmp_path / "dist"
    out.mkdir()
    with pytest.raises(steps.SubmitError) as raised:
        export._save_image("eyegc-x", out / "eyegc-x.tar.gz")
    assert str(raised.value) == (
        f"docker save eyegc-x | gzip failed (exit 0/1): gzip: stdout: No space left on device; "
        f"nothing was left in {out}"
    )
    assert list(out.iterdir()) == []
    _fake_tool(bin_dir, "gzip", "cat\n")  # a working pipe: the archive is renamed into place
    export._save_image("eyegc-x", out / "eyegc-x.tar.gz")
    assert [p.name for p in out.iterdir()] == ["eyegc-x.tar.gz"]
    assert (out / "eyegc-x.tar.gz").stat().st_size == 100000


def test_a_build_removes_the_eyegc_builds_its_tags_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    # Two prune passes find something (an old build goes only once its old shim-wrapped child is
    # gone); two dangling dependency stages are listed, one of them the current wheelhouse's.
    script = f"""echo "$@" >> {calls}
n=$(grep -c prune {calls})
case "$1 $2" in
  "image prune") if [ "$n" -le 2 ]; then echo "Total reclaimed space: ${{n}}.5GB"
                 else echo "Total reclaimed space: 0B"; fi ;;
  "images -q") printf 'aaa111\\nbbb222\\nccc333\\n' ;;
  "image inspect") printf 'key-now\\nkey-old\\n\\n' ;;
esac
"""
    _fake_tool(bin_dir, "docker", script)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    build.remove_untagged_builds("key-now")
    said = calls.read_text().splitlines()
    assert said[:3] == ["image prune --force --filter label=org.eyegc.sockets"] * 3
    assert said[3] == "images -q --filter dangling=true --filter label=org.eyegc.deps-stage"
    assert said[4] == 'image inspect -f {{index .Config.Labels "org.eyegc.deps-stage"}} aaa111 bbb222 ccc333'
    assert said[5:] == ["image rm bbb222 ccc333"]  # the current wheelhouse's stage is the next build's cache
    out = capsys.readouterr().out
    assert "removed the earlier eyegc builds that no tag names any more (1.5GB + 2.5GB)" in out
    assert "removed 2 dependency stage(s) of earlier wheelhouses or bases" in out
    calls.unlink()
    _fake_tool(bin_dir, "docker", f'echo "$@" >> {calls}\necho "Total reclaimed space: 0B"\n')
    build.remove_untagged_builds()  # the shim image's build: no dependency stage of its own
    assert calls.read_text().splitlines() == ["image prune --force --filter label=org.eyegc.sockets"]
    assert "removed" not in capsys.readouterr().out


def test_the_dependency_stage_is_labelled_after_its_install(tmp_path: Path) -> None:
    dockerfile = (Path(__file__).resolve().parents[1] / "containers" / "Dockerfile").read_text()
    deps_stage = dockerfile[dockerfile.index("AS deps") : dockerfile.index("FROM", dockerfile.index("AS deps"))]
    assert (
        deps_stage.index("pip install")
        < deps_stage.index("ARG DEPS_KEY")
        < deps_stage.index(f"LABEL {build.DEPS_STAGE_LABEL}=${{DEPS_KEY}}")
    )
    deps = tmp_path / "wheelhouse" / "deps"
    deps.mkdir(parents=True)
    (deps / "torch-2.13.0-cp311-none-linux_x86_64.whl").write_bytes(b"x" * 10)
    (deps / build.BASE_CONSTRAINTS).write_text("")
    key = build._deps_key(tmp_path, "eyegc-base:bookworm")
    assert key == build._deps_key(tmp_path, "eyegc-base:bookworm") and len(key) == 16
    assert key != build._deps_key(tmp_path, "eyegc-base-torch:bookworm")
    (deps / build.BASE_CONSTRAINTS).write_text("torch==2.13.0\n")
    assert key != build._deps_key(tmp_path, "eyegc-base:bookworm")


def test_an_interrupted_export_leaves_no_partial_archive_and_no_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_tool(bin_dir, "docker", "exec cat /dev/zero\n")  # a save that never ends
    _fake_tool(bin_dir, "gzip", "exec cat\n")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    started: list[export.subprocess.Popen] = []
    real_popen = export.subprocess.Popen

    def recording_popen(*args: object, **kwargs: object) -> export.subprocess.Popen:
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    def interrupted(self: export.subprocess.Popen, *args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(export.subprocess, "Popen", recording_popen)
    monkeypatch.setattr(real_popen, "communicate", interrupted)
    out = tmp_path / "dist"
    out.mkdir()
    with pytest.raises(KeyboardInterrupt):
        export._save_image("eyegc-x", out / "eyegc-x.tar.gz")
    assert list(out.iterdir()) == []
    assert len(started) == 2 and all(process.returncode is not None for process in started)
