"""Decoding throughput with and without the approximate KV cache on a randomly initialised model of
LLaDA-8B's shape (issue 20). For a GPU machine; prints one JSON object.

    python benchmarks/bench_gpu_cache.py                      # cuda, bf16, LLaDA-8B shape
    python benchmarks/bench_gpu_cache.py --tiny-shape         # CPU smoke run in seconds (tests run it)

The model is a transformers `RoFormerForMaskedLM` (the tiny model's class, whose forward the harness
controls - harness.kv_cache) with LLaDA-8B's width (4096), depth (32 layers), heads (32), vocabulary
(126,464) and mask id (126,336); its feed-forward is RoFormer's two-matrix GELU MLP with 18,432 hidden
units, which matches the parameter count of LLaDA's SwiGLU (3 x 4096 x 12,288), not its arithmetic. The
weights are random, so confidences are meaningless: every method runs the fixed LLaDA schedule
(`--steps` over `--gen-length` in blocks of `--block-length`, the setting of LLaDA's GSM8K runs) and only
the cache changes; NFE is therefore the same for all, and accuracy is not measured. Each configuration
is timed `--repeats` times after one warm-up, with CUDA synchronised; tokens/s counts completion slots.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.models import LLADA_MASK_ID, DiffusionModel  # noqa: E402
from harness.sampling import DecodeConfig, generate  # noqa: E402

LLADA_8B = dict(vocab_size=126464, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                intermediate_size=18432, max_position_embeddings=4096)
TINY = dict(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=128, max_position_embeddings=256)


def build(shape: dict, device: str, dtype: torch.dtype, mask_id: int) -> DiffusionModel:
    from transformers import RoFormerConfig, RoFormerForMaskedLM

    cfg = RoFormerConfig(embedding_size=shape["hidden_size"], type_vocab_size=1, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0, **shape)
    before = torch.get_default_dtype()
    torch.manual_seed(0)
    try:
        torch.set_default_dtype(dtype)
        with torch.device(device):
            module = RoFormerForMaskedLM(cfg)
    finally:
        torch.set_default_dtype(before)
    module.eval()
    return DiffusionModel(module, None, name="random-llada-shape", mask_id=mask_id, pad_id=0, eos_id=None)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny-shape", action="store_true", help="a 2-layer model on the CPU: a smoke run")
    p.add_argument("--device", default=None, help="default cuda (cpu with --tiny-shape)")
    p.add_argument("--batch-sizes", default=None, help="comma list (default 1,8; 2 with --tiny-shape)")
    p.add_argument("--prompt-length", type=int, default=None)
    p.add_argument("--gen-length", type=int, default=None)
    p.add_argument("--block-length", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--caches", default="none,prefix,dual")
    args = p.parse_args(argv)
    tiny = args.tiny_shape
    device = args.device or ("cpu" if tiny else "cuda")
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    shape = TINY if tiny else LLADA_8B
    mask_id = shape["vocab_size"] - 1 if tiny else LLADA_MASK_ID
    P = args.prompt_length or (16 if tiny else 128)
    L = args.gen_length or (32 if tiny else 256)
    Lb = args.block_length or (8 if tiny else 32)
    T = args.steps or L
    repeats = args.repeats or (1 if tiny else 3)
    batch_sizes = [int(b) for b in (args.batch_sizes or ("2" if tiny else "1,8")).split(",")]
    t0 = time.perf_counter()
    model = build(shape, device, dtype, mask_id)
    build_s = time.perf_counter() - t0
    rows = []
    for B in batch_sizes:
        g = torch.Generator().manual_seed(B)
        ids = torch.randint(1, mask_id, (B, P), generator=g).to(device)
        attn = torch.ones(B, P, dtype=torch.bool, device=device)
        ref = None
        for cache in args.caches.split(","):
            cfg = DecodeConfig(gen_length=L, block_length=Lb, steps=T, cache=cache)
            with torch.no_grad():
                generate(model, ids, attn, cfg)  # warm-up
                sync(device)
                times, out = [], None
                for _ in range(repeats):
                    s = time.perf_counter()
                    out = generate(model, ids, attn, cfg)
                    sync(device)
                    times.append(time.perf_counter() - s)
            best = min(times)
            row = {"batch": B, "cache": cache, "seconds": round(best, 4), "seconds_all": [round(t, 4) for t in times],
                   "tokens_per_s": round(B * L / best, 2), "nfe": out.nfe}
            if cache == "none":
                ref = out.completion_ids
                row["speedup_vs_none"] = 1.0
            else:
                base = next(r for r in rows if r["batch"] == B and r["cache"] == "none")
                row["speedup_vs_none"] = round(base["seconds"] / best, 3)
                row["tokens_equal_to_none"] = float((out.completion_ids == ref).float().mean())
            rows.append(row)
    doc = {"benchmark": "gpu_cache", "tiny_shape": tiny, "device": device, "dtype": str(dtype).replace("torch.", ""),
           "shape": shape, "params": sum(p.numel() for p in model.module.parameters()), "build_s": round(build_s, 1),
           "prompt_length": P, "gen_length": L, "block_length": Lb, "steps": T, "repeats": repeats,
           "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None, "rows": rows}
    print(json.dumps(doc))
    return doc


if __name__ == "__main__":
    main()
