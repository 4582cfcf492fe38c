"""Tasks: each owns its data, prompt, answer extraction, verifier, reward and metric.

Importing this package registers every task in `tasks.base.TASKS`: each module of this folder that
registers one (`@TASKS.register("name")` on a `Task` subclass) is found and imported, so adding a task
is adding one file. The contract a task fulfils is `tasks.base.Task`.
"""

from tasks.base import TASKS, Example, RewardOutput, Scored, Task, get_task  # noqa: F401

TASK_MARKER = "@TASKS.register("


def discover_tasks() -> list[str]:
    """Import every task module of the package (again after a folder is added to `tasks.__path__`)."""
    from harness.registry import discover

    return discover(__name__, TASK_MARKER)


discover_tasks()
