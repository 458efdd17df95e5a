"""``eyegc gc check``: gcapi's real client against a local HTTPS server answering with the platform's
JSON shapes (gcapi's models define them; gcapi refuses plain http), so no test touches the network."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler
from importlib.metadata import version
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

import pytest
from eyegc.common import platform
from eyegc.common.cli import main
from eyegc.common.errors import EyegcError
from eyegc.common.registry import get_task
from eyegc.common.sockets import SOCKETS_LABEL, Interface, default_interfaces, interfaces_json
from https_server import send_json, serve_https

pytest.importorskip("gcapi")


def _socket(slug: str, relative_path: str, kind: str, super_kind: str = "Image", pk: int = 1) -> dict[str, Any]:
    """A socket as the platform's API serialises it (gcapi.models.ComponentInterface)."""
    return {
        "title": slug.replace("-", " ").title(),
        "description": "",
        "slug": slug,
        "kind": kind,
        "pk": pk,
        "default_value": None,
        "super_kind": super_kind,
        "relative_path": relative_path,
        "overlay_segments": None,
        "look_up_table": None,
    }


def _algorithm(slug: str, inputs: list[dict], outputs: list[dict]) -> dict[str, Any]:
    """An algorithm as the API serialises it (gcapi.models.Algorithm)."""
    return {
        "api_url": f"https://127.0.0.1/api/v1/algorithms/{slug}/",
        "url": f"https://127.0.0.1/algorithms/{slug}/",
        "description": None,
        "pk": f"00000000-0000-0000-0000-{len(slug):012d}",
        "title": slug,
        "logo": "",
        "slug": slug,
        "average_duration": None,
        "interfaces": [{"inputs": inputs, "outputs": outputs}],
    }


FUNDUS = _socket("color-fundus-image", "images/color-fundus", "Image")
VESSELS = _socket("binary-vessel-segmentation", "images/binary-vessel-segmentation", "Segmentation", pk=2)
PROBABILITY = _socket("vessel-probability", "images/vessel-probability", "Heat Map", pk=3)
ALGORITHMS = {
    "drive-ok": _algorithm("drive-ok", [FUNDUS], [VESSELS, PROBABILITY]),
    "drive-mismatched": _algorithm(
        "drive-mismatched",
        [FUNDUS],
        [{**VESSELS, "relative_path": "images/vessels", "kind": "Image"}, PROBABILITY],
    ),
    "drive-more-outputs": _algorithm(
        "drive-more-outputs",
        [FUNDUS],
        [VESSELS, PROBABILITY, _socket("vessel-count", "vessel-count.json", "Integer", "Value", pk=4)],
    ),
}


class _PlatformHandler(BaseHTTPRequestHandler):
    seen_tokens: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        url = urlparse(self.path)
        self.seen_tokens.append(self.headers.get("Authorization", ""))
        if url.path == "/api/v1/gcapi/":
            body: Any = {"latest_version": version("gcapi"), "lowest_supported_version": "0.1.0"}
        elif url.path == "/api/v1/algorithms/":
            slug = parse_qs(url.query).get("slug", [""])[0]
            results = [ALGORITHMS[slug]] if slug in ALGORITHMS else []
            body = {"count": len(results), "next": None, "previous": None, "results": results}
        else:
            self.send_error(404)
            return
        send_json(self, body)

    def log_message(self, *args: object) -> None:  # quiet
        pass


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local HTTPS stand-in for grand-challenge.org's API (self-signed certificate)."""
    with serve_https(_PlatformHandler, tmp_path_factory.mktemp("tls")) as url:
        yield url


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("GRAND_CHALLENGE_TOKEN", "test-token-123")
    monkeypatch.delenv("GRAND_CHALLENGE_AUTHORIZATION", raising=False)
    return "test-token-123"


def _check(api_url: str, *args: str) -> int:
    return main(["gc", "check", *args, "--api-url", api_url, "--insecure"])


