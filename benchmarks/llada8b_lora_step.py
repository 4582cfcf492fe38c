"""One MaskGRPO step with LoRA on a randomly initialised model of LLaDA-8B's shape: step time and peak memory.

    python benchmarks/llada8b_lora_step.py                       # GPU: LLaDA-8B shape, LoRA r=128, bf16
    python benchmarks/llada8b_lora_step.py --tiny-shape          # CPU smoke: the fixture's own tiny shape
    python benchmarks/llada8b_lora_step.py --shape small --compare  # CPU: full fine-tune vs LoRA, fresh processes

The model code, config and tokenizer come from `--code FOLDER`: any LLaDA folder (configuration_llada.py,
modeling_llada.py, tokenizer), by default the tiny fixture ../shared/models/llada-tiny. The harness does not
ship LLaDA's code; on a machine without ../shared, copy that folder and pass --code. With the 8B shape the
config is changed to LLaDA-8B's (d_model 4096, 32 layers, 32 heads, MLP 12288, vocabulary 126464) and the
weights are random (no download), created directly on the device in bf16.

The step is the harness's own (trainers/loop.py `train`, one step): G completions of each prompt decoded by
the rollout decoder (low-confidence remasking), rewards from the gsm8k task, then mu inner updates of the
adapters (LoRA through harness/lora.py, as `harness run --lora-r` does). Peak memory: CUDA's
max_memory_allocated on a GPU; on the CPU the process's peak resident set (ru_maxrss: everything, Python
and libraries included), so CPU figures compare runs of this script with each other, nothing else.
Prints one JSON object (with --compare, one per variant and a comparison).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# LLaDA-8B's shape; `small` keeps its vocabulary (so the embedding and head dominate, as at 8B) but is
# narrow and shallow enough for a CPU
SMALL = {"d_model": 512, "n_layers": 4, "n_heads": 8, "n_kv_heads": 8, "mlp_hidden_size": 1536, "mlp_ratio": 3,
         "vocab_size": 126464, "embedding_size": 126464}
LLADA_8B = {"d_model": 4096, "n_layers": 32, "n_heads": 32, "n_kv_heads": 32, "mlp_hidden_size": 12288,
            "mlp_ratio": 4, "vocab_size": 126464, "embedding_size": 126464, "max_sequence_length": 4096}
PROMPTS = [  # written for this benchmark (GSM8K-style)
    ("A baker fills 7 trays with 12 rolls each and sells 50 rolls. How many rolls are left?", "34"),
    ("Tom reads 15 pages a day for 6 days, then 20 pages on the seventh day. How many pages did he read?", "110"),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--code", default=str(ROOT.parent / "shared" / "models" / "llada-tiny"),
                   help="a LLaDA folder: its code, config and tokenizer (weights are not read)")
    p.add_argument("--shape", choices=["8b", "small", "tiny"], default="8b",
                   help="8b: LLaDA-8B's; small: 512 wide, 4 layers, LLaDA's vocabulary (CPU); tiny: the folder's own")
    p.add_argument("--tiny-shape", action="store_true", help="same as --shape tiny: a quick CPU smoke run")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--full", action="store_true", help="full fine-tune instead of LoRA")
    p.add_argument("--lora-r", type=int, default=None, help="default 128 (8b), 64 (small), 8 (tiny)")
    p.add_argument("--lora-alpha", type=float, default=64.0)  # d1's LLaDA runs: r=128, alpha=64
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--prompts", type=int, default=1, help="prompts per step")
    p.add_argument("--generations", type=int, default=6, help="G completions per prompt")
    p.add_argument("--gen-length", type=int, default=None, help="default 256 (8B shape), 16 (tiny)")
    p.add_argument("--diffusion-steps", type=int, default=None, help="default 128 (8B shape), 8 (tiny)")
    p.add_argument("--mu", type=int, default=2, help="inner updates of the step")
    p.add_argument("--compare", action="store_true", help="run full fine-tune and LoRA in fresh processes")
    args = p.parse_args(argv)
    if args.tiny_shape:
        args.shape = "tiny"
    args.tiny_shape = args.shape == "tiny"
    if args.lora_r is None:
        args.lora_r = {"8b": 128, "small": 64, "tiny": 8}[args.shape]
    return args


def build(args):
    import torch
    import transformers

    from harness.models import LLADA_MASK_ID, DiffusionModel, _dtype_kwarg

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cfg = transformers.AutoConfig.from_pretrained(args.code, trust_remote_code=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.code, trust_remote_code=True)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    for k, v in {"8b": LLADA_8B, "small": SMALL, "tiny": {}}[args.shape].items():
        setattr(cfg, k, v)
    cfg.init_device = device
    t0 = time.perf_counter()
    with torch.device(device):
        module = transformers.AutoModel.from_config(cfg, trust_remote_code=True, **{_dtype_kwarg(): dtype})
    module.to(device).eval()
    init_s = time.perf_counter() - t0
    eos = tokenizer.eos_token_id
    model = DiffusionModel(module, tokenizer, name="llada-random", mask_id=LLADA_MASK_ID,
                           pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos, eos_id=eos,
                           family="llada")
    return model, device, init_s


def run_one(args) -> dict:
    import torch

    from harness.lora import apply_lora, autocast_dtype, enable_gradient_checkpointing, use_autocast
    from tasks import get_task
    from tasks.base import Example
    from trainers.loop import TrainConfig, train

    torch.manual_seed(0)
    model, device, init_s = build(args)
    params = sum(p.numel() for p in model.module.parameters())
    lora = None if args.full else apply_lora(model, r=args.lora_r, alpha=args.lora_alpha)
    if args.gradient_checkpointing:
        enable_gradient_checkpointing(model.module)
    use_autocast(model, autocast_dtype("auto", device))
    task = get_task("gsm8k")
    examples = [Example(id=i, prompt=q, reference=a) for i, (q, a) in enumerate(PROMPTS)]
    L = args.gen_length or (256 if args.shape == "8b" else 16)
    T = args.diffusion_steps or (128 if args.shape == "8b" else 8)
    cfg = TrainConfig(steps=1, prompts_per_step=args.prompts, num_generations=args.generations, gen_length=L,
                      block_length=min(32, L), diffusion_steps=T, eval_every=0, lr=1e-5,
                      method_overrides={"mu": args.mu})
    optimizers = []  # the loop's AdamW, kept to count its state after the step
    plain_init = torch.optim.AdamW.__init__

    def init(self, *a, **k):
        plain_init(self, *a, **k)
        optimizers.append(self)

    torch.optim.AdamW.__init__ = init
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = train(model, task, "maskgrpo", examples, cfg=cfg, seed=0, progress=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**30
        kind = "cuda_max_memory_allocated"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
        kind = "cpu_peak_rss"
    row = res.curve[-1]
    return {"shape": args.shape, "device": device, **_memory_accounting(model.module, optimizers),
            "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
            "variant": "full" if args.full else f"lora r={args.lora_r} alpha={args.lora_alpha}",
            "gradient_checkpointing": args.gradient_checkpointing, "params": params,
            "trainable_params": sum(p.numel() for p in model.module.parameters() if p.requires_grad),
            "lora": lora, "prompts": args.prompts, "generations": args.generations, "gen_length": L,
            "diffusion_steps": T, "mu": args.mu, "init_s": round(init_s, 2),
            "step_time_s": round(time.perf_counter() - t0, 3), "train_nfe": res.train_nfe,
            "loss": row.get("loss"), "peak_memory_gb": round(peak, 3), "peak_memory_kind": kind,
            "torch": torch.__version__}


def _memory_accounting(module, optimizers) -> dict:
    """Exact bytes (from the tensors) of weights, of gradients (one per trainable weight during the update)
    and of the optimizer's state after the step."""
    import torch

    weights = sum(p.numel() * p.element_size() for p in module.parameters())
    grads = sum(p.numel() * p.element_size() for p in module.parameters() if p.requires_grad)
    state = sum(t.numel() * t.element_size() for opt in optimizers for st in opt.state.values()
                for t in st.values() if torch.is_tensor(t))
    mb = 2**20
    return {"weights_mb": round(weights / mb, 1), "grads_mb": round(grads / mb, 1),
            "optimizer_state_mb": round(state / mb, 1)}


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.compare:
        print(json.dumps(run_one(args), sort_keys=True))
        return 0
    rows = {}
    base = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--compare"]
    for name, extra in (("full", ["--full"]), ("lora", [])):
        r = subprocess.run([sys.executable, __file__, *base, *extra], capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stderr[-2000:], file=sys.stderr)
            return r.returncode
        rows[name] = json.loads(r.stdout.strip().splitlines()[-1])
        print(json.dumps(rows[name], sort_keys=True))
    print(json.dumps({"compare": "peak_memory_gb", "full": rows["full"]["peak_memory_gb"],
                      "lora": rows["lora"]["peak_memory_gb"],
                      "lora_below_full": rows["lora"]["peak_memory_gb"] < rows["full"]["peak_memory_gb"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
