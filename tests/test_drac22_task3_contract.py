"""The shared plugin contract, applied to drac22-task3."""

from __future__ import annotations

from contract import TaskPluginContract


class TestDrac22Task3Contract(TaskPluginContract):
    task = "drac22-task3"
