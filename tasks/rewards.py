"""Reward functions and their weighted combination: the one reward interface of every task (issue 22).

A reward function is named and scores completions of examples with one float each:

    RewardFn(name, score=lambda examples, completions, checks: [...], doc="...")

`score` is batched (a CLIP model scores a batch at once); `checks` are the task's `Check`s of the same
completions (tasks/base.py: the verifier's verdict plus the facts it found, e.g. the fraction of tests a
program passed), so a task's own rewards read what its verifier computed instead of running the code again.
A reward that needs model weights has `load(path, device) -> score` instead of `score`, and `model` says
what the path must hold; its weights load from a local folder only (`--reward-model NAME=PATH`).

A run chooses rewards and weights (`harness run ... --reward correct=1.0,format=0.1`); the combination is

    total = sum_i w_i * r_i,   terms = {name_i: w_i * r_i}   (in the order the weights were given)

and every task has a documented default (`Task.default_rewards`) whose total is exactly the reward it had
before rewards were composable (its terms were already sums of named parts). Rewards shape training only:
the metrics that results and leaderboards report come from the task's verifier, never from a reward.

This module imports nothing from tasks/ (tasks/base.py builds on it).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Scorer = Callable[[Sequence[Any], Sequence[Any], Sequence[Any]], Sequence[float]]  # (examples, completions, checks)


class RewardError(ValueError):
    """A reward that cannot be used as asked (unknown name, missing weights or package); one line."""


@dataclass(frozen=True)
class RewardFn:
    name: str
    doc: str  # one line: what it scores and on what scale
    score: Scorer | None = None
    load: Callable[[str, str], Scorer] | None = None  # (local path, device) -> scorer, for model-backed rewards
    model: str = ""  # what `--reward-model NAME=PATH` must point to (model-backed rewards)
    requires: tuple[str, str] | None = None  # (module, pip package) the reward imports, checked before any work


def per_item(name: str, fn: Callable[[Any, Any, Any], float], doc: str) -> RewardFn:
    """A reward from a function of one (example, completion, check)."""
    return RewardFn(name, doc, score=lambda exs, comps, checks: [fn(e, c, k) for e, c, k in zip(exs, comps, checks)])


def parse_weights(value: str | Mapping | None, flag: str = "--reward") -> dict[str, float]:
    """`correct=1.0,format=0.1` (or a mapping) -> {"correct": 1.0, "format": 0.1}, in the order given."""
    if value is None or value == "" or value == {}:
        return {}
    items = value.items() if isinstance(value, Mapping) else _pairs(str(value), flag, "NAME=WEIGHT")
    out: dict[str, float] = {}
    for name, w in items:
        try:
            weight = float(w)
        except (TypeError, ValueError):
            raise RewardError(f"{flag} {name}={w!r}: the weight must be a number") from None
        if weight != weight or weight in (float("inf"), float("-inf")):
            raise RewardError(f"{flag} {name}={w}: the weight must be a finite number")
        out[name] = weight
    return out


def parse_models(value: str | Sequence[str] | Mapping | None, flag: str = "--reward-model") -> dict[str, str]:
    """`clip=/models/clip,imagereward=/models/ImageReward.pt` (a string, a list of them, or a mapping)."""
    if not value:
        return {}
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    texts = [value] if isinstance(value, str) else list(value)
    out: dict[str, str] = {}
    for text in texts:
        out.update(_pairs(text, flag, "NAME=PATH"))
    return out


def _pairs(text: str, flag: str, form: str) -> list[tuple[str, str]]:
    out, seen = [], set()
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        name, eq, val = item.partition("=")
        name = name.strip()
        if not eq or not name or not val.strip():
            raise RewardError(f"{flag} expects {form}[,{form}...], got {item!r}")
        if name in seen:
            raise RewardError(f"{flag} names {name!r} twice")
        seen.add(name)
        out.append((name, val.strip()))
    return out


def describe(available: Mapping[str, RewardFn]) -> str:
    return ", ".join(available)


def check_choice(task: str, available: Mapping[str, RewardFn], weights: Mapping[str, float],
                 models: Mapping[str, str]) -> None:
    """Names, weights and model paths, checked without loading anything (one-line RewardErrors)."""
    unknown = [n for n in weights if n not in available]
    if unknown:
        raise RewardError(f"--reward {', '.join(unknown)}: not a reward of task {task!r}; available: "
                          f"{describe(available)}")
    if weights and not any(w != 0 for w in weights.values()):
        raise RewardError("--reward: every weight is 0; give at least one reward a non-zero weight")
    stray = [n for n in models if n not in available or available[n].load is None]
    if stray:
        backed = [n for n, f in available.items() if f.load is not None]
        raise RewardError(f"--reward-model {', '.join(stray)}: not a model-backed reward of task {task!r}"
                          f" (model-backed: {', '.join(backed) or 'none'})")
    for name in weights:
        fn = available[name]
        if fn.requires is not None and not _importable(fn.requires[0]):
            raise RewardError(f"the {name} reward needs its package: pip install {fn.requires[1]}")
        if fn.load is None:
            continue
        path = models.get(name)
        if not path:
            raise RewardError(f"the {name} reward needs local weights: pass --reward-model {name}=PATH ({fn.model})")
        if not Path(path).exists():
            raise RewardError(f"--reward-model {name}={path}: no such file or folder ({fn.model})")


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


class Rewards:
    """The rewards of one run with their weights; `__call__` gives each completion's (total, terms, raw)."""

    def __init__(self, task: str, available: Mapping[str, RewardFn], weights: Mapping[str, float],
                 models: Mapping[str, str] | None = None, device: str = "cpu"):
        models = dict(models or {})
        check_choice(task, available, weights, models)
        self.weights = dict(weights)
        self.models = {n: p for n, p in models.items() if n in self.weights}
        self.scorers: dict[str, Scorer] = {}
        for name in self.weights:
            fn = available[name]
            self.scorers[name] = fn.score if fn.load is None else fn.load(self.models[name], device)

    def __call__(self, examples: Sequence[Any], completions: Sequence[Any], checks: Sequence[Any]
                 ) -> list[tuple[float, dict[str, float], dict[str, float]]]:
        raw = {}
        for name, scorer in self.scorers.items():
            values = [float(v) for v in scorer(examples, completions, checks)]
            if len(values) != len(completions):
                raise RuntimeError(f"the {name} reward gave {len(values)} values for {len(completions)} completions")
            raw[name] = values
        out = []
        for i in range(len(completions)):
            terms = {name: w * raw[name][i] for name, w in self.weights.items()}
            out.append((sum(terms.values()), terms, {name: raw[name][i] for name in self.weights}))
        return out

    def record(self) -> dict:
        return {"weights": dict(self.weights), "models": dict(self.models)}

    def __repr__(self) -> str:
        return f"Rewards({json.dumps(self.weights)})"
