"""The shared plugin contract, applied to DRAC22 Task 1."""

from __future__ import annotations

from typing import ClassVar

from contract import TaskPluginContract


class TestDrac22Task1Contract(TaskPluginContract):
    task = "drac22-task1"
    submission_options: ClassVar[dict[str, str]] = {"team": "Contract_Team"}
