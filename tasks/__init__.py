"""Tasks: each owns its data, prompt, answer extraction, verifier, reward and metric.

Importing this package registers every built-in task in `tasks.base.TASKS`.
"""

from tasks.base import TASKS, Example, RewardOutput, Scored, Task, get_task  # noqa: F401

_BUILTIN = ["gsm8k", "hendrycks_math", "humaneval", "mbpp", "arith", "minicode", "shapes", "geneval"]


def _load_builtins() -> None:
    import importlib

    for mod in _BUILTIN:
        try:
            importlib.import_module(f"tasks.{mod}")
        except ModuleNotFoundError as e:  # a task module not written yet must not break the others
            if e.name != f"tasks.{mod}":
                raise


_load_builtins()
