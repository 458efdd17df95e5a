"""A challenge in one folder: a toy plugin package is written into a temporary folder and installed
there (its code and a ``.dist-info`` with an ``eyegc.tasks`` entry point, on ``sys.path``, which is
all that an installed distribution is to ``importlib.metadata``). With no edit to ``common/`` it is
registered, listed and passes the whole shared contract: reading, metric, round trips, clear errors,
training, the bundle and prediction."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from contract import TaskPluginContract
from eyegc.common import registry
from eyegc.common.cli import main
from installed import install_entry_points

TOY_PLUGIN = """
from eyegc.common.folder_task import FolderSegmentationTask
from eyegc.common.plugin import ClassSpec

toy_discs = FolderSegmentationTask(
    name="toy-discs",
    challenge="toy",
    title="Toy discs: two sizes of bright disc on noise",
    classes=(ClassSpec("small", "Small discs"), ClassSpec("large", "Large discs")),
    image_size=(256, 256),
)
"""


@pytest.fixture(scope="module", autouse=True)
def toy_installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    site = tmp_path_factory.mktemp("site-packages")
    (site / "eyegc_toy").mkdir()
    (site / "eyegc_toy" / "__init__.py").write_text(TOY_PLUGIN)
    install_entry_points(site, "eyegc_toy", {"eyegc.tasks": {"toy-discs": "eyegc_toy:toy_discs"}})
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(site))
        yield site


class TestToyPluginContract(TaskPluginContract):
    task = "toy-discs"


def test_the_toy_task_is_listed_and_common_never_names_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert "toy-discs" in registry.available_tasks()
    assert main(["list"]) == 0
    assert "toy-discs" in capsys.readouterr().out
    common = Path(__file__).parents[1] / "common"
    assert not [p.name for p in common.rglob("*.py") if "toy-discs" in p.read_text()]
