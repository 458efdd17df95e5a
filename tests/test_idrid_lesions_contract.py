"""The shared plugin contract, applied to idrid-lesions."""

from __future__ import annotations

from contract import TaskPluginContract


class TestIdridLesionsContract(TaskPluginContract):
    task = "idrid-lesions"
