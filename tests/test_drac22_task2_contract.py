"""The shared plugin contract, applied to drac22-task2."""

from __future__ import annotations

from contract import TaskPluginContract


class TestDrac22Task2Contract(TaskPluginContract):
    task = "drac22-task2"
