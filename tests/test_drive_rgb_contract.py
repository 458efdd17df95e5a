"""The shared plugin contract, applied to the colour variant of DRIVE vessels."""

from __future__ import annotations

from contract import TaskPluginContract


class TestDriveVesselsRgbContract(TaskPluginContract):
    task = "drive-vessels-rgb"
