"""The shared plugin contract, applied to goals-glaucoma."""

from __future__ import annotations

from contract import TaskPluginContract


class TestGoalsGlaucomaContract(TaskPluginContract):
    task = "goals-glaucoma"
