"""The shared plugin contract, applied to idrid-grading."""

from __future__ import annotations

from contract import TaskPluginContract


class TestIdridGradingContract(TaskPluginContract):
    task = "idrid-grading"
