"""Several processes and trackers, through accelerate (DESIGN.md section 8): the harness never invents its
own distributed layer.

`accelerate launch [--num_processes N] -m harness run ...` (or `torchrun --nproc_per_node N -m harness run`)
starts N copies of the run. `make_accelerator` is called before the model is loaded, so each process
loads onto its own device (`cuda:<local rank>`); training splits each step's prompts over the processes
(trainers/loop.py); `evaluate_sharded` decodes each test problem on exactly one process and gathers the
scored samples, so every process holds the same metrics; only the main process writes files and prints.

`launch_mismatch()` spots an `accelerate launch` that asked for several processes but started one (its
simple launcher: `--cpu`, or no multi-GPU/FSDP/DeepSpeed config): that launcher sets MASTER_ADDR and
MASTER_PORT for N > 1 but starts a single process without RANK/WORLD_SIZE.

Trackers (`--report-to`): accelerate's tracker interface. tensorboard writes event files under the run
folder; wandb runs offline (WANDB_MODE=offline, files under the run folder) unless the user set
WANDB_MODE; trackio stores locally by default. A tracker whose package is missing is a one-line error.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from harness.evaluation import EvalOutput, evaluate, unscorable_report

TRACKERS = ("none", "tensorboard", "wandb", "trackio")
_TRACKER_PACKAGES = {"tensorboard": "tensorboard (or tensorboardX)", "wandb": "wandb", "trackio": "trackio"}


def check_report_to(report_to: str) -> None:
    """An unknown tracker, or one whose package is not installed: a one-line ValueError."""
    if report_to not in TRACKERS:
        raise ValueError(f"--report-to {report_to!r}: choose {', '.join(TRACKERS)}")
    if report_to == "none":
        return
    from accelerate.utils import is_tensorboard_available, is_trackio_available, is_wandb_available

    available = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available,
                 "trackio": is_trackio_available}[report_to]()
    if not available:
        pkg = _TRACKER_PACKAGES[report_to]
        raise ValueError(f"--report-to {report_to} needs the {pkg} package, which is not installed: "
                         f"pip install {pkg.split()[0]} (or pass --report-to none)")


def launch_mismatch() -> str | None:
    """A message when `accelerate launch` asked for several processes but this is the only one, else None."""
    env = os.environ
    launched_by_accelerate = "ACCELERATE_USE_CPU" in env or "ACCELERATE_MIXED_PRECISION" in env
    if launched_by_accelerate and "MASTER_ADDR" in env and "WORLD_SIZE" not in env and "RANK" not in env:
        return ("accelerate launch asked for several processes but started only this one (its single-process "
                "launcher, used with --cpu or without a multi-GPU/FSDP/DeepSpeed config); this run trains and "
                "evaluates in 1 process. For N processes (CPU or GPU) pass --config_file configs/accelerate_ddp.yaml "
                "--num_processes N, or use torchrun --nproc_per_node N -m harness run ... (see README)")
    return None


def make_accelerator(device: str = "auto", *, report_to: str = "none", project_dir: str | Path | None = None):
    """The run's Accelerator, made before the model is loaded (so each process knows its device)."""
    from accelerate import Accelerator

    check_report_to(report_to)
    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    kwargs = {}
    if report_to != "none":
        kwargs = {"log_with": report_to, "project_dir": str(project_dir) if project_dir else None}
        if report_to == "wandb":
            os.environ.setdefault("WANDB_MODE", "offline")  # offline by design; the user may choose online
            if project_dir:
                os.environ.setdefault("WANDB_DIR", str(project_dir))
    return Accelerator(cpu=cpu, **kwargs)


def process_device(acc, device: str) -> str:
    """The device this process loads its model onto: its own GPU when several processes share a machine."""
    if acc is not None and acc.num_processes > 1 and acc.device.type != "cpu":
        return str(acc.device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def process_info(acc) -> dict:
    """What summary.json records about the processes of a run."""
    if acc is None:
        return {"world_size": 1, "distributed_type": "NO", "backend": None}
    state = acc.state
    return {"world_size": acc.num_processes, "distributed_type": str(acc.distributed_type).split(".")[-1],
            "backend": getattr(state, "backend", None), "mixed_precision": str(acc.mixed_precision)}


def is_main(acc) -> bool:
    return acc is None or acc.is_main_process


def shard(items: Sequence, index: int, world: int) -> list:
    """Contiguous shard `index` of `world` (sizes differ by at most one); concatenated in order they are `items`."""
    n = len(items)
    lo = index * n // world
    hi = (index + 1) * n // world
    return list(items)[lo:hi]


def evaluate_sharded(task, model, examples, decode=None, *, acc=None, seed: int = 0, n_samples: int = 1,
                     batch_size: int = 64, progress: bool = False, tag: str = "eval") -> EvalOutput:
    """`evaluate` with each problem decoded and scored on one process; every process gets the whole result.

    NFE and generated tokens are summed over processes; generation time is the slowest process's."""
    if acc is None or acc.num_processes == 1:
        return evaluate(task, model, examples, decode, n_samples=n_samples, seed=seed, batch_size=batch_size,
                        progress=progress, tag=tag)
    import time

    from accelerate.utils import gather_object

    t0 = time.perf_counter()
    mine = shard(examples, acc.process_index, acc.num_processes)
    # FSDP gathers weights inside every forward, so every process must make the same number of model calls:
    # a shorter shard decodes one more problem (the last one) and drops its result
    extra = 0
    if "FSDP" in str(acc.distributed_type) and len(mine) < -(-len(examples) // acc.num_processes):
        extra = 1
        mine = mine + [examples[-1]]
    if mine:
        completions, owners, nfe, tokens, gen_s = model.complete(
            task, mine, decode, n_samples=n_samples, seed=seed, batch_size=batch_size,
            progress=progress and acc.is_main_process, tag=tag)
        if extra:
            completions, owners = completions[:-n_samples], owners[:-n_samples]
        scored = task.score_many(completions, owners, workers=task.scoring_workers)
    else:
        scored, nfe, tokens, gen_s = [], 0, 0, 0.0
    everything = gather_object([(acc.process_index, scored, int(nfe), int(tokens), float(gen_s))])
    everything.sort(key=lambda part: part[0])
    all_scored = [s for part in everything for s in part[1]]
    metrics, ci95 = task.metrics(all_scored, list(examples))
    return EvalOutput(scored=all_scored, metrics=metrics, ci95=ci95, n=len(examples), n_samples=n_samples,
                      nfe=sum(p[2] for p in everything), generated_tokens=sum(p[3] for p in everything),
                      generation_time_s=max(p[4] for p in everything), wall_time_s=time.perf_counter() - t0,
                      report={**unscorable_report(all_scored), **task.score_report(all_scored)})