def test_a_matching_algorithm_passes(api_url: str, token: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _check(api_url, "drive-ok", "--task", "drive-vessels") == 0
    out = capsys.readouterr().out
    assert "ok: the default sockets of drive-vessels (drive-vessels) serves algorithm drive-ok" in out
    assert _PlatformHandler.seen_tokens[-1] == f"BEARER {token}"  # gcapi's spelling


def test_a_mismatched_socket_is_named(api_url: str, token: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _check(api_url, "drive-mismatched", "--task", "drive-vessels") == 2
    captured = capsys.readouterr()
    mismatches = [line for line in captured.out.splitlines() if line.startswith("mismatch: ")]
    assert mismatches == [
        "mismatch: socket set with inputs ['color-fundus-image']: binary-vessel-segmentation: relative_path is "
        "'images/vessels' on the platform, 'images/binary-vessel-segmentation' in the image",
        "mismatch: socket set with inputs ['color-fundus-image']: binary-vessel-segmentation: kind is 'Image' on "
        "the platform, 'Segmentation' in the image",
    ]
    assert captured.err.strip().splitlines() == [
        "eyegc: error: 2 socket mismatch(es) between the default sockets of drive-vessels and algorithm "
        "drive-mismatched: map the sockets with ./submit.sh --sockets, or change the algorithm's sockets on the "
        "platform"
    ]


def test_an_output_the_platform_expects_and_the_image_lacks(
    api_url: str, token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _check(api_url, "drive-more-outputs", "--task", "drive-vessels") == 2
    assert "the platform expects output vessel-count (vessel-count.json), which the image does not write" in (
        capsys.readouterr().out
    )


def test_a_platform_set_the_image_cannot_serve_is_a_mismatch() -> None:
    (default,) = default_interfaces(get_task("drive-vessels"))
    other = Interface((replace(default.inputs[0], slug="oct-b-scan"),), default.outputs)
    comparison = platform.compare_interfaces([default], [default, other])
    assert comparison.problems == (
        "the algorithm's socket set with inputs ['oct-b-scan'] has no counterpart in the image: jobs given those "
        "inputs would fail",
    )


def test_a_sockets_file_that_fixes_the_mismatch(
    api_url: str, token: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin = get_task("drive-vessels")
    document = interfaces_json(plugin, default_interfaces(plugin))
    document["interfaces"][0]["outputs"][0].update(relative_path="images/vessels", kind="Image")
    (tmp_path / "sockets.json").write_text(json.dumps(document))
    assert (
        _check(api_url, "drive-mismatched", "--task", "drive-vessels", "--sockets", str(tmp_path / "sockets.json")) == 0
    )
    assert "ok: " in capsys.readouterr().out


def test_an_unknown_algorithm_and_no_token_are_one_line(
    api_url: str, token: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _check(api_url, "no-such-algorithm", "--task", "drive-vessels") == 2
    assert capsys.readouterr().err.strip() == (
        f"eyegc: error: no algorithm 'no-such-algorithm' at {api_url} that your token can see"
    )
    monkeypatch.delenv("GRAND_CHALLENGE_TOKEN")
    assert _check(api_url, "drive-ok", "--task", "drive-vessels") == 2
    assert "no API token: set GRAND_CHALLENGE_TOKEN" in capsys.readouterr().err


def _saved_image(path: Path, labels: dict[str, str]) -> Path:
    """A minimal `docker save | gzip` archive: manifest.json, the image config with its labels, one layer."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": labels}}).encode()
    manifest = json.dumps([{"Config": "config.json", "RepoTags": ["eyegc-drive:latest"], "Layers": ["l.tar"]}])
    with gzip.open(path, "wb") as raw, tarfile.open(fileobj=raw, mode="w") as archive:
        for name, data in (
            ("l.tar", os.urandom(200_000)),
            ("config.json", config),
            ("manifest.json", manifest.encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_an_exported_image_is_checked_by_its_label_and_size(
    api_url: str, token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin = get_task("drive-vessels")
    label = json.dumps(interfaces_json(plugin, default_interfaces(plugin)))
    image = _saved_image(tmp_path / "eyegc-drive.tar.gz", {SOCKETS_LABEL: label})
    assert _check(api_url, "drive-ok", "--image", str(image)) == 0
    assert f"ok: {image} (drive-vessels)" in capsys.readouterr().out
    monkeypatch.setattr(platform, "IMAGE_SIZE_LIMIT", 100_000)  # the image is ~200 kB
    assert _check(api_url, "drive-ok", "--image", str(image)) == 2
    assert "the platform takes images up to" in capsys.readouterr().err
    monkeypatch.undo()
    plain = tmp_path / "saved-without-gzip.tar.gz"  # `docker save -o x.tar.gz` writes a plain tar
    with gzip.open(image) as source:
        plain.write_bytes(source.read())
    assert platform.image_sockets(plain)["task"] == "drive-vessels"
    bare = _saved_image(tmp_path / "other.tar.gz", {})
    with pytest.raises(EyegcError, match=f"has no {SOCKETS_LABEL} label: build the image with ./submit.sh"):
        platform.image_sockets(bare)
