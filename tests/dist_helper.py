"""Run by tests/test_scale.py: once as a single process and once under torchrun with 2 processes (gloo).

Evaluates the toy task sharded over the processes, then trains the fake TinyBert for 2 steps with tracerl
(whose views are the rollout's own decoding order: no random masks, so they do not depend on which
process builds them) at 4 prompts per step, and saves (main process) the weights and the evaluation.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakes import EXAMPLES, TINY, TinyBert, ToyTask  # noqa: E402


def main(out: str, method: str = "tracerl") -> None:
    from accelerate import Accelerator

    from harness.distributed import evaluate_sharded
    from harness.sampling import DecodeConfig
    from trainers.loop import TrainConfig, train

    torch.set_num_threads(1)
    acc = Accelerator(cpu=True)
    model, task = TinyBert(seed=0), ToyTask()
    model.module.eval()  # a fresh BertForMaskedLM is in train mode: dropout would make decoding random
    ev = evaluate_sharded(task, model, EXAMPLES, DecodeConfig.from_task(task), acc=acc, seed=0)
    cfg = TrainConfig(**{**TINY, "prompts_per_step": 4}, method_overrides={"mu": 2})
    res = train(model, task, method, EXAMPLES, cfg=cfg, seed=0, progress=False, accelerator=acc)
    if acc.is_main_process:
        torch.save({"state": {k: v.detach().clone() for k, v in model.module.state_dict().items()},
                    "completions": [s.completion for s in ev.scored], "ids": [s.id for s in ev.scored],
                    "metrics": ev.metrics, "nfe": ev.nfe, "world": acc.num_processes,
                    "rewards": [r["reward"] for r in res.curve], "loss": [r["loss"] for r in res.curve]}, out)
    acc.wait_for_everyone()


if __name__ == "__main__":
    main(*sys.argv[1:])
