"""The shared plugin contract, applied to DRIVE vessels."""

from __future__ import annotations

from contract import TaskPluginContract


class TestDriveVesselsContract(TaskPluginContract):
    task = "drive-vessels"
