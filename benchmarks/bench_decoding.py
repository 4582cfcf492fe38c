"""Decoding speed and accuracy: the published LLaDA decoder vs the harness's fast options (issue 20).

    HARNESS_HOME=... python benchmarks/bench_decoding.py --task arith            # 2,000 arith test problems
    HARNESS_HOME=... python benchmarks/bench_decoding.py --task minicode --limit 200

Methods, all at the task's evaluation settings (gen_length, block_length, steps; temperature 0):
* `reference` - LLaDA's published `generate` (Nie et al. 2025, appendix B.2), written plainly below:
  every step runs the model over the whole sequence, softmaxes every position, commits the k most
  confident masked positions of the current block (k from LLaDA's even split of the block over its steps).
* `low_confidence` - harness.sampling's implementation of the same decoder.
* `threshold` - + Fast-dLLM's confidence-threshold parallel decoding (`--threshold`, default 0.9).
* `prefix` - + the approximate prefix KV cache; `dual` - + the dual cache (threshold kept).

Timing is interleaved: for every batch of problems each method decodes it in turn, so a burst of load
from other processes hits every method alike, and the ratios are measured side by side in one process.
tokens/s counts completion slots (gen_length per problem), as `harness eval` does. `nfe/completion` is
the number of forwards each completion went through (the batch's model calls); `row steps` the mean
number of steps a row itself needed (adaptive methods). Accuracy deltas are paired (same problems,
percentile bootstrap 95% CI) against the reference. Prints a table, then one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.models import load_model  # noqa: E402
from harness.sampling import DecodeConfig, generate  # noqa: E402
from harness.seeds import derive_seed  # noqa: E402
from tasks.base import get_task  # noqa: E402
from tasks.metrics import paired_bootstrap_ci  # noqa: E402

METHODS = ("reference", "low_confidence", "threshold", "prefix", "dual")


# ---- the reference: LLaDA's published algorithm, written plainly ------------------------------------------
def llada_reference(model, prompt, attn, steps, gen_length, block_length, temperature=0.0):
    """LLaDA's `generate` (low_confidence remasking, no CFG) over the harness's model adapter."""
    mask_id = model.mask_id
    B, P = prompt.shape
    x = torch.full((B, P + gen_length), mask_id, dtype=torch.long)
    x[:, :P] = prompt
    full_attn = torch.cat([attn, torch.ones(B, gen_length, dtype=torch.bool)], dim=1)
    num_blocks = gen_length // block_length
    steps_per_block = steps // num_blocks
    nfe = 0
    for nb in range(num_blocks):
        lo, hi = P + nb * block_length, P + (nb + 1) * block_length
        block_mask = x[:, lo:hi] == mask_id
        base, rem = divmod(int(block_mask[0].sum()), steps_per_block)
        num_transfer = [base + 1 if i < rem else base for i in range(steps_per_block)]
        for i in range(steps_per_block):
            mask_index = x == mask_id
            logits = model.logits(x, full_attn)
            nfe += 1
            if temperature > 0:  # Gumbel-max in float64, as LLaDA's add_gumbel_noise
                lg = logits.to(torch.float64)
                noise = torch.rand_like(lg)
                logits_noisy = lg.exp() / (-torch.log(noise)) ** temperature
            else:
                logits_noisy = logits
            x0 = torch.argmax(logits_noisy, dim=-1)
            p = F.softmax(logits.to(torch.float64), dim=-1)
            x0_p = torch.gather(p, -1, x0[..., None]).squeeze(-1)
            x0_p[:, hi:] = -float("inf")
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, torch.tensor(-float("inf"), dtype=x0_p.dtype))
            transfer = torch.zeros_like(x0, dtype=torch.bool)
            for j in range(B):
                _, idx = torch.topk(confidence[j], k=num_transfer[i])
                transfer[j, idx] = True
            x[transfer] = x0[transfer]
    return x[:, P:], nfe


def decode_configs(task, threshold: float) -> dict[str, DecodeConfig]:
    base = dict(task.gen_defaults)
    return {
        "low_confidence": DecodeConfig(**base),
        "threshold": DecodeConfig(**base, threshold=threshold),
        "prefix": DecodeConfig(**base, threshold=threshold, cache="prefix"),
        "dual": DecodeConfig(**base, threshold=threshold, cache="dual"),
    }


def run(task_name: str, limit: int | None, batch_size: int, threshold: float, methods: list[str], split: str,
        seed: int = 0, progress: bool = True) -> dict:
    task = get_task(task_name)
    model = load_model("tiny", task=task_name)
    examples = task.load(split=split, limit=limit)
    cfgs = decode_configs(task, threshold)
    ref_cfg = DecodeConfig(**task.gen_defaults)
    L = ref_cfg.gen_length
    seconds = {m: 0.0 for m in methods}
    nfe_rows = {m: 0 for m in methods}
    row_steps = {m: 0 for m in methods}
    texts: dict[str, list[str]] = {m: [] for m in methods}
    load_before = os.getloadavg()
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            chunk = examples[start:start + batch_size]
            ids, attn = model.encode_prompts([task.format_prompt(ex) for ex in chunk])
            seeds = [derive_seed(seed, "bench", ex.id) for ex in chunk]
            for m in methods:
                t0 = time.perf_counter()
                if m == "reference":
                    comp, nfe = llada_reference(model, ids, attn, ref_cfg.steps, L, ref_cfg.block_length)
                    steps = torch.full((len(chunk),), nfe)
                else:
                    out = generate(model, ids, attn, cfgs[m], seeds=seeds)
                    comp, nfe = out.completion_ids, out.nfe
                    steps = out.commit_step.max(1).values + 1
                seconds[m] += time.perf_counter() - t0
                nfe_rows[m] += nfe * len(chunk)
                row_steps[m] += int(steps.sum())
                texts[m] += [model.decode_completion(r) for r in comp]
            if progress:
                print(f"  {task_name}: {start + len(chunk)}/{len(examples)}", file=sys.stderr, end="\r")
    if progress:
        print(file=sys.stderr)
    n = len(examples)
    scores = {}
    for m in methods:
        scored = task.score_many(texts[m], examples, workers=4 if task.kind == "code" else 0)
        scores[m] = [float(bool(s.verdict)) for s in scored]
    rows = {}
    for m in methods:
        acc = sum(scores[m]) / n
        row = {"tokens_per_s": round(n * L / seconds[m], 1), "seconds": round(seconds[m], 2),
               "nfe_per_completion": round(nfe_rows[m] / n, 2), "row_steps": round(row_steps[m] / n, 2),
               "accuracy": round(acc, 4)}
        if "reference" in methods:
            row["speedup_vs_reference"] = round(seconds["reference"] / seconds[m], 2)
            d, ci = paired_bootstrap_ci(scores["reference"], scores[m])
            row["acc_delta_vs_reference"] = round(d, 4)
            row["acc_delta_ci95"] = [round(ci[0], 4), round(ci[1], 4)]
        rows[m] = row
    return {"task": task_name, "split": split, "problems": n, "batch_size": batch_size, "threshold": threshold,
            "decode": dict(task.gen_defaults), "temperature": 0.0, "methods": rows,
            "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "loadavg_before": [round(v, 2) for v in load_before],
            "loadavg_after": [round(v, 2) for v in os.getloadavg()]}


def table(res: dict) -> str:
    head = (f"{res['task']} ({res['problems']} {res['split']} problems, batch {res['batch_size']}, "
            f"threshold {res['threshold']}, load {res['loadavg_before'][0]}->{res['loadavg_after'][0]})")
    lines = [head, "| method | tokens/s | x reference | NFE/completion | row steps | accuracy | "
             "delta vs reference [95% CI] |", "|---|---|---|---|---|---|---|"]
    for m, r in res["methods"].items():
        ci = r.get("acc_delta_ci95")
        delta = f"{100 * r['acc_delta_vs_reference']:+.2f} [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]" if ci else "-"
        lines.append(f"| {m} | {r['tokens_per_s']:.0f} | {r.get('speedup_vs_reference', float('nan')):.2f} | "
                     f"{r['nfe_per_completion']:.2f} | {r['row_steps']:.2f} | {100 * r['accuracy']:.2f} | {delta} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", action="append", help="arith and/or minicode (repeatable; default both)")
    p.add_argument("--limit", type=int, default=None, help="first N test problems (default all)")
    p.add_argument("--split", default="test")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest on a shared CPU)")
    p.add_argument("--json", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        p.error(f"unknown methods {bad}; choose from {', '.join(METHODS)}")
    results = [run(t, args.limit, args.batch_size, args.threshold, methods, args.split)
               for t in (args.task or ["arith", "minicode"])]
    for r in results:
        print(table(r) + "\n")
    doc = {"benchmark": "decoding", "machine": platform.machine(), "results": results}
    print(json.dumps(doc))
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
