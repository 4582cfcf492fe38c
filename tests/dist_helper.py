"""Run by tests/test_scale.py: once as a single process and once under torchrun with 2 processes (gloo).

Evaluates the toy task sharded over the processes, then, for each method named (default: all seven),
trains a fresh fake TinyBert (seed 0) for 2 steps at 4 prompts x 3 completions per step, mu = 2 and
units of norm_rows = 4 rows (so a token-normalisation unit straddles the two processes' rows), and saves
(main process) the evaluation and each method's weights, rewards and losses.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakes import EXAMPLES, TINY, TinyBert, ToyTask  # noqa: E402

METHODS = ("maskgrpo", "diffu-grpo", "unigrpo", "coupled-grpo", "tracerl", "wd1", "spg")


def main(out: str, methods: str = ",".join(METHODS)) -> None:
    from accelerate import Accelerator

    from harness.distributed import evaluate_sharded
    from harness.sampling import DecodeConfig
    from trainers.loop import TrainConfig, train

    torch.set_num_threads(1)
    acc = Accelerator(cpu=True)
    model, task = TinyBert(seed=0), ToyTask()
    model.module.eval()  # a fresh BertForMaskedLM is in train mode: dropout would make decoding random
    ev = evaluate_sharded(task, model, EXAMPLES, DecodeConfig.from_task(task), acc=acc, seed=0)
    saved = {"completions": [s.completion for s in ev.scored], "ids": [s.id for s in ev.scored],
             "metrics": ev.metrics, "nfe": ev.nfe, "world": acc.num_processes, "methods": {}}
    for method in methods.split(","):
        model = TinyBert(seed=0)
        model.module.eval()
        cfg = TrainConfig(**{**TINY, "prompts_per_step": 4}, method_overrides={"mu": 2, "norm_rows": 4})
        res = train(model, task, method, EXAMPLES, cfg=cfg, seed=0, progress=False, accelerator=acc)
        saved["methods"][method] = {
            "state": {k: v.detach().clone() for k, v in model.module.state_dict().items()},
            "rewards": [r["reward"] for r in res.curve], "loss": [r["loss"] for r in res.curve]}
    if acc.is_main_process:
        torch.save(saved, out)
    acc.wait_for_everyone()


if __name__ == "__main__":
    main(*sys.argv[1:])
