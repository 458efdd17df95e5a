"""Synthetic data sets in a task's official layout (the embedded demo and test data)."""

from __future__ import annotations

from pathlib import Path

from eyegc.common.errors import EyegcError
from eyegc.common.imageio import atomic_output_dir
from eyegc.common.options import SAMPLE_DATA_OPTIONS, check_options
from eyegc.common.outputs import OutputKind, check_output_path
from eyegc.common.plugin import TaskPlugin

__all__ = ["write_sample_data"]


def write_sample_data(
    plugin: TaskPlugin,
    out: Path,
    cases: int = 24,
    test_cases: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write ``cases`` training and ``test_cases`` (default ``cases // 3``, at least 3) testing cases.

    The folder appears only once complete.
    """
    check_options(SAMPLE_DATA_OPTIONS, {"cases": cases, "test_cases": test_cases, "seed": seed})
    test_cases = max(3, cases // 3) if test_cases is None else test_cases
    check_output_path(Path(out), "OUT", OutputKind.FOLDER)
    with atomic_output_dir(Path(out), overwrite=overwrite) as tmp:
        try:
            plugin.make_sample_data(tmp, cases=cases, test_cases=test_cases, seed=seed)
        except ValueError as exc:  # the generator's own limits, e.g. more cases than names
            raise EyegcError(f"{plugin.name} sample data: {exc}") from None
    return Path(out)
