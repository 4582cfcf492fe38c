"""The seams of issue 16: a new method or task is one file, the run spec, the one decoder constructor,
the declared task contract."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest
from fakes import EXAMPLES, TINY, TinyBert

import tasks
import trainers
from harness.run_spec import RunSpec
from harness.sampling import DecodeConfig
from tasks.base import TASKS, Task

ROOT = Path(__file__).resolve().parents[1]

TOY_METHOD = '''
"""A toy method: advantages r - mean, the whole completion hidden, the shared GRPO loss."""
from dataclasses import dataclass

import torch

from trainers.estimators import make_view
from trainers.grpo import MethodConfig, centered_advantages
from trainers.methods import Method, register


@dataclass
class ToyConfig(MethodConfig):
    mu: int = 2


def advantages(rewards, cfg):
    return centered_advantages(rewards)


def views(j, batch, cfg, gen):
    everything = torch.ones_like(batch.valid)
    return [make_view(batch, hide_completion=everything, score=everything)]


register(Method("toy-method", ToyConfig, advantages, views, summary="a test's one-file method"))
'''

TOY_TASK = '''
from tasks.base import TASKS, Example, Task
from tasks.rewards import per_item


@TASKS.register("toy-task")
class ToyFileTask(Task):
    name = "toy-task"
    embedded = True
    gen_defaults = {"gen_length": 8, "block_length": 4, "steps": 4}

    def load(self, data=None, split="test", limit=None):
        return [Example(id=i, prompt="abc", reference="a", solution="a") for i in range(3)][:limit]

    def extract(self, completion):
        return completion

    def verify(self, completion, reference):
        return completion == reference

    default_rewards = {"exact": 1.0}

    def reward_functions(self):
        return {"exact": per_item("exact", lambda ex, c, k: float(bool(k.verdict)), "1 when exactly right")}
'''


@pytest.fixture
def plugin_dir(tmp_path):
    """A folder added to a package's __path__ (as a new file in tasks/ or trainers/ would be), removed after."""
    added = []

    def add(package, name: str, source: str) -> Path:
        (tmp_path / f"{name}.py").write_text(source)
        package.__path__.append(str(tmp_path))
        added.append((package, name))
        return tmp_path

    yield add
    for package, name in added:
        package.__path__.remove(str(tmp_path))
        sys.modules.pop(f"{package.__name__}.{name}", None)


def test_a_new_method_is_one_file_found_by_discovery_and_trained_by_the_loop(plugin_dir, one_thread):
    from trainers.loop import TrainConfig, train

    plugin_dir(trainers, "toy_method", TOY_METHOD)
    try:
        assert "toy_method" in trainers.discover_methods()
        assert "toy-method" in trainers.METHODS.names()
        model = TinyBert(seed=0)
        from fakes import ToyTask

        result = train(model, ToyTask(), "toy-method", EXAMPLES, cfg=TrainConfig(**TINY), seed=0, progress=False)
        assert result.steps == 2 and result.config["method"] == "toy-method"
    finally:
        trainers.METHODS._items.pop("toy-method", None)


def test_a_new_task_is_one_file_found_by_discovery_and_evaluated(plugin_dir):
    from harness.evaluation import evaluate
    from harness.models import GoldModel

    plugin_dir(tasks, "toy_task", TOY_TASK)
    try:
        assert "toy_task" in tasks.discover_tasks()
        task = tasks.get_task("toy-task")
        out = evaluate(task, GoldModel(), task.load())
        assert out.metrics["accuracy"] == 1.0
    finally:
        TASKS._items.pop("toy-task", None)


def test_discovery_skips_helper_modules_that_register_nothing():
    found = tasks.discover_tasks()
    assert "math_worker" not in found and "base" not in found and "geneval_rules" not in found
    assert set(found) == {"arith", "geneval", "gsm8k", "image_prompts", "math500", "humaneval", "mbpp", "minicode", "shapes"}
    assert "tasks.math_worker" not in sys.modules  # started as a script only, never imported


def test_every_task_attribute_the_harness_reads_is_declared_on_task():
    """No getattr/hasattr probing of tasks: every `task.X` the harness and trainers read exists on Task."""
    read: set[str] = set()
    for folder in ("harness", "trainers"):
        for p in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(p.read_text())):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "task":
                    read.add(node.attr)
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr", "hasattr") and \
                        node.args and getattr(node.args[0], "id", None) in ("task", "t"):
                    pytest.fail(f"{p}: {ast.unparse(node)} probes a task; declare the attribute on Task")
    read.discard("isidentifier")  # harness/cli.py's `task` in _data_per_task is a name (a str), not a Task
    missing = sorted(a for a in read if not hasattr(Task, a) and a not in Task.__annotations__)
    assert not missing, f"read but not declared on Task: {missing}"


def test_decode_config_from_task_takes_defaults_then_every_given_override():
    class T:
        gen_defaults = {"gen_length": 64, "block_length": 32, "steps": 32}

    d = DecodeConfig.from_task(T(), steps=16, temperature=None, alg="origin")
    assert (d.gen_length, d.block_length, d.steps, d.temperature, d.alg) == (64, 32, 16, 0.0, "origin")
    with pytest.raises(ValueError, match="finite"):
        DecodeConfig.from_task(T(), temperature=float("nan"))


def test_run_spec_from_a_file_and_flags_over_it(tmp_path):
    import argparse

    f = tmp_path / "spec.json"
    f.write_text(json.dumps({"task": "arith", "method": "maskgrpo", "steps": 3, "overrides": {"lr": 1e-4}}))
    args = argparse.Namespace(config=str(f), task=None, method=None, model=None, device=None, dtype=None, seed=2,
                              steps=None, data=None, train_data=None, limit=None, eval_split=None,
                              checkpoint_every=None, out=None, resume=False, no_progress=True, set=["mu=2"])
    spec = RunSpec.from_args(args)
    assert (spec.task, spec.method, spec.steps, spec.seed, spec.progress) == ("arith", "maskgrpo", 3, 2, False)
    assert spec.overrides == {"lr": 1e-4, "mu": 2} and spec.model == "tiny"
    toml = tmp_path / "spec.toml"
    toml.write_text('task = "arith"\nmethod = "none"\nlimit = 5\n')
    assert RunSpec.from_file(toml).limit == 5
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"task": "arith", "lr": 1}))
    with pytest.raises(ValueError, match="unknown run setting"):
        RunSpec.from_file(bad)


def test_a_run_records_its_spec_and_replays_from_its_summary(tmp_path):
    from harness.cli import main

    first = tmp_path / "first"
    assert main(["run", "--task", "arith", "--method", "none", "--model", "gold", "--limit", "4", "--seed", "3",
                 "--out", str(first)]) == 0
    summary = json.loads((first / "summary.json").read_text())
    assert summary["run_spec"]["seed"] == 3 and summary["run_spec"]["limit"] == 4
    assert summary["device"] == "cpu"  # where the model ran, beside the machine's `hardware`
    spec = RunSpec.from_file(first / "summary.json")
    assert (spec.task, spec.method, spec.model, spec.seed, spec.limit) == ("arith", "none", "gold", 3, 4)
    again = tmp_path / "again"
    assert main(["run", "--config", str(first / "summary.json"), "--out", str(again)]) == 0
    replay = json.loads((again / "summary.json").read_text())
    assert replay["metrics"] == summary["metrics"] and replay["config"] == summary["config"]
