"""The shared plugin contract, applied to goals-layers."""

from __future__ import annotations

from contract import TaskPluginContract


class TestGoalsLayersContract(TaskPluginContract):
    task = "goals-layers"
