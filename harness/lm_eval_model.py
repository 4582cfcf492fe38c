"""The harness as an lm-evaluation-harness model: `--model harness` (lm-eval 0.4).

Importing this module registers the model under the name `harness`; lm-eval 0.4 has no plugin
discovery for models, so the command line goes through a thin entry that imports it and hands every
other argument to lm-eval unchanged:

    harness lm-eval --model harness \\
        --model_args pretrained=../shared/models/llada-tiny,gen_length=256,steps=128,block_length=32 \\
        --tasks gsm8k_harness --include_path harness/lm_eval_tasks --apply_chat_template --limit 8

and from Python:

    import harness.lm_eval_model  # registers "harness"
    lm_eval.simple_evaluate(model="harness", model_args="pretrained=...,gen_length=64", tasks=[...])

`model_args`:
  pretrained   a local folder, a hub id, `hf:<either>`, a preset (`llada-8b-instruct`), or `tiny`
               with `tiny_task=<embedded task>` (the embedded model pretrained for that task)
  sampler, gen_length, block_length, steps, temperature, remasking, cfg_scale, alg, alg_temp, eps
               the decoder (harness/sampling.py; defaults as `DecodeConfig`: low_confidence 256/32/128)
  threshold, factor, cache
               fast decoding (harness/sampling.py "Fast decoding"; `none` = off); cache=prefix|dual needs the
               tiny model (pretrained=tiny or a folder of its RoFormer): other models are refused before loading
  batch_size   prompts decoded together (default 8)
  seed         row seeds are derived from (seed, "eval", doc_id, repeat) exactly as `harness eval`
               derives them from (seed, "eval", example id, sample), so at any temperature the two
               decode the same problem identically (lm-eval's doc_id is the row index, which is the
               harness's id for GSM8K)
  mc_num, mc_batch_size
               Monte Carlo samples (and how many per forward) of the log-likelihood estimate (128, 32)
  greedy_check whether `loglikelihood` also decodes the continuation greedily to answer is_greedy
               (default True; costs one forward per continuation token)
  device, dtype, chat (`chat=True` wraps each context as a user turn itself; the lm-eval way is
               `--apply_chat_template`, which renders the chat before the model sees it)

`generate_until` decodes with the harness's own decoders (the same `generate` that `harness eval`
uses), cuts each completion at its first stop token (EOS) like `harness eval`, and then at the first
of the request's `until` strings. `max_gen_toks` is not used: a diffusion decoder's length is
`gen_length`. `loglikelihood` is the Monte Carlo masked estimate of LLaDA's evaluation (Nie et al.
2025, eq. (6) and appendix B.6): for a continuation of T tokens, each sample masks l of them, l
stratified over the batch of samples (l_i = ((k + i T/b) mod T) + 1 from one uniform k), positions
uniformly at random, prompt never masked; the estimate is minus the mean over samples of
sum_masked CE / (l/T). `loglikelihood_rolling` (perplexity tasks) is not supported by masked diffusion
models' evaluation and says so.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from harness.seeds import derive_seed

DECODE_KEYS = ("sampler", "gen_length", "block_length", "steps", "temperature", "remasking", "cfg_scale",
               "alg", "alg_temp", "eps", "threshold", "factor", "cache")


@register_model("harness")
class HarnessLM(LM):
    def __init__(self, pretrained: str = "tiny", tiny_task: str | None = None, batch_size: int | str = 8,
                 seed: int = 0, mc_num: int = 128, mc_batch_size: int = 32, greedy_check: bool = True,
                 device: str | None = None, dtype: str = "auto", chat: bool | None = None,
                 max_batch_size: int | None = None, **decode):
        super().__init__()
        from harness.models import load_model
        from harness.sampling import DecodeConfig

        unknown = sorted(set(decode) - set(DECODE_KEYS))
        if unknown:
            raise ValueError(f"unknown model_args {', '.join(unknown)} for --model harness; decoder settings are "
                             f"{', '.join(DECODE_KEYS)}")
        # lm-eval reads `none` as None: an unset value (threshold=none, cache=none) keeps DecodeConfig's default
        self.decode = DecodeConfig(**{k: v for k, v in decode.items() if v is not None})
        if isinstance(batch_size, str):  # lm-eval passes "auto" or a number as text
            batch_size = int(batch_size) if batch_size.isdigit() else 8
        self.batch_size = max(1, int(batch_size))
        self.seed, self.greedy_check = int(seed), bool(greedy_check)
        self.mc_num, self.mc_batch_size = int(mc_num), int(mc_batch_size)
        if self.mc_num < 1 or self.mc_batch_size < 1 or self.mc_num % self.mc_batch_size:
            raise ValueError(f"mc_num={mc_num} must be a positive multiple of mc_batch_size={mc_batch_size}")
        if not device or (str(device).startswith("cuda") and not torch.cuda.is_available()):
            device = "cuda" if torch.cuda.is_available() else "cpu"  # lm-eval's CLI asks for cuda by default
        spec = str(pretrained)
        if spec not in ("tiny",) and not spec.startswith("hf:") and spec not in _presets():
            spec = f"hf:{spec}"
        if spec == "tiny" and not tiny_task:
            raise ValueError("pretrained=tiny needs tiny_task=<embedded task> (e.g. tiny_task=arith)")
        from harness.models import check_cache_model

        check_cache_model(spec, self.decode.cache, flag="cache=", instead="threshold/factor")  # before loading
        self.model = load_model(spec, task=tiny_task, device=device, dtype=dtype)
        if not self.model.decodes:
            raise ValueError("the gold model answers from reference solutions, which lm-eval does not pass")
        self.model.chat = None if chat is None else bool(chat)
        self._rendered = False  # set when lm-eval renders the chat template itself

    # ---- what lm-eval asks of a model --------------------------------------------------------------
    @property
    def tokenizer_name(self) -> str:
        return self.model.name.replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return getattr(self.model.tokenizer, "chat_template", None)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """lm-eval's `--apply_chat_template`: the tokenizer's template, rendered to text. The rendered text
        already holds the template's special tokens, so it is encoded without adding any."""
        self._rendered = True
        return self.model.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                        add_generation_prompt=add_generation_prompt)

    def _encode(self, contexts: list[str]):
        if self._rendered:
            return self.model.encode_prompts(contexts, chat=False, special_tokens=False)
        return self.model.encode_prompts(contexts, chat=self.model.chat if self.model.chat is not None else False)

    def generate_until(self, requests) -> list[str]:
        from harness.sampling import generate

        out: list[str] = []
        seen: dict = {}  # repeats of a request (lm-eval's `repeats`) are samples 0, 1, ... of its doc
        sample = []
        for r in requests:
            key = (r.doc_id, r.args[0])
            sample.append(seen.get(key, 0))
            seen[key] = sample[-1] + 1
        for i in range(0, len(requests), self.batch_size):
            chunk = requests[i:i + self.batch_size]
            contexts = [r.args[0] for r in chunk]
            ids, attn = self._encode(contexts)
            seeds = [derive_seed(self.seed, "eval", r.doc_id, s) for r, s in zip(chunk, sample[i:i + self.batch_size])]
            gen = generate(self.model, ids, attn, self.decode, seeds=seeds)
            for r, row in zip(chunk, gen.completion_ids):
                text = self.model.decode_completion(row)
                out.append(_cut(text, _until(r.args[1] if len(r.args) > 1 else None)))
        return out

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        results = []
        for r in requests:
            context, continuation = r.args[0], r.args[1]
            prefix, target = self._encode_pair(context, continuation)
            ll = self._mc_loglikelihood(prefix, target, seed=derive_seed(self.seed, "loglikelihood", context,
                                                                          continuation))
            greedy = self._is_greedy(prefix, target) if self.greedy_check else False
            results.append((ll, greedy))
        return results

    def loglikelihood_rolling(self, requests) -> list[float]:
        raise NotImplementedError("--model harness does not support loglikelihood_rolling (perplexity tasks): "
                                  "masked diffusion models have no left-to-right likelihood; use "
                                  "generate_until or multiple-choice (loglikelihood) tasks")

    # ---- likelihood ----------------------------------------------------------------------------------
    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Context and continuation ids; trailing whitespace of the context moves to the continuation, and
        the continuation is what the whole text adds to the context's tokens (lm-eval's convention)."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        ctx_ids, _ = self._encode([context])
        whole_ids, _ = self._encode([context + continuation])
        ctx, whole = ctx_ids[0].tolist(), whole_ids[0].tolist()
        return ctx, whole[len(ctx):]

    @torch.no_grad()
    def _mc_loglikelihood(self, prefix: list[int], target: list[int], seed: int) -> float:
        """Monte Carlo estimate of log p(target | prefix) (module docstring), deterministic given `seed`."""
        T = len(target)
        if T == 0:
            return 0.0
        device = self.model.device
        seq = torch.tensor(prefix + target, dtype=torch.long, device=device)  # (n,)
        P, b = len(prefix), self.mc_batch_size
        g = torch.Generator().manual_seed(seed)
        total = 0.0
        for _ in range(self.mc_num // b):
            k = int(torch.randint(1, T + 1, (1,), generator=g))
            counts = torch.round(torch.linspace(float(k), k + (b - 1) * (T / b), b)).long()  # (b,)
            counts = (counts - 1) % T + 1  # in [1, T]
            order = torch.rand(b, T, generator=g).argsort(dim=1)  # (b, T) a random permutation per sample
            hide = order < counts[:, None]  # (b, T): exactly counts[i] positions of row i
            noisy = seq.repeat(b, 1)  # (b, n)
            noisy[:, P:][hide.to(device)] = self.model.mask_id
            logits = self._logits(noisy, P)[:, P:]  # (b, T, V)
            hide = hide.to(device)
            ce = F.cross_entropy(logits[hide].float(), seq[P:].repeat(b, 1)[hide], reduction="none")  # (M,)
            weight = (T / counts.to(device).float())[:, None].expand(b, T)[hide]  # 1 / (l / T)
            total += float((ce * weight).sum()) / b
        return -total / (self.mc_num // b)

    def _logits(self, x: torch.Tensor, P: int) -> torch.Tensor:
        w = self.decode.cfg_scale
        if w <= 0:
            return self.model.logits(x)
        uncond = x.clone()
        uncond[:, :P] = self.model.mask_id
        both = self.model.logits(torch.cat([x, uncond]))  # (2b, n, V)
        cond, unc = both.chunk(2)
        return (1 + w) * cond - w * unc

    def _is_greedy(self, prefix: list[int], target: list[int]) -> bool:
        """Whether greedy low-confidence decoding of the fully masked continuation, one token a step,
        gives exactly the target (LLaDA's evaluation checks the same)."""
        from harness.sampling import DecodeConfig, generate

        T = len(target)
        if T == 0:
            return True
        cfg = DecodeConfig(gen_length=T, block_length=T, steps=T, temperature=0.0, cfg_scale=self.decode.cfg_scale)
        ids = torch.tensor([prefix], dtype=torch.long, device=self.model.device)
        out = generate(self.model, ids, None, cfg)
        return out.completion_ids[0].tolist() == target


def _presets() -> set[str]:
    from harness.models import PRESETS

    return set(PRESETS)


def _until(gen_kwargs) -> list[str]:
    if not isinstance(gen_kwargs, dict):
        return []
    until = gen_kwargs.get("until") or []
    return [until] if isinstance(until, str) else [u for u in until if isinstance(u, str) and u]


def _cut(text: str, until: list[str]) -> str:
    cut = min((text.find(u) for u in until if u in text), default=-1)
    return text if cut < 0 else text[:cut]


def model_args_for(decode, **extra) -> str:
    """The `model_args` string that gives lm-eval the decoder settings `decode` (a DecodeConfig)."""
    from dataclasses import asdict

    items = {**{k: v for k, v in asdict(decode).items() if k in DECODE_KEYS}, **extra}
    return ",".join(f"{k}={v}" for k, v in items.items() if v is not None and not (isinstance(v, float)
                                                                                    and math.isnan(v)))
