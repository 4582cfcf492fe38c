"""Which transformers masked-LM class trains the tiny embedded model fastest on CPU?

Builds each candidate from a config of the same size (hidden 128, 4 layers, 4 heads, FFN 512, the
tiny vocabulary size), runs a few AdamW training steps of the masked diffusion loss on random
tokens and reports training throughput (tokens/s) in fp32 and under bf16 autocast, plus inference
throughput (the decoder's forward passes).

    python benchmarks/bench_model_classes.py [--batch 64] [--seq 64] [--steps 10] [--rounds 3] [--classes bert,roberta]

Numbers on a shared machine are contended: check `uptime` and repeat. This is a benchmark, not a test.

Measured (2 shared CPU cores, torch 2.14, transformers 5.24, batch 64 x 64 tokens, vocab 512; median
of 3 interleaved rounds while other jobs ran, so +-30%), tokens/s:

    class        params  train fp32  train bf16  infer fp32  infer bf16
    bert          0.88M      12,962      18,258      65,061      76,924
    distilbert    0.88M      11,891      18,748      61,736      78,633
    roberta       0.88M       5,695      17,806      13,054      44,092   (hit by a load burst)
    electra       0.88M      13,371      18,393      64,870      85,859
    roformer      0.88M      13,474      17,074      60,496      85,526
    modernbert    1.13M      13,818      16,554      45,856      68,002

No class is clearly faster; bf16 autocast trains ~1.35x faster than fp32. The choice (RoFormer) was
made on what the model learns in the budget, not on speed: see harness/pretrain.py.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
import torch.nn.functional as F
import transformers

SIZE = dict(hidden=128, layers=4, heads=4, ffn=512)


def build(name: str, vocab: int, seq: int) -> torch.nn.Module:
    h, n, a, f = SIZE["hidden"], SIZE["layers"], SIZE["heads"], SIZE["ffn"]
    common = dict(vocab_size=vocab, pad_token_id=0)
    special = dict(bos_token_id=2, eos_token_id=2, cls_token_id=2, sep_token_id=2)
    if name == "bert":
        cfg = transformers.BertConfig(hidden_size=h, num_hidden_layers=n, num_attention_heads=a,
                                      intermediate_size=f, max_position_embeddings=seq, **common)
        return transformers.BertForMaskedLM(cfg)
    if name == "roberta":
        cfg = transformers.RobertaConfig(hidden_size=h, num_hidden_layers=n, num_attention_heads=a,
                                         intermediate_size=f, max_position_embeddings=seq + 2, **common)
        return transformers.RobertaForMaskedLM(cfg)
    if name == "distilbert":
        cfg = transformers.DistilBertConfig(dim=h, n_layers=n, n_heads=a, hidden_dim=f,
                                            max_position_embeddings=seq, **common)
        return transformers.DistilBertForMaskedLM(cfg)
    if name == "electra":
        cfg = transformers.ElectraConfig(embedding_size=h, hidden_size=h, num_hidden_layers=n,
                                         num_attention_heads=a, intermediate_size=f,
                                         max_position_embeddings=seq, **common)
        return transformers.ElectraForMaskedLM(cfg)
    if name == "roformer":
        cfg = transformers.RoFormerConfig(embedding_size=h, hidden_size=h, num_hidden_layers=n,
                                          num_attention_heads=a, intermediate_size=f,
                                          max_position_embeddings=seq, **common)
        return transformers.RoFormerForMaskedLM(cfg)
    if name == "modernbert":
        cfg = transformers.ModernBertConfig(hidden_size=h, num_hidden_layers=n, num_attention_heads=a,
                                            intermediate_size=f, max_position_embeddings=seq,
                                            global_attn_every_n_layers=1, **special, **common)
        return transformers.ModernBertForMaskedLM(cfg)
    raise ValueError(f"unknown class {name!r}")


def train_throughput(model, batch: int, seq: int, vocab: int, steps: int, bf16: bool) -> float:
    """Tokens per second of fwd + bwd + AdamW on the masked diffusion loss (ratio t ~ U(0,1) per row)."""
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(5, vocab, (batch, seq), generator=g)  # (B, L)
    model.train()
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step():
        t = torch.rand(batch, 1, generator=g).clamp_min(1e-3)  # (B, 1)
        masked = torch.rand(batch, seq, generator=g) < t  # (B, L)
        inp = torch.where(masked, torch.full_like(x, 1), x)
        with ctx:
            logits = model(input_ids=inp).logits  # (B, L, V)
        ce = F.cross_entropy(logits.float().transpose(1, 2), x, reduction="none")  # (B, L)
        loss = (ce * masked / t).sum() / (batch * seq)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * seq * steps / (time.perf_counter() - t0)


@torch.no_grad()
def infer_throughput(model, batch: int, seq: int, vocab: int, steps: int, bf16: bool) -> float:
    x = torch.randint(5, vocab, (batch, seq))
    model.eval()
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with ctx:
        for _ in range(2):
            model(input_ids=x)
        t0 = time.perf_counter()
        for _ in range(steps):
            model(input_ids=x)
    return batch * seq * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", default="bert,distilbert,roberta,electra,roformer,modernbert")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}")
    print(f"size {SIZE}, batch {args.batch}, seq {args.seq}, vocab {args.vocab}")
    ap_rounds = args.rounds
    print(f"{'class':<12}{'params':>9}{'train fp32':>13}{'train bf16':>13}{'infer fp32':>13}{'infer bf16':>13}"
          f"  (tokens/s, median of {ap_rounds} interleaved rounds)")
    models = {}
    for name in args.classes.split(","):
        torch.manual_seed(0)
        try:
            models[name] = build(name, args.vocab, args.seq)
        except Exception as e:  # a class this transformers version lacks or rejects
            print(f"{name:<12} skipped: {type(e).__name__}: {e}")
    # interleave the rounds so a burst of load from another process hits every class alike
    runs: dict[str, list[list[float]]] = {name: [] for name in models}
    for _ in range(ap_rounds):
        for name, model in models.items():
            row = [train_throughput(model, args.batch, args.seq, args.vocab, args.steps, bf16) for bf16 in (False, True)]
            row += [infer_throughput(model, args.batch, args.seq, args.vocab, args.steps, bf16) for bf16 in (False, True)]
            runs[name].append(row)
    for name, rows in runs.items():
        params = sum(p.numel() for p in models[name].parameters())
        med = [statistics.median(col) for col in zip(*rows)]
        print(f"{name:<12}{params / 1e6:>8.2f}M" + "".join(f"{v:>13,.0f}" for v in med), flush=True)

if __name__ == "__main__":
    main()
