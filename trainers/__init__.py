"""RL trainers: one shared loop (loop.py), GRPO's pure pieces (grpo.py), shared masking helpers
(estimators.py), and one self-contained file per method that registers itself in `METHODS`.

Importing this package registers every method: each module of this folder that calls
`register(Method(...))` is found and imported, so adding a method is adding one file (see
trainers/methods.py for what a method is). `train` and `TrainConfig` live in trainers.loop (imported
lazily: listing methods does not need accelerate).
"""

from trainers.methods import METHOD_MARKER, METHODS, Method, get_method  # noqa: F401


def discover_methods() -> list[str]:
    """Import every method module of the package (again after a folder is added to `trainers.__path__`)."""
    from harness.registry import discover

    return discover(__name__, METHOD_MARKER)


discover_methods()
