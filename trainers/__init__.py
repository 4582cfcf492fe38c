"""RL trainers: one shared loop (loop.py), GRPO's pure pieces (grpo.py), masking schemes (estimators.py),
and one small file per method that registers itself in `METHODS`.

Importing this package registers every built-in method: maskgrpo, diffu-grpo, unigrpo, coupled-grpo,
tracerl, wd1, spg. `train` and `TrainConfig` live in trainers.loop (imported lazily: listing methods
does not need accelerate).
"""

from trainers.methods import METHODS, Method, get_method  # noqa: F401

_BUILTIN = ["maskgrpo", "diffu_grpo", "unigrpo", "coupled_grpo", "tracerl", "wd1", "spg"]


def _load_builtins() -> None:
    import importlib

    for mod in _BUILTIN:
        importlib.import_module(f"trainers.{mod}")


_load_builtins()
